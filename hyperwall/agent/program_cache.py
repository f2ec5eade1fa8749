"""The agent's on-disk copy of the last program it accepted, so a restart without the
manager still enforces it.

Two files in the cache directory: `program.json` (the whole program in wire format, with
the server, host, revision and digest it was received with) and `deltas.jsonl` (the deltas
accepted since, one JSON line each, with the revision and the digest after it). A whole
program is written to a temporary file, fsynced and renamed over `program.json`, then the
delta log is truncated; a delta is appended and fsynced. So each accepted change costs one
small write, not a rewrite of a program of 100k elements; after `COMPACT_AFTER` deltas the
next change writes the whole program again.

Reading replays the log on the program and checks every digest; it stops at the first line
that does not decode or does not verify (a torn last write after a crash), keeping what was
verified before it. If the process dies between writing `program.json` and truncating the
log, the old log's first line names a base digest that no longer matches: it is ignored.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperwall.compiler.delta import apply
from hyperwall.compiler.digest import digest_text, program_digest, updated_digest
from hyperwall.compiler.program import HostProgram
from hyperwall.compiler.program_codec import (
    WireError,
    delta_from_wire,
    program_from_wire,
    program_to_wire,
)

log = logging.getLogger(__name__)

PROGRAM_FILE = "program.json"
DELTAS_FILE = "deltas.jsonl"
COMPACT_AFTER = 100


@dataclass(frozen=True, slots=True)
class Held:
    """A program the agent holds: the revision it is current at, and its digest."""

    revision: int
    program: HostProgram
    digest: int

    @property
    def digest_text(self) -> str:
        return digest_text(self.digest)


class ProgramCache:
    def __init__(self, directory: Path, server: str, host: str) -> None:
        self.directory = directory
        self.server = server
        self.host = host
        self.deltas = 0  # lines in the delta log

    @property
    def program_path(self) -> Path:
        return self.directory / PROGRAM_FILE

    @property
    def deltas_path(self) -> Path:
        return self.directory / DELTAS_FILE

    def read(self) -> Held | None:
        """The cached program with its verified deltas replayed; None if there is none or
        it is unusable (logged)."""
        try:
            data = json.loads(self.program_path.read_text())
            if data.get("host") != self.host:
                raise ValueError(f"it is the cache of host {data.get('host')!r}")
            program = program_from_wire(data["program"])
            digest = program_digest(program)
            if digest_text(digest) != data["digest"]:
                raise ValueError("the program does not match its digest")
            held = Held(int(data["revision"]), program, digest)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the cache %s: %s", self.program_path, exc)
            return None
        return self._replay(held)

    def _replay(self, held: Held) -> Held:
        self.deltas = 0
        try:
            lines = self.deltas_path.read_text().splitlines()
        except FileNotFoundError:
            return held
        except OSError as exc:
            log.warning("ignoring the delta log %s: %s", self.deltas_path, exc)
            return held
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                if entry["base"] != held.digest_text:
                    raise ValueError("its base is not the program before it")
                change = delta_from_wire(entry["delta"])
                digest = updated_digest(held.digest, held.program, change)
                if digest_text(digest) != entry["digest"]:
                    raise ValueError("the result does not match its digest")
                held = Held(int(entry["revision"]), apply(held.program, change), digest)
            except (ValueError, KeyError, TypeError, WireError) as exc:
                log.warning("delta log line %d ignored (and what follows): %s", number, exc)
                self.deltas = COMPACT_AFTER  # the next change rewrites the whole cache
                return held
            self.deltas = number
        return held

    def write_program(self, held: Held) -> None:
        """Replace the cache with a whole program (atomic), then empty the delta log."""
        self.directory.mkdir(parents=True, exist_ok=True)
        body = {
            "server": self.server,
            "host": self.host,
            "revision": held.revision,
            "digest": held.digest_text,
            "program": program_to_wire(held.program),
        }
        tmp = self.program_path.with_name(PROGRAM_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(body, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.program_path)
        with open(self.deltas_path, "w") as f:
            os.fsync(f.fileno())
        self.deltas = 0

    def append_delta(self, revision: int, base: str, delta: dict[str, Any], after: Held) -> None:
        """Record one accepted delta (or write the whole program when the log is long)."""
        if self.deltas >= COMPACT_AFTER or not self.program_path.exists():
            self.write_program(after)
            return
        line = {"revision": revision, "base": base, "digest": after.digest_text, "delta": delta}
        with open(self.deltas_path, "a") as f:
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.deltas += 1
