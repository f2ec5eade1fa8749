"""Which flow records a query wants, and which a caller may see: one pure predicate shared
by the manager's `GET /v1/flows` (whose SQL in `manager.flow_db` must select exactly what
`FlowFilter.matches` accepts: a property test holds them equal), `hyperwall logs` and
`hyperwall lab logs`.

Records are the JSON objects of docs/policy.md "Flow log records" (`shared/POLICY.md`).
The filter reads only `time`, `workload`, `rule` and `action`:

- `tenant`: the tenant of the record's workload (`tenant/name`); `-` selects provider
  workloads (`name` without a tenant) and records with no workload.
- `workload`: `tenant/name` exactly, or a bare `name` matching that name in any tenant (and
  the provider workload of that name).
- `rule`: a rule id exactly (`acme/pci-guard/deny-rest`), or a prefix of whole `/` parts
  (`acme/pci-guard`: every rule of that policy; `acme`: every rule of the tenant).
- `action`: exactly (`drop`, `reject`, `allow`, ...).
- `since` (inclusive) and `until` (exclusive): microseconds since the epoch, UTC.

`parse_when` turns `--since 10m` / an RFC 3339 time into such a bound; `time_us` reads a
record's `time`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

PROVIDER = "-"  # the `tenant` filter value for provider workloads
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
MAX_FILTER = 255  # characters of a workload or rule filter


def tenant_of(workload: object) -> str | None:
    """`acme` for `acme/db-1`; None for a provider workload `dns-1` or no workload."""
    if not isinstance(workload, str) or "/" not in workload:
        return None
    return workload.split("/", 1)[0]


def time_us(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 time (`2026-12-03T07:00:00.123456Z`;
    a time without a zone is UTC). ValueError if it is not one."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def us_time(us: int) -> str:
    """The record form of a time: `2026-12-03T07:00:00.123456Z`."""
    seconds, micros = divmod(us, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


def parse_when(text: str, now_us: int) -> int:
    """A bound in microseconds: a duration before `now_us` (`90s`, `10m`, `1.5h`, `2d`,
    `1w`) or an RFC 3339 time. ValueError naming the text otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match:
        return now_us - int(float(match.group(1)) * _UNITS[match.group(2)] * 1_000_000)
    try:
        return time_us(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r}: expected a duration (30s, 10m, 2h, 7d) or a time (2026-12-03T07:00:00Z)"
        ) from None


def rule_matches(wanted: str, rule: object) -> bool:
    """`wanted` is the rule id or a prefix of whole `/` parts of it."""
    return isinstance(rule, str) and (rule == wanted or rule.startswith(wanted + "/"))


def workload_matches(wanted: str, workload: object) -> bool:
    """`tenant/name` exactly; a bare name matches that name in every tenant."""
    if not isinstance(workload, str):
        return False
    return workload == wanted or ("/" not in wanted and workload.endswith("/" + wanted))


@dataclass(frozen=True, slots=True)
class FlowFilter:
    """The filters of a flow query; None = any."""

    tenant: str | None = None
    workload: str | None = None
    rule: str | None = None
    action: str | None = None
    since: int | None = None  # microseconds since the epoch, inclusive
    until: int | None = None  # exclusive

    def matches(self, record: Mapping[str, object]) -> bool:
        """Whether `record` (a flow record's JSON object) passes every filter."""
        workload = record.get("workload")
        if self.tenant is not None:
            tenant = tenant_of(workload)
            if tenant != (None if self.tenant == PROVIDER else self.tenant):
                return False
        if self.workload is not None and not workload_matches(self.workload, workload):
            return False
        if self.rule is not None and not rule_matches(self.rule, record.get("rule")):
            return False
        if self.action is not None and record.get("action") != self.action:
            return False
        if self.since is not None or self.until is not None:
            when = record.get("time")
            if not isinstance(when, str):
                return False
            try:
                t = time_us(when)
            except ValueError:
                return False
            if self.since is not None and t < self.since:
                return False
            if self.until is not None and t >= self.until:
                return False
        return True

    def within_tenant(self, tenant: str) -> FlowFilter | None:
        """This filter narrowed to one tenant's records (a tenant-admin's view); None if it
        asks for another tenant's (or the provider's), which that caller may not see."""
        if self.tenant is not None and self.tenant != tenant:
            return None
        return FlowFilter(tenant, self.workload, self.rule, self.action, self.since, self.until)
