"""Per-rule hit counters on the agent: totals that survive counter resets and agent restarts,
and the time each rule was last hit. Written to `STATE_DIR/hits.json` (what `lab stats`
reads) and reported to the manager, which sums the hosts.

Counterpart of `nft.hits` (the kernel's counters per rule key, read from one listing).
Every `--hits-seconds` the agent lists its table, reads the counters and `update`s the
tracker: for each rule the increase since the last reading is added to its total; a counter
lower than last time was reset (its chain rendered again, its element re-added) and all of
it is new. "Last hit" is the time of the first reading that saw the counter move, so it is
exact to one period. The file holds the totals and the last reading, so a restarted agent
adds only what came after (a crash between a reading and the file write counts that
period's hits once more at worst, never loses them). Rules no longer in the program are
dropped: memory follows the program, not history.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperwall.compiler.program import HostProgram
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.hits import Attribution, Hits, attribution, read_hits


@dataclass(frozen=True, slots=True)
class RuleHits:
    """A rule's totals on this host, its last hit (epoch seconds; None: never seen moving)
    and the kernel's counter at the last reading."""

    packets: int
    bytes: int
    last_hit: float | None
    seen: Hits

    def to_json(self) -> dict[str, Any]:
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "lastHit": self.last_hit,
            "seen": [self.seen.packets, self.seen.bytes],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RuleHits:
        seen = raw.get("seen") or [0, 0]
        last = raw.get("lastHit")
        return cls(
            int(raw["packets"]),
            int(raw["bytes"]),
            None if last is None else float(last),
            Hits(int(seen[0]), int(seen[1])),
        )


class HitTracker:
    """Totals per rule key (`nft.hits.default_key` or a rule id)."""

    def __init__(self, rules: Mapping[str, RuleHits] | None = None) -> None:
        self.rules: dict[str, RuleHits] = dict(rules or {})

    def update(self, now: float, reading: Mapping[str, Hits], known: Iterable[str]) -> None:
        """Add `reading` (the kernel's counters, read at `now`); keep only `known` keys (the
        program's), with those not read at 0."""
        out: dict[str, RuleHits] = {}
        for key in known:
            current = reading.get(key, Hits())
            old = self.rules.get(key)
            if old is None:  # new to us: everything counted so far is new
                old = RuleHits(0, 0, None, Hits())
            if current.packets >= old.seen.packets and current.bytes >= old.seen.bytes:
                added = Hits(current.packets - old.seen.packets, current.bytes - old.seen.bytes)
            else:  # reset since the last reading
                added = current
            moved = added.packets > 0
            out[key] = RuleHits(
                old.packets + added.packets,
                old.bytes + added.bytes,
                now if moved else old.last_hit,
                current,
            )
        self.rules = out

    def to_json(self) -> dict[str, Any]:
        return {"rules": {k: v.to_json() for k, v in sorted(self.rules.items())}}

    def report(self) -> dict[str, dict[str, Any]]:
        """What the manager gets: the rules that were ever hit (a rule absent was not)."""
        return {
            k: {"packets": v.packets, "bytes": v.bytes, "lastHit": v.last_hit}
            for k, v in sorted(self.rules.items())
            if v.packets or v.last_hit is not None
        }


def save_tracker(path: Path, tracker: HitTracker, read_at: float) -> None:
    """Write the tracker to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"read": read_at, **tracker.to_json()}))
    os.replace(tmp, path)


def load_tracker(path: Path) -> HitTracker:
    """The tracker saved at `path`; an empty one if there is none or it does not parse."""
    try:
        raw = json.loads(path.read_text())
        return HitTracker({k: RuleHits.from_json(v) for k, v in raw["rules"].items()})
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return HitTracker()


def read_report(path: Path) -> tuple[float | None, dict[str, dict[str, Any]]]:
    """When the file at `path` was written (the reading's time) and its rules as `report`
    gives them; (None, {}) if there is none."""
    try:
        raw = json.loads(path.read_text())
        return float(raw["read"]), load_tracker(path).report()
    except (OSError, ValueError, KeyError, TypeError):
        return None, {}


class HitReader:
    """Reads the counters of `backend`'s table (on the agent's worker thread: the backend's
    libnftables context is not shared), the attribution cached per program applied."""

    def __init__(self, backend: NftBackend, tracker: HitTracker) -> None:
        self.backend = backend
        self.tracker = tracker
        self._for: HostProgram | None = None
        self._attribution = Attribution()

    def read(self, now: float) -> bool:
        """One reading into the tracker; False if nothing is applied yet."""
        program, state = self.backend.program, self.backend.state
        if program is None or state is None:
            return False
        if self._for is not program:
            self._attribution = attribution(program, state, self.backend.local)
            self._for = program
        listing = self.backend.kernel.list_table()
        reading = read_hits(listing, self._attribution) if listing is not None else {}
        self.tracker.update(now, reading, self._attribution.keys())
        return True
