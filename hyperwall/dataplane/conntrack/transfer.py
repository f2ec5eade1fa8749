"""Two-phase transfer of a VM's conntrack entries, like memory pre-copy. Pure.

Counterpart of `conntrack.kernel` (`kernel.apply` carries a delta out). The source
dumps the VM's entries while it still runs (`snapshot`), the destination injects them;
at the switchover the source dumps again and sends only `delta(before, after)`: entries
opened or changed since, and entries gone since, so the switchover carries what changed
during the copy, not everything again.

An entry counts as changed when anything but its timeout differs, or when its timeout
went up (traffic refreshed it: without that, the copy could expire before traffic
resumes on the destination). A timeout only counting down is not a change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from hyperwall.dataplane.conntrack.entry import Entry, Tuple

Key = tuple[int, Tuple]
Snapshot = Mapping[Key, Entry]


def snapshot(entries: Iterable[Entry]) -> dict[Key, Entry]:
    """Entries by key (zone, original tuple): what `delta` compares."""
    return {entry.key: entry for entry in entries}


@dataclass(frozen=True)
class Delta:
    """What the destination must do: inject `changed` (create or update), delete `removed`."""

    changed: tuple[Entry, ...]
    removed: tuple[Entry, ...]

    def __len__(self) -> int:
        return len(self.changed) + len(self.removed)


def _changed(before: Entry, after: Entry) -> bool:
    return after.timeout > before.timeout or replace(after, timeout=before.timeout) != before


def delta(before: Snapshot, after: Snapshot) -> Delta:
    """From the state the destination holds (`before`) to the source's current (`after`)."""
    changed = tuple(
        entry
        for key, entry in after.items()
        if (old := before.get(key)) is None or _changed(old, entry)
    )
    removed = tuple(entry for key, entry in before.items() if key not in after)
    return Delta(changed, removed)


def apply(state: Snapshot, change: Delta) -> dict[Key, Entry]:
    """`state` with `change` applied: the model of what the destination kernel holds."""
    out = dict(state)
    for entry in change.removed:
        out.pop(entry.key, None)
    for entry in change.changed:
        out[entry.key] = entry
    return out
