"""Per-rule hit counters on the agent: totals that survive counter resets and agent restarts,
and the time each rule was last hit. Written to `STATE_DIR/hits.json` (what `lab stats`
reads) and reported to the manager, which sums the hosts.

Counterpart of `nft.hits` (the kernel's counters, each with an id and the rule key it counts
for). Every `--hits-seconds` the agent reads the counters (`HitReader`: the table's rules,
then only the block sets whose lookup counter moved) and `update`s the tracker: each
counter's increase since the last reading is added to its rule's total; a counter lower
than last time was reset (its chain rendered again, its element re-added) and all of it is
new; a counter that is gone (its element deleted) leaves its past hits in the total. "Last
hit" is the time of the first reading that saw one of the rule's counters move, exact to
one period. The file holds the totals and the last value of every nonzero counter, so a
restarted agent adds only what came after (a crash between a reading and the file write
counts that period's hits once more at worst, never loses them). Rules no longer in the
program are dropped: memory follows the program and the counters that were hit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hyperwall.compiler.program import HostProgram
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.hits import (
    Attribution,
    Counter,
    Hits,
    attribution,
    element_counters,
    rule_counters,
)


@dataclass(frozen=True, slots=True)
class RuleHits:
    """A rule's totals on this host and its last hit (epoch seconds; None: never seen
    moving)."""

    packets: int
    bytes: int
    last_hit: float | None

    def to_json(self) -> dict[str, Any]:
        return {"packets": self.packets, "bytes": self.bytes, "lastHit": self.last_hit}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RuleHits:
        last = raw.get("lastHit")
        return cls(int(raw["packets"]), int(raw["bytes"]), None if last is None else float(last))


class HitTracker:
    """Totals per rule key (`nft.hits.default_key` or a rule id), and the last value of each
    kernel counter that was not 0 (by counter id)."""

    def __init__(
        self,
        rules: Mapping[str, RuleHits] | None = None,
        seen: Mapping[str, Hits] | None = None,
    ) -> None:
        self.rules: dict[str, RuleHits] = dict(rules or {})  # only rules ever hit
        self.seen: dict[str, Hits] = dict(seen or {})
        self._known: AbstractSet[str] | None = None

    def update(self, now: float, counters: Mapping[str, Counter], known: AbstractSet[str]) -> None:
        """Add a reading (`counters`: id -> (rule key, value), the nonzero ones, read at
        `now`); keep only `known` keys (the program's). Work in proportion to the counters
        that were hit, plus the rules kept when `known` is another set than last time."""
        added: dict[str, Hits] = {}
        for cid, (key, current) in counters.items():
            old = self.seen.get(cid, Hits())  # absent: it was 0 (or new)
            if current.packets >= old.packets and current.bytes >= old.bytes:
                more = Hits(current.packets - old.packets, current.bytes - old.bytes)
            else:  # reset since the last reading
                more = current
            added[key] = added.get(key, Hits()) + more
        if known is not self._known:  # another program: forget the rules it lacks
            self.rules = {k: v for k, v in self.rules.items() if k in known}
            self._known = known
        for key, more in added.items():
            if key not in known or not (more.packets or more.bytes):
                continue
            old_total = self.rules.get(key, RuleHits(0, 0, None))
            self.rules[key] = RuleHits(
                old_total.packets + more.packets,
                old_total.bytes + more.bytes,
                now if more.packets else old_total.last_hit,
            )
        self.seen = {cid: hits for cid, (_, hits) in counters.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "rules": {k: v.to_json() for k, v in sorted(self.rules.items())},
            "seen": {k: [v.packets, v.bytes] for k, v in sorted(self.seen.items())},
        }

    def report(self) -> dict[str, dict[str, Any]]:
        """What the manager gets: the rules that were ever hit (a rule absent was not)."""
        return {k: v.to_json() for k, v in sorted(self.rules.items()) if v.packets or v.last_hit}


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
        rules = {k: RuleHits.from_json(v) for k, v in raw["rules"].items()}
        seen = {k: Hits(int(v[0]), int(v[1])) for k, v in raw.get("seen", {}).items()}
        return HitTracker(rules, seen)
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


class Listing(Protocol):
    """What the reader needs of the kernel (`nft.kernel.NftKernel`)."""

    def list_rules(self) -> dict[str, Any]: ...

    def list_set(self, name: str) -> dict[str, Any]: ...


class HitReader:
    """Reads the counters of `backend`'s table through `kernel` (on the agent's worker
    thread: the backend's libnftables context is not shared), the attribution cached per
    program applied. The sets whose lookup counter did not move since the last reading are
    not listed again: their element counters cannot have moved either."""

    def __init__(self, backend: NftBackend, tracker: HitTracker, kernel: Listing) -> None:
        self.backend = backend
        self.tracker = tracker
        self.kernel = kernel
        self._for: HostProgram | None = None
        self._attribution = Attribution()
        self._keys: frozenset[str] = frozenset()
        self._lookups: dict[str, Hits] = {}  # set -> its lookup counter at the last reading
        self._elements: dict[str, dict[str, Counter]] = {}  # set -> its nonzero counters
        self.sets_listed = 0  # block sets listed by the last reading

    def read(self, now: float) -> bool:
        """One reading into the tracker; False if nothing is applied yet."""
        program, state = self.backend.program, self.backend.state
        if program is None or state is None:
            return False
        if self._for is not program:
            self._attribution = attribution(program, state, self.backend.local)
            self._keys = frozenset(self._attribution.keys())
            self._for = program
        listing = self.kernel.list_rules()
        counters, lookups = rule_counters(listing, self._attribution)
        self.sets_listed = 0
        for name, hits in lookups.items():
            if self._lookups.get(name) == hits and name in self._elements:
                continue
            self._elements[name] = (
                element_counters(self.kernel.list_set(name), self._attribution)
                if hits.packets
                else {}
            )
            self.sets_listed += 1
        self._elements = {n: c for n, c in self._elements.items() if n in lookups}
        self._lookups = lookups
        for found in self._elements.values():
            counters.update(found)
        self.tracker.update(now, counters, self._keys)
        return True
