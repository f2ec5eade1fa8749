"""Validation issues: where a document is wrong, what is wrong, and what was expected.

Every stage of loading (files, shape, references) reports into the same `Issue` list; a
document set with any issue is refused whole. The CLI (`hyperwall.cli`) prints them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Source:
    """Where a document came from: a file and the document's 1-based number in it."""

    file: str
    document: int

    def __str__(self) -> str:
        return f"{self.file} document {self.document}"


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem with one field of one document."""

    source: Source
    path: str  # field path, e.g. "spec.rules[1].from[0].group"; "" for the whole document
    message: str  # what is wrong
    expected: str = ""  # what was expected, if that helps

    def __str__(self) -> str:
        where = f"{self.source}" + (f": {self.path}" if self.path else "")
        text = f"{where}: {self.message}"
        if self.expected:
            text += f" (expected {self.expected})"
        return text

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.source.file,
            "document": self.source.document,
            "path": self.path,
            "message": self.message,
            "expected": self.expected,
        }


class DocumentsInvalid(Exception):
    """Raised when a document set has issues; carries every one of them."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = sorted(
            issues, key=lambda i: (i.source.file, i.source.document, i.path, i.message)
        )
        super().__init__(f"{len(issues)} validation error(s)")

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)


def join_path(*parts: str | int) -> str:
    """Render a field path: ("spec", "rules", 1, "from") -> "spec.rules[1].from"."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = part
    return out
