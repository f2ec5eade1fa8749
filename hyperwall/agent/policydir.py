"""Desired state from a documents folder (this issue's source; the manager replaces it).

`PolicyDir.fingerprint()` is cheap (names, sizes, mtimes) and is polled to notice changes;
`load()` reads and validates everything, returning the catalog and a content hash.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

from hyperwall.io.files import SUFFIXES, load_catalog, read_documents
from hyperwall.policy.errors import DocumentsInvalid, Source
from hyperwall.policy.model import Catalog


class PolicyDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _files(self, root: Path | None = None) -> list[Path]:
        root = root or self.path.resolve()
        if not root.is_dir():
            return []
        return sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file())

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self._files():
            try:
                st = p.stat()
            except OSError:
                continue
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def load(self) -> tuple[Catalog, str]:
        """The validated catalog and a hash of the content; raises DocumentsInvalid.

        The folder is resolved once, so a folder that is a symlink swapped to a new
        generation (as the lab does) is read from one generation only."""
        root = self.path.resolve()
        if not root.is_dir():
            return load_catalog([self.path]), ""  # raises: no such folder
        h = hashlib.sha256()
        files = self._files(root)
        for p in files:
            h.update(p.read_bytes())
        return load_catalog(files), h.hexdigest()[:16]

    def load_raw(self) -> tuple[list[tuple[Any, Source]], str]:
        """The decoded documents (not yet validated) and a hash of the content; raises
        DocumentsInvalid for files that cannot be read or decoded."""
        root = self.path.resolve()
        files = self._files(root) if root.is_dir() else [self.path]
        h = hashlib.sha256()
        for p in files:
            with contextlib.suppress(OSError):  # reported by read_documents
                h.update(p.read_bytes())
        docs, issues = read_documents(files)
        if issues:
            raise DocumentsInvalid(issues)
        return docs, h.hexdigest()[:16]
