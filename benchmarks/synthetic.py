"""A synthetic fleet as raw policy documents: the dicts a user would write in YAML.

`generate(shape)` is deterministic: the same `FleetShape` (including its seed) always gives
the same documents, in the same order. The fleet imitates a provider running tenants' VMs:

- workloads: every host carries `workloads_per_host` VMs, a few of them the provider's own
  infrastructure VMs (dns, ntp, monitoring, bastion, proxy, backup), the rest tenants' VMs
  spread over the hosts at random. One interface each, an IPv4 address, and an IPv6
  address for a fraction of them. Tenants' VMs belong to applications (`app`, about 40
  VMs each, sizes vary), have a `role` among the app's 2-5 roles, an `env`, the `zone` of
  their host, a `team`, a `version`, and for some apps `pci: "true"`;
- groups: mostly selectors (`app == "a17" && role == "web"`, `app == "a17"`,
  `role == "db" && env in {...}`...), some member lists, some external CIDRs, some nested;
  the provider's groups select across tenants (infra roles, a whole tenant, all prod dbs);
- services: the provider's catalogue and a few per tenant;
- policies: mostly tenants' application-tier policies with an `appliedTo` selector or
  group and allow rules whose peers are groups, selectors, CIDRs or workloads and whose
  services are tcp/udp ports or named services; some drop/reject/pass rules and a few log
  rules; the provider's policies (emergency/infrastructure tiers) include a few applied to
  every workload.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

API_VERSION = "hyperwall.io/v1"

Doc = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FleetShape:
    """How big the synthetic fleet is; `seed` makes it reproducible."""

    hosts: int
    workloads_per_host: int  # including the provider's own VMs
    tenants: int
    provider_workloads_per_host: int
    groups: int  # tenants' and provider's together
    policies: int
    rules: int  # over all policies
    ipv6_fraction: float = 0.3  # of tenants' VMs; the provider's VMs are all dual-stack
    provider_group_fraction: float = 0.05
    provider_policy_fraction: float = 0.03
    seed: int = 1

    @property
    def workloads(self) -> int:
        return self.hosts * self.workloads_per_host

    def with_seed(self, seed: int) -> FleetShape:
        return replace(self, seed=seed)

    def describe(self) -> str:
        return (
            f"{self.workloads:,} workloads on {self.hosts} hosts "
            f"({self.workloads_per_host} per host, {self.provider_workloads_per_host} of them "
            f"provider infra), {self.tenants} tenants, {self.groups:,} groups, "
            f"{self.policies:,} policies, {self.rules:,} rules, seed {self.seed}"
        )


FULL = FleetShape(
    hosts=100,
    workloads_per_host=100,
    tenants=10,
    provider_workloads_per_host=2,
    groups=1000,
    policies=1000,
    rules=10_000,
)
QUICK = FleetShape(  # a 10x smaller fleet, for smoke runs
    hosts=10,
    workloads_per_host=100,
    tenants=10,
    provider_workloads_per_host=2,
    groups=100,
    policies=100,
    rules=1000,
)
TINY = FleetShape(  # for the tests: a few seconds at most
    hosts=3,
    workloads_per_host=12,
    tenants=2,
    provider_workloads_per_host=2,
    groups=30,
    policies=12,
    rules=60,
)

TENANT_NAMES = (
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
)
ROLES = ("lb", "web", "app", "api", "db", "cache", "queue", "worker", "batch")
ROLE_WEIGHTS = (1, 5, 4, 3, 2, 1, 1, 2, 1)
ENVS = ("prod", "stage", "dev", "test")
ENV_WEIGHTS = (50, 25, 20, 5)
INFRA_ROLES = ("dns", "ntp", "mon", "bastion", "proxy", "backup")
TEAMS_PER_TENANT = 5
VERSIONS = ("v1", "v2", "v3")

PROVIDER_SERVICES: dict[str, list[str]] = {
    "https": ["tcp/443"],
    "http": ["tcp/80"],
    "ssh": ["tcp/22"],
    "dns": ["udp/53", "tcp/53"],
    "ntp": ["udp/123"],
    "postgres": ["tcp/5432"],
    "mysql": ["tcp/3306"],
    "redis": ["tcp/6379"],
    "kafka": ["tcp/9092"],
    "amqp": ["tcp/5672"],
    "memcached": ["tcp/11211", "udp/11211"],
    "node-exporter": ["tcp/9100"],
    "app-api": ["tcp/8000-8080"],
    "ping": ["icmp/echo-request", "icmpv6/echo-request"],
    "ldap": ["tcp/389", "tcp/636"],
    "smtp": ["tcp/25", "tcp/587"],
    "grpc": ["tcp/50051"],
    "elastic": ["tcp/9200-9300"],
    "syslog": ["udp/514", "tcp/6514"],
    "proxy": ["tcp/3128"],
    "backup": ["tcp/873"],
}
INLINE_PORTS = (
    "tcp/80",
    "tcp/443",
    "tcp/8080",
    "tcp/8443",
    "tcp/5432",
    "tcp/3306",
    "tcp/6379",
    "tcp/9092",
    "tcp/27017",
    "tcp/9000-9100",
    "tcp/8000-8999",
    "udp/53",
    "udp/514",
    "udp/4789",
    "tcp",
    "icmp",
)


@dataclass(frozen=True, slots=True)
class SyntheticFleet:
    shape: FleetShape
    documents: list[Doc]
    stats: dict[str, int] = field(default_factory=dict)  # for the report


@dataclass(slots=True)
class _App:
    name: str
    roles: list[str]
    role_weights: list[int]
    team: str
    pci: bool


@dataclass(slots=True)
class _Tenant:
    name: str
    index: int
    apps: list[_App] = field(default_factory=list)
    workloads: list[str] = field(default_factory=list)  # names
    combos: list[tuple[str, str]] = field(default_factory=list)  # (app, role) in use
    groups: list[str] = field(default_factory=list)  # every group name
    workload_groups: list[str] = field(default_factory=list)  # groups that pick workloads
    services: list[str] = field(default_factory=list)


def tenant_name(i: int) -> str:
    return TENANT_NAMES[i] if i < len(TENANT_NAMES) else f"tenant{i}"


def host_name(i: int) -> str:
    return f"hv{i:03d}"


def _doc(
    kind: str,
    name: str,
    tenant: str | None = None,
    labels: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
) -> Doc:
    metadata: dict[str, Any] = {"name": name}
    if tenant is not None:
        metadata["tenant"] = tenant
    if labels:
        metadata["labels"] = labels
    doc: Doc = {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata}
    if spec is not None:
        doc["spec"] = spec
    return doc


def _q(value: str) -> str:
    return f'"{value}"'


def _split(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal integers (the first ones get the remainder)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class _Generator:
    def __init__(self, shape: FleetShape) -> None:
        self.shape = shape
        self.rng = random.Random(shape.seed)
        self.docs: list[Doc] = []
        self.tenants: list[_Tenant] = []
        self.provider_groups: list[str] = []
        self.infra_groups: dict[str, str] = {}  # infra role -> provider group name
        self.app_count = 0

    # -- helpers ------------------------------------------------------------------------

    def pick(self, items: Sequence[T], weights: Sequence[float] | None = None) -> T:
        if weights is None:
            return items[self.rng.randrange(len(items))]
        return self.rng.choices(items, weights)[0]

    def emit(self, doc: Doc) -> None:
        self.docs.append(doc)

    # -- the fleet ----------------------------------------------------------------------

    def run(self) -> SyntheticFleet:
        s = self.shape
        self.tenants = [_Tenant(tenant_name(i), i) for i in range(s.tenants)]
        for t in self.tenants:
            self.emit(
                _doc("Tenant", t.name, spec={"defaultAction": "drop", "logDefault": t.index < 2})
            )
        self.services()
        self.workloads()
        self.groups()
        self.policies()
        return SyntheticFleet(s, self.docs, fleet_stats(self.docs))

    def services(self) -> None:
        for name, ports in PROVIDER_SERVICES.items():
            self.emit(_doc("Service", name, spec={"ports": ports}))
        for t in self.tenants:
            for port in self.rng.sample(range(7000, 7100), 3):
                name = f"svc-{port}"
                t.services.append(name)
                self.emit(_doc("Service", name, t.name, spec={"ports": [f"tcp/{port}"]}))

    def workloads(self) -> None:
        s, rng = self.shape, self.rng
        tenant_slots = s.hosts * (s.workloads_per_host - s.provider_workloads_per_host)
        weights = [rng.uniform(0.5, 1.5) for _ in self.tenants]
        owners = rng.choices(self.tenants, weights, k=tenant_slots)
        sizes = Counter(t.name for t in owners)
        specs: list[tuple[_Tenant, str, dict[str, str], int]] = []  # tenant, name, labels, n
        for t in self.tenants:
            count = sizes[t.name]
            t.apps = [self.new_app(t) for _ in range(max(2, round(count / 40)))]
            app_weights = [rng.lognormvariate(0, 0.6) for _ in t.apps]
            seen: Counter[tuple[str, str]] = Counter()
            for n in range(count):
                app = self.pick(t.apps, app_weights)
                role = self.pick(app.roles, app.role_weights)
                seen[app.name, role] += 1
                name = f"{app.name}-{role}-{seen[app.name, role]}"
                labels = {
                    "app": app.name,
                    "role": role,
                    "env": self.pick(ENVS, ENV_WEIGHTS),
                    "team": app.team,
                    "version": self.pick(VERSIONS),
                }
                if app.pci:
                    labels["pci"] = "true"
                if rng.random() < 0.001:
                    labels["quarantine"] = "true"
                t.workloads.append(name)
                specs.append((t, name, labels, n))
            t.combos = sorted(seen)
        rng.shuffle(specs)
        per_host = s.workloads_per_host - s.provider_workloads_per_host
        mac = 0
        infra_n = 0
        for h in range(s.hosts):
            host, zone = host_name(h), f"z{h % 4}"
            for i in range(s.provider_workloads_per_host):
                role = INFRA_ROLES[infra_n % len(INFRA_ROLES)]
                labels = {"role": role, "infra": "true", "env": "prod", "zone": zone}
                ips = [f"10.250.{infra_n // 250}.{infra_n % 250 + 2}", f"fd00:fa::{infra_n + 2:x}"]
                self.workload(f"{role}-{h}-{i}", None, host, labels, mac, ips)
                mac, infra_n = mac + 1, infra_n + 1
            for t, name, labels, n in specs[h * per_host : (h + 1) * per_host]:
                ips = [f"10.{t.index + 1}.{n // 250}.{n % 250 + 2}"]
                if rng.random() < s.ipv6_fraction:
                    ips.append(f"fd00:{t.index + 1:x}::{n + 2:x}")
                self.workload(name, t.name, host, {**labels, "zone": zone}, mac, ips)
                mac += 1

    def new_app(self, t: _Tenant) -> _App:
        name = f"a{self.app_count}"
        self.app_count += 1
        k = self.rng.randint(2, 5)
        roles = sorted(self.rng.sample(ROLES, k), key=ROLES.index)
        weights = [ROLE_WEIGHTS[ROLES.index(r)] for r in roles]
        team = f"team{self.rng.randrange(TEAMS_PER_TENANT)}"
        return _App(name, roles, weights, team, pci=self.rng.random() < 0.12)

    def workload(
        self,
        name: str,
        tenant: str | None,
        host: str,
        labels: dict[str, str],
        mac: int,
        ips: list[str],
    ) -> None:
        address = f"52:54:00:{mac >> 16 & 255:02x}:{mac >> 8 & 255:02x}:{mac & 255:02x}"
        spec = {"host": host, "interfaces": [{"name": "eth0", "mac": address, "ips": ips}]}
        self.emit(_doc("Workload", name, tenant, labels, spec))

    # -- groups -------------------------------------------------------------------------

    def groups(self) -> None:
        s = self.shape
        provider = max(len(INFRA_ROLES) + 3, round(s.groups * s.provider_group_fraction))
        for t, count in zip(self.tenants, _split(s.groups - provider, s.tenants), strict=True):
            for i in range(count):
                self.tenant_group(t, i)
        self.provider_groups_(provider)

    def external_cidr(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.5:
            return f"198.{18 + rng.randrange(2)}.{rng.randrange(256)}.0/24"
        if r < 0.8:
            return f"203.0.113.{16 * rng.randrange(16)}/28"
        return f"2001:db8:{rng.randrange(4096):x}::/48"

    def tenant_selector(self, t: _Tenant) -> str:
        rng = self.rng
        app, role = self.pick(t.combos)
        form = rng.choices(range(8), (45, 15, 12, 8, 6, 6, 4, 4))[0]
        if form == 0:
            return f"app == {_q(app)} && role == {_q(role)}"
        if form == 1:
            return f"app == {_q(app)}"
        if form == 2:
            return f"app == {_q(app)} && env == {_q(self.pick(ENVS, ENV_WEIGHTS))}"
        if form == 3:
            return f'role == {_q(role)} && env in {{"prod", "stage"}}'
        if form == 4:
            team = next(a.team for a in t.apps if a.name == app)
            return f'team == {_q(team)} && env != "dev"'
        if form == 5:
            other, _ = self.pick(t.combos)
            return f"app in {{{_q(app)}, {_q(other)}}} && role == {_q(role)}"
        if form == 6:
            return 'pci == "true" || (role == "db" && env == "prod")'
        return f"zone == {_q(f'z{rng.randrange(4)}')} && role == {_q(role)}"

    def tenant_group(self, t: _Tenant, i: int) -> None:
        rng = self.rng
        kind = (
            "selector"
            if i < 4
            else rng.choices(("selector", "members", "cidrs", "nested"), (72, 8, 8, 12))[0]
        )
        spec: dict[str, Any] = {}
        if kind == "selector":
            spec["selector"] = self.tenant_selector(t)
        elif kind == "members":
            spec["members"] = rng.sample(t.workloads, min(len(t.workloads), rng.randint(2, 8)))
        elif kind == "cidrs":
            spec["cidrs"] = sorted({self.external_cidr() for _ in range(rng.randint(1, 3))})
        else:
            spec["groups"] = rng.sample(t.groups, min(len(t.groups), rng.randint(2, 4)))
            if rng.random() < 0.1:
                spec["selector"] = self.tenant_selector(t)
        name = f"g{i:03d}-{kind}"
        t.groups.append(name)
        if kind != "cidrs":
            t.workload_groups.append(name)
        self.emit(_doc("Group", name, t.name, spec=spec))

    def provider_groups_(self, count: int) -> None:
        rng = self.rng
        made: list[tuple[str, dict[str, Any]]] = []
        for role in INFRA_ROLES:
            name = f"infra-{role}"
            self.infra_groups[role] = name
            made.append((name, {"selector": f'infra == "true" && role == {_q(role)}'}))
        made.append(("infra-all", {"selector": "!has(hyperwall.io/tenant)"}))
        made.append(("blocklist", {"cidrs": sorted({self.external_cidr() for _ in range(12)})}))
        made.append(("mgmt-nets", {"cidrs": ["10.250.0.0/16", "192.0.2.0/24", "fd00:fa::/64"]}))
        i = 0
        while len(made) < count:
            form = i % 6
            t = self.tenants[i % len(self.tenants)]
            if form == 0:
                spec: dict[str, Any] = {"selector": f"hyperwall.io/tenant == {_q(t.name)}"}
            elif form == 1:
                role = self.pick(ROLES, ROLE_WEIGHTS)
                spec = {"selector": f'role == {_q(role)} && env == "prod"'}
            elif form == 2:
                spec = {"selector": f"zone == {_q(f'z{rng.randrange(4)}')} && has(pci)"}
            elif form == 3:
                names = rng.sample(t.workloads, min(len(t.workloads), 4))
                spec = {"members": [f"{t.name}/{n}" for n in names]}
            elif form == 4:
                spec = {"groups": [f"{t.name}/{self.pick(t.workload_groups)}", "infra-mon"]}
            else:
                spec = {"cidrs": sorted({self.external_cidr() for _ in range(3)})}
            made.append((f"pg{i:03d}", spec))
            i += 1
        for name, spec in made:
            self.provider_groups.append(name)
            self.emit(_doc("Group", name, spec=spec))

    # -- policies -----------------------------------------------------------------------

    def rule_counts(self, policies: int) -> list[int]:
        """Rules per policy: at least one each, `shape.rules` in total, a long tail."""
        weights = [self.rng.lognormvariate(0, 0.6) for _ in range(policies)]
        counts = [1] * policies
        for i in self.rng.choices(range(policies), weights, k=self.shape.rules - policies):
            counts[i] += 1
        return counts

    def policies(self) -> None:
        s = self.shape
        provider = max(2, round(s.policies * s.provider_policy_fraction))
        counts = self.rule_counts(s.policies)
        self.provider_policies(counts[:provider])
        i = provider
        for t, n in zip(self.tenants, _split(s.policies - provider, s.tenants), strict=True):
            for j in range(n):
                self.tenant_policy(t, j, counts[i])
                i += 1

    def services_of(self, t: _Tenant | None) -> list[str] | None:
        rng = self.rng
        if rng.random() < 0.12:
            return None
        out: list[str] = []
        for _ in range(rng.choices((1, 2, 3), (75, 20, 5))[0]):
            r = rng.random()
            if r < 0.5:
                out.append(self.pick(INLINE_PORTS))
            elif r < 0.6:
                out.append(f"tcp/{rng.randrange(1024, 32768)}")
            elif r < 0.9 or t is None:
                out.append(self.pick(list(PROVIDER_SERVICES)))
            else:
                out.append(self.pick(t.services))
        return sorted(set(out))

    def tenant_peer(self, t: _Tenant) -> dict[str, str]:
        rng = self.rng
        kind = rng.choices(("group", "selector", "cidr", "workload"), (64, 14, 18, 4))[0]
        if kind == "group":
            return {"group": self.pick(t.groups)}
        if kind == "selector":
            app, role = self.pick(t.combos)
            if rng.random() < 0.7:
                return {"selector": f"app == {_q(app)} && role == {_q(role)}"}
            return {"selector": f"role == {_q(role)}"}
        if kind == "cidr":
            if rng.random() < 0.3:
                return {"cidr": f"10.{t.index + 1}.{rng.randrange(8)}.0/24"}
            return {"cidr": self.external_cidr()}
        return {"workload": self.pick(t.workloads)}

    def provider_peer(self) -> dict[str, str]:
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            return {"group": self.pick(self.provider_groups)}
        if r < 0.6:
            t = self.pick(self.tenants)
            return {"group": f"{t.name}/{self.pick(t.groups)}"}
        if r < 0.7:
            return {"selector": f'infra == "true" && role == {_q(self.pick(INFRA_ROLES))}'}
        return {"cidr": self.external_cidr()}

    def rule(self, t: _Tenant | None, j: int) -> dict[str, Any]:
        rng = self.rng
        action = rng.choices(("allow", "drop", "reject", "pass"), (80, 8, 5, 7))[0]
        direction = rng.choices(("in", "out", "both"), (45, 25, 30))[0]

        def peers() -> list[dict[str, str]]:
            k = rng.choices((1, 2, 3), (80, 17, 3))[0]
            return [self.tenant_peer(t) if t else self.provider_peer() for _ in range(k)]

        rule: dict[str, Any] = {"name": f"r{j}", "action": action, "direction": direction}
        if direction in ("in", "both"):
            rule["from"] = peers()
        if direction in ("out", "both"):
            rule["to"] = peers()
        if direction == "in" and rng.random() < 0.3:
            rule["to"] = peers()
        if direction == "out" and rng.random() < 0.3:
            rule["from"] = peers()
        services = self.services_of(t)
        if services is not None:
            rule["services"] = services
        if rng.random() < 0.02:
            rule["log"] = True
        return rule

    def deny_rest(self, j: int) -> dict[str, Any]:
        return {"name": f"r{j}-deny-rest", "action": "drop", "direction": "in", "log": True}

    def tenant_policy(self, t: _Tenant, j: int, count: int) -> None:
        rng = self.rng
        tier = rng.choices(("application", "environment", "infrastructure"), (80, 15, 5))[0]
        priority = self.pick((10, 50, 100, 200, 500, 1000, 1000, 1000))
        spec: dict[str, Any] = {"tier": tier, "priority": priority}
        target = rng.choices(("selector", "group", "scope", "workload"), (50, 33, 12, 5))[0]
        app, role = self.pick(t.combos)
        if target == "selector":
            text = f"app == {_q(app)}"
            spec["appliedTo"] = {
                "selector": text if rng.random() < 0.6 else f"{text} && role == {_q(role)}"
            }
        elif target == "group":
            spec["appliedTo"] = {"group": self.pick(t.workload_groups)}
        elif target == "workload":
            spec["appliedTo"] = {"workload": self.pick(t.workloads)}
        rules = [self.rule(t, k) for k in range(count)]
        if count >= 3 and rng.random() < 0.15:
            rules[-1] = self.deny_rest(count - 1)
        spec["rules"] = rules
        self.emit(_doc("Policy", f"p{j:03d}-{app}", t.name, spec=spec))

    def provider_policies(self, counts: list[int]) -> None:
        templates: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [
            (
                "quarantine",
                {"tier": "emergency", "appliedTo": {"selector": 'quarantine == "true"'}},
                [{"name": "isolate", "action": "drop", "direction": "both", "log": True}],
            ),
            (
                "blocklist",
                {"tier": "emergency", "priority": 10},
                [
                    {
                        "name": "drop-listed",
                        "action": "drop",
                        "direction": "in",
                        "from": [{"group": "blocklist"}],
                        "log": True,
                    }
                ],
            ),
            (
                "infra-base",
                {"tier": "infrastructure", "priority": 100},
                [
                    {
                        "name": "dns",
                        "action": "allow",
                        "direction": "out",
                        "to": [{"group": self.infra_groups["dns"]}],
                        "services": ["dns"],
                    },
                    {
                        "name": "ntp",
                        "action": "allow",
                        "direction": "out",
                        "to": [{"group": self.infra_groups["ntp"]}],
                        "services": ["ntp"],
                    },
                    {
                        "name": "metrics",
                        "action": "allow",
                        "direction": "in",
                        "from": [{"group": self.infra_groups["mon"]}],
                        "services": ["node-exporter"],
                    },
                    {
                        "name": "bastion-ssh",
                        "action": "allow",
                        "direction": "in",
                        "from": [{"group": self.infra_groups["bastion"]}],
                        "services": ["ssh"],
                    },
                    {
                        "name": "proxy",
                        "action": "allow",
                        "direction": "out",
                        "to": [{"group": self.infra_groups["proxy"]}],
                        "services": ["proxy"],
                    },
                ],
            ),
        ]
        targets = [
            {"selector": "!has(hyperwall.io/tenant)"},
            {"selector": 'role == "db" && env == "prod"'},
            {"selector": 'pci == "true"'},
            {"group": "infra-all"},
        ]
        for i, count in enumerate(counts):
            if i < len(templates):
                name, spec, rules = templates[i]
                spec = dict(spec)
            else:
                name, spec, rules = f"pp{i:03d}", {}, []
                spec["tier"] = self.pick(("emergency", "infrastructure", "environment"), (1, 6, 3))
                spec["priority"] = self.pick((50, 200, 500, 1000))
                if i % 3 == 0:
                    t = self.tenants[i % len(self.tenants)]
                    spec["appliedTo"] = {"selector": f"hyperwall.io/tenant == {_q(t.name)}"}
                else:
                    spec["appliedTo"] = self.pick(targets)
            rules = rules[:count] + [self.rule(None, k) for k in range(len(rules), count)]
            if spec.get("tier") == "infrastructure" and "appliedTo" not in spec and count > 1:
                rules[-1] = {"name": "rest-to-tenants", "action": "pass", "direction": "both"}
            spec["rules"] = rules
            self.emit(_doc("Policy", name, spec=spec))


def fleet_stats(documents: Sequence[Doc]) -> dict[str, int]:
    """Counts that describe a document set: kinds, group parts, rules, peers, appliedTo."""
    stats: Counter[str] = Counter()
    for doc in documents:
        kind, meta, spec = doc["kind"], doc["metadata"], doc.get("spec", {})
        scope = "tenant" if "tenant" in meta else "provider"
        stats[kind if kind == "Tenant" else f"{kind}.{scope}"] += 1
        if kind == "Workload":
            ips = [ip for iface in spec["interfaces"] for ip in iface["ips"]]
            stats["Workload.ipv6"] += any(":" in ip for ip in ips)
        elif kind == "Group":
            parts = [p for p in ("selector", "members", "cidrs", "groups") if p in spec]
            stats[f"Group.{'nested' if 'groups' in parts else parts[0]}"] += 1
        elif kind == "Policy":
            applied = spec.get("appliedTo")
            stats[f"Policy.appliedTo.{next(iter(applied)) if applied else 'scope'}"] += 1
            for rule in spec.get("rules", []):
                stats["rules"] += 1
                stats[f"rules.{rule['action']}"] += 1
                stats["rules.log"] += bool(rule.get("log"))
                for peer in (*rule.get("from", ()), *rule.get("to", ())):
                    stats[f"peers.{next(iter(peer))}"] += 1
                services = rule.get("services")
                stats["rules.services.any" if services is None else "services"] += len(
                    services or [None]
                )
    return dict(sorted(stats.items()))


def generate(shape: FleetShape) -> SyntheticFleet:
    """The fleet of `shape` as raw documents; deterministic in `shape` (and its seed)."""
    return _Generator(shape).run()
