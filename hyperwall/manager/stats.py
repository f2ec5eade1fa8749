"""Per-rule hit counters across the fleet: the latest report of each host, summed per rule
and joined with the current policy, so a rule nobody hit shows with 0 (`--unused`).

Counterpart of `agent.hits` (each agent's totals, reported with `PUT
/v1/agent/H/hits`) and `manager.stats_routes` (`GET /v1/stats`). A report is a host's whole
state (totals since its rules were created, and the last hit of each), not an increment, so
the board keeps only the latest per host and the sum is a plain sum: a lost or repeated
report changes nothing. The board lives in the manager's memory: after a manager restart
it fills again within one reporting period (`hyperwall agent --hits-seconds`); with
several managers, each answers with the hosts that report to it. A host whose report is
older than `STALE_AFTER` still counts (its hits happened), and its age shows in `hosts`.

Keys: a rule id as `trace` prints it (`tenant/policy/rule`, `policy/rule`), or a tenant's
default (`default@tenant`, `nft.hits.default_key`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hyperwall.policy.model import Catalog

DEFAULT = "default"
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class HostHits:
    read: float  # when the host read its counters (its clock)
    rules: Mapping[str, tuple[int, int, float | None]]  # key -> packets, bytes, last hit


@dataclass(frozen=True, slots=True)
class RuleRow:
    rule: str
    tenant: str | None
    policy: str | None
    packets: int
    bytes: int
    last_hit: float | None
    hosts: int  # hosts that counted a hit

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "tenant": self.tenant,
            "policy": self.policy,
            "packets": self.packets,
            "bytes": self.bytes,
            "lastHit": self.last_hit,
            "hosts": self.hosts,
        }


class HitBoard:
    """The latest report of each host."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostHits] = {}

    def put(self, host: str, report: HostHits) -> None:
        self.hosts[host] = report


def _split(key: str) -> tuple[str, str | None, str | None]:
    """(rule, tenant, policy) of a key."""
    if key.startswith(DEFAULT + "@"):
        return DEFAULT, key.split("@", 1)[1] or None, None
    parts = key.split("/")
    policy = "/".join(parts[:-1]) or None
    return key, parts[0] if len(parts) == 3 else None, policy


def rule_keys(catalog: Catalog) -> list[str]:
    """Every rule of the policy, and each tenant's default (and the provider workloads'),
    in document order."""
    keys = [r.id for p in catalog.config.policies.values() for r in p.rules]
    keys += [f"{DEFAULT}@{t}" for t in catalog.config.tenants]
    if any(w.tenant is None for w in catalog.workloads.values()):
        keys.append(f"{DEFAULT}@")
    return keys


def rows(
    board: Mapping[str, HostHits],
    catalog: Catalog | None,
    *,
    visible: Callable[[str | None], bool],
    tenant: str | None = None,
    policy: str | None = None,
    unused_days: float | None = None,
    now: float = 0.0,
) -> list[RuleRow]:
    """Hits per rule of the current policy (rules reported but no longer in it are left out),
    summed over `board`'s hosts; only rules whose tenant the caller may see (`visible`),
    of `tenant`, of `policy` (its key `tenant/name`, or `name` for a provider policy); with
    `unused_days`, only rules with no hit within that many days before `now`."""
    summed: dict[str, list[Any]] = {}
    for report in board.values():
        for key, (packets, octets, last) in report.rules.items():
            row = summed.setdefault(key, [0, 0, None, 0])
            row[0] += packets
            row[1] += octets
            if last is not None and (row[2] is None or last > row[2]):
                row[2] = last
            row[3] += 1 if packets else 0
    keys = rule_keys(catalog) if catalog is not None else sorted(summed)
    cutoff = None if unused_days is None else now - unused_days * DAY
    out: list[RuleRow] = []
    for key in keys:
        rule, owner, policy_key = _split(key)
        if not visible(owner) or (tenant is not None and owner != tenant):
            continue
        if policy is not None and policy_key != policy:
            continue
        packets, octets, last, hosts = summed.get(key, (0, 0, None, 0))
        if cutoff is not None and last is not None and last >= cutoff:
            continue
        out.append(RuleRow(rule, owner, policy_key, packets, octets, last, hosts))
    return out
