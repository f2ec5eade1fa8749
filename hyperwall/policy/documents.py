"""The document kinds of `docs/policy.md` as strict, frozen pydantic models.

This is the edge of the pure core: `parse_document` turns one decoded YAML/JSON value into a
typed document or a list of `Issue`s (unknown fields, bad names, CIDRs, ports, MACs...).
Cross-document checks (references, duplicates, cycles, tenants) live in `catalog`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from hyperwall.policy.errors import Issue, Source, join_path
from hyperwall.policy.ports import KEYWORDS, is_inline, parse_port_spec
from hyperwall.policy.selector import SelectorSyntaxError, parse_selector

API_VERSION = "hyperwall.io/v1"
KINDS = ("Tenant", "Workload", "Group", "Service", "Policy", "Assertion")
TIERS = ("emergency", "infrastructure", "environment", "application")
RESERVED_LABEL_PREFIX = "hyperwall.io/"

_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
_LABEL_KEY = re.compile(r"[A-Za-z0-9_./-]+")
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def shown(value: str, limit: int = 80) -> str:
    """`repr(value)`, cut to `limit` characters: error messages never echo a whole
    megabyte-sized input back."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _name(value: str) -> str:
    if len(value) > 63 or not _NAME.fullmatch(value):
        raise ValueError(
            f"bad name {shown(value)}: expected lower-case letters, digits, '.' and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return value


def check_name(value: str) -> str:
    """`value` if it is a valid document name; raises ValueError saying why not."""
    return _name(value)


def _ref(value: str) -> str:
    """A reference: NAME, or TENANT/NAME (provider documents naming a tenant's object)."""
    parts = value.split("/")
    if len(parts) > 2:
        raise ValueError(f"bad reference {shown(value)}: expected NAME or TENANT/NAME")
    for part in parts:
        _name(part)
    return value


def _label_key(value: str) -> str:
    if not _LABEL_KEY.fullmatch(value) or len(value) > 253:
        raise ValueError(
            f"bad label key {shown(value)}: expected [A-Za-z0-9_./-]+, at most 253 characters"
        )
    return value


def _label_value(value: str) -> str:
    if len(value) > 253:
        raise ValueError("label value too long: expected at most 253 characters")
    return value


def _ifname(value: str) -> str:
    if not _IFNAME.fullmatch(value):
        raise ValueError(
            f"bad interface name {shown(value)}: expected 1-15 characters of [A-Za-z0-9_.-]"
        )
    return value


def _mac(value: str) -> str:
    if not _MAC.fullmatch(value):
        raise ValueError(
            f"bad MAC address {shown(value)}: expected six hex pairs like 52:54:00:00:00:01"
        )
    if int(value[:2], 16) & 1:
        raise ValueError(f"MAC address {shown(value)} is multicast: expected a unicast MAC")
    return value.lower()


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(
            f"bad IP address {shown(value)}: expected an IPv4 or IPv6 address without prefix"
        ) from None


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ipaddress.ip_network(value, strict=False)
            raise ValueError(f"CIDR {shown(value)} has host bits set: expected {fixed}") from None
        raise ValueError(
            f"bad CIDR {shown(value)}: expected an IPv4 or IPv6 network like 192.0.2.0/24"
        ) from None


def _selector(value: str) -> str:
    try:
        parse_selector(value)
    except SelectorSyntaxError as exc:
        raise ValueError(f"bad selector {shown(value)}: {exc}") from None
    return value


def _port_spec(value: str) -> str:
    parse_port_spec(value)  # PortSpecError is a ValueError
    return value


def _service_ref(value: str) -> str:
    return _port_spec(value) if is_inline(value) else _name(value)


Name = Annotated[StrictStr, AfterValidator(_name)]
Ref = Annotated[StrictStr, AfterValidator(_ref)]
LabelKey = Annotated[StrictStr, AfterValidator(_label_key)]
LabelValue = Annotated[StrictStr, AfterValidator(_label_value)]
IfName = Annotated[StrictStr, AfterValidator(_ifname)]
Mac = Annotated[StrictStr, AfterValidator(_mac)]
IP = Annotated[StrictStr, AfterValidator(_ip)]
Cidr = Annotated[StrictStr, AfterValidator(_cidr)]
SelectorText = Annotated[StrictStr, AfterValidator(_selector)]
PortSpec = Annotated[StrictStr, AfterValidator(_port_spec)]
ServiceRef = Annotated[StrictStr, AfterValidator(_service_ref)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metadata(_Strict):
    name: Name
    tenant: Name | None = None
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)


class TenantSpec(_Strict):
    defaultAction: Literal["drop", "allow"] = "drop"
    logDefault: StrictBool = False


class InterfaceSpec(_Strict):
    name: IfName
    mac: Mac
    ips: list[IP] = Field(default_factory=list)


class WorkloadSpec(_Strict):
    host: Name
    interfaces: list[InterfaceSpec] = Field(min_length=1)


class GroupSpec(_Strict):
    selector: SelectorText | None = None
    members: list[Ref] = Field(default_factory=list)
    cidrs: list[Cidr] = Field(default_factory=list)
    groups: list[Ref] = Field(default_factory=list)


class ServiceSpec(_Strict):
    ports: list[PortSpec] = Field(min_length=1)


def _exactly_one(model: BaseModel, fields: tuple[str, ...]) -> None:
    given = [f for f in fields if getattr(model, f) is not None]
    if len(given) != 1:
        raise ValueError(
            f"expected exactly one of {', '.join(fields)}, got "
            + (", ".join(given) if given else "none")
        )


class Peer(_Strict):
    group: Ref | None = None
    workload: Ref | None = None
    selector: SelectorText | None = None
    cidr: Cidr | None = None

    @model_validator(mode="after")
    def _one(self) -> Peer:
        _exactly_one(self, ("group", "workload", "selector", "cidr"))
        return self


class AppliedTo(_Strict):
    selector: SelectorText | None = None
    group: Ref | None = None
    workload: Ref | None = None

    @model_validator(mode="after")
    def _one(self) -> AppliedTo:
        _exactly_one(self, ("selector", "group", "workload"))
        return self


class Rule(_Strict):
    name: Name
    action: Literal["allow", "drop", "reject", "pass"]
    direction: Literal["in", "out", "both"] = "both"
    from_: list[Peer] = Field(default_factory=list, alias="from")
    to: list[Peer] = Field(default_factory=list)
    services: list[ServiceRef] | None = None
    log: StrictBool = False


class PolicySpec(_Strict):
    tier: Literal["emergency", "infrastructure", "environment", "application"] = "application"
    priority: StrictInt = Field(default=1000, ge=0, le=2**31 - 1)
    appliedTo: AppliedTo | None = None
    rules: list[Rule] = Field(default_factory=list)


class AssertionSpec(_Strict):
    description: StrictStr = Field(default="", max_length=1024)
    from_: list[Peer] = Field(default_factory=list, alias="from")
    to: list[Peer] = Field(default_factory=list)
    services: list[ServiceRef] | None = None
    expect: Literal["allow", "deny"]


class _Document(_Strict):
    apiVersion: Literal["hyperwall.io/v1"]
    metadata: Metadata


class TenantDoc(_Document):
    kind: Literal["Tenant"]
    spec: TenantSpec = Field(default_factory=TenantSpec)


class WorkloadDoc(_Document):
    kind: Literal["Workload"]
    spec: WorkloadSpec


class GroupDoc(_Document):
    kind: Literal["Group"]
    spec: GroupSpec = Field(default_factory=GroupSpec)


class ServiceDoc(_Document):
    kind: Literal["Service"]
    spec: ServiceSpec


class PolicyDoc(_Document):
    kind: Literal["Policy"]
    spec: PolicySpec = Field(default_factory=PolicySpec)


class AssertionDoc(_Document):
    kind: Literal["Assertion"]
    spec: AssertionSpec


Document = TenantDoc | WorkloadDoc | GroupDoc | ServiceDoc | PolicyDoc | AssertionDoc
_MODELS: dict[str, type[_Document]] = {
    "Tenant": TenantDoc,
    "Workload": WorkloadDoc,
    "Group": GroupDoc,
    "Service": ServiceDoc,
    "Policy": PolicyDoc,
    "Assertion": AssertionDoc,
}

_MESSAGES = {
    "extra_forbidden": ("unknown field", ""),
    "missing": ("required field is missing", ""),
    "string_type": ("wrong type", "a string"),
    "bool_type": ("wrong type", "true or false"),
    "int_type": ("wrong type", "an integer"),
    "list_type": ("wrong type", "a list"),
    "dict_type": ("wrong type", "a mapping"),
    "model_type": ("wrong type", "a mapping"),
    "too_short": ("list is empty", "at least one entry"),
}


def _issues_from(error: ValidationError, source: Source) -> list[Issue]:
    issues = []
    for err in error.errors(include_url=False):
        path = join_path(*(p for p in err["loc"] if isinstance(p, str | int) and p != "[key]"))
        kind = err["type"]
        if kind in _MESSAGES:
            message, expected = _MESSAGES[kind]
        elif kind == "literal_error":
            message = f"bad value {err.get('input')!r}"
            expected = str((err.get("ctx") or {}).get("expected", ""))
        elif kind == "value_error":
            message, expected = str((err.get("ctx") or {}).get("error", err["msg"])), ""
        else:
            message, expected = err["msg"], ""
        issues.append(Issue(source, path, message, expected))
    return issues


def parse_document(raw: Any, source: Source) -> tuple[Document | None, list[Issue]]:
    """Validate one decoded document; return it, or None and every issue found."""
    if not isinstance(raw, dict):
        return None, [Issue(source, "", "document is not a mapping", "a mapping with kind")]
    kind = raw.get("kind")
    if kind not in _MODELS:
        return None, [Issue(source, "kind", f"unknown kind {kind!r}", "one of " + ", ".join(KINDS))]
    issues = _document_rules(raw, kind, source)
    try:
        doc = _MODELS[kind].model_validate(raw)
    except ValidationError as exc:
        return None, _issues_from(exc, source) + issues
    assert isinstance(
        doc, TenantDoc | WorkloadDoc | GroupDoc | ServiceDoc | PolicyDoc | AssertionDoc
    )
    return (None if issues else doc), issues


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _duplicates(items: Any, path: str, what: str, source: Source, scope: str) -> list[Issue]:
    """Issues for entries of a list of mappings whose `name` repeats an earlier one."""
    issues: list[Issue] = []
    seen: set[str] = set()
    for i, item in enumerate(items if isinstance(items, list) else []):
        name = _mapping(item).get("name")
        if not isinstance(name, str):
            continue
        if name in seen:
            issues.append(
                Issue(
                    source,
                    f"{path}[{i}].name",
                    f"duplicate {what} name {name!r}",
                    f"{what} names unique within the {scope}",
                )
            )
        seen.add(name)
    return issues


def _document_rules(raw: dict[str, Any], kind: str, source: Source) -> list[Issue]:
    """Rules about one document that field types cannot express. They read the raw
    document defensively, so they are reported together with any shape errors."""
    issues: list[Issue] = []
    meta, spec = _mapping(raw.get("metadata")), _mapping(raw.get("spec"))
    if kind == "Tenant" and meta.get("tenant") is not None:
        issues.append(Issue(source, "metadata.tenant", "a Tenant has no tenant", "no field"))
    for key in _mapping(meta.get("labels")):
        if isinstance(key, str) and key.startswith(RESERVED_LABEL_PREFIX):
            issues.append(
                Issue(
                    source,
                    f"metadata.labels.{key}",
                    f"label key {key!r} is reserved for pseudo-labels",
                    f"a key not starting with {RESERVED_LABEL_PREFIX}",
                )
            )
    if kind == "Service" and meta.get("name") in KEYWORDS:
        issues.append(
            Issue(
                source,
                "metadata.name",
                f"service name {meta['name']!r} is a port keyword",
                "a name other than " + ", ".join(sorted(KEYWORDS)),
            )
        )
    if kind == "Workload":
        issues += _duplicates(
            spec.get("interfaces"), "spec.interfaces", "interface", source, "workload"
        )
    if kind == "Policy":
        issues += _duplicates(spec.get("rules"), "spec.rules", "rule", source, "policy")
    return issues
