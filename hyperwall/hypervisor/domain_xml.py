"""libvirt domain XML <-> hyperwall documents: the VM carries its identity (pure, no I/O).

`parse_domain` reads one domain's XML (as libvirt returns it, or as an operator wrote it)
and returns what it means for hyperwall:

- `Managed`: the domain has a valid `hw:workload` element. Its raw Workload document (and
  the Policy of its embedded `hw:policy`, if any) in the shape of `docs/policy.md`, both
  validated like any document, and its taps (one per `<interface>`, in document order).
- `Unmanaged`: no `hw:workload` element. Its interfaces fail closed.
- `Invalid`: metadata is there but wrong. Each problem names the domain and the offending
  element or attribute (`hw:workload/hw:label[2]/@key`). Fails closed like unmanaged.

`metadata_xml` and `domain_xml` go the other way (the lab defines its guests with them, the
round-trip test checks both directions). Counterpart with I/O: `hypervisor.libvirt_conn`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hyperwall.policy import documents as d
from hyperwall.policy.errors import Issue, Source

NS = "https://hyperwall.io/xmlns/workload/1"
API_VERSION = d.API_VERSION
_Q = f"{{{NS}}}"
_PEER_KINDS = ("group", "workload", "selector", "cidr")
_RULE_ATTRS = ("name", "action", "direction", "log")


@dataclass(frozen=True, slots=True)
class Tap:
    """One `<interface>` of a domain as the host sees it."""

    mac: str  # lower case
    dev: str | None  # `<target dev>`: the host-side tap (None until the domain runs)
    type: str  # ethernet, bridge, network, ...
    bridge: str | None = None  # `<source bridge>` of a bridge interface


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a domain's metadata."""

    domain: str
    where: str  # the element or attribute, e.g. "hw:workload/hw:label[2]/@key"
    message: str

    def __str__(self) -> str:
        return f"domain {self.domain!r}: {self.where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Domain:
    """What every domain has, managed or not."""

    name: str
    uuid: str
    active: bool
    taps: tuple[Tap, ...]


@dataclass(frozen=True, slots=True)
class Unmanaged(Domain):
    """A domain without hyperwall metadata: its interfaces fail closed."""


@dataclass(frozen=True, slots=True)
class Managed(Domain):
    workload: Mapping[str, Any]  # the raw Workload document (valid on its own)
    policy: Mapping[str, Any] | None = None  # the raw embedded Policy document, if any

    def documents(self) -> list[Mapping[str, Any]]:
        return [self.workload] if self.policy is None else [self.workload, self.policy]


@dataclass(frozen=True, slots=True)
class Invalid(Domain):
    """Metadata is there but wrong: fails closed like unmanaged, and is reported."""

    problems: tuple[Problem, ...] = field(default_factory=tuple)


ParsedDomain = Managed | Unmanaged | Invalid


def source_of(domain: str, document: int = 1) -> Source:
    """The `Source` that validation issues of a discovered domain's documents carry."""
    return Source(f"libvirt domain {domain}", document)


def policy_name(domain: str) -> str:
    return f"vm-{domain}"


class _Bad(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


def _local(tag: str) -> str:
    return "hw:" + tag[len(_Q) :] if tag.startswith(_Q) else tag


def _check_attrs(el: ET.Element, where: str, allowed: Sequence[str]) -> None:
    for key in el.attrib:
        if key not in allowed:
            raise _Bad(
                f"{where}/@{key}", f"unknown attribute (expected one of {', '.join(allowed)})"
            )


def _children(el: ET.Element, where: str, allowed: Sequence[str]) -> list[ET.Element]:
    out = []
    for child in el:
        if not isinstance(child.tag, str):  # comments, processing instructions
            continue
        if child.tag not in (_Q + a for a in allowed):
            raise _Bad(f"{where}/{_local(child.tag)}", "unknown element")
        out.append(child)
    return out


def _required(el: ET.Element, where: str, attr: str) -> str:
    value = el.get(attr)
    if value is None:
        raise _Bad(f"{where}/@{attr}", "required attribute is missing")
    return value


def _bool(el: ET.Element, where: str, attr: str) -> bool | None:
    value = el.get(attr)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise _Bad(f"{where}/@{attr}", f"bad value {value!r} (expected true or false)")
    return value == "true"


def _taps(root: ET.Element) -> tuple[Tap, ...]:
    taps = []
    for i, iface in enumerate(root.findall("./devices/interface"), start=1):
        mac_el = iface.find("mac")
        mac = mac_el.get("address") if mac_el is not None else None
        if not mac:
            raise _Bad(f"devices/interface[{i}]/mac/@address", "interface has no MAC address")
        target = iface.find("target")
        source = iface.find("source")
        taps.append(
            Tap(
                mac=mac.lower(),
                dev=target.get("dev") if target is not None else None,
                type=iface.get("type", ""),
                bridge=source.get("bridge") if source is not None else None,
            )
        )
    return tuple(taps)


def _peer(el: ET.Element, where: str) -> dict[str, str]:
    _check_attrs(el, where, _PEER_KINDS)
    _children(el, where, ())
    given = {k: v for k, v in el.attrib.items()}
    if len(given) != 1:
        raise _Bad(where, "expected exactly one of @group, @workload, @selector, @cidr")
    return given


def _rule(el: ET.Element, where: str) -> dict[str, Any]:
    _check_attrs(el, where, _RULE_ATTRS)
    rule: dict[str, Any] = {
        "name": _required(el, where, "name"),
        "action": _required(el, where, "action"),
    }
    if "direction" in el.attrib:
        rule["direction"] = el.attrib["direction"]
    log = _bool(el, where, "log")
    if log is not None:
        rule["log"] = log
    counts = {"from": 0, "to": 0, "service": 0}
    for child in _children(el, where, ("from", "to", "service")):
        kind = child.tag[len(_Q) :]
        counts[kind] += 1
        at = f"{where}/hw:{kind}[{counts[kind]}]"
        if kind == "service":
            _check_attrs(child, at, ())
            rule.setdefault("services", []).append((child.text or "").strip())
        else:
            rule.setdefault(kind, []).append(_peer(child, at))
    return rule


def _policy(el: ET.Element, domain: str, tenant: str | None) -> dict[str, Any]:
    where = "hw:workload/hw:policy"
    _check_attrs(el, where, ("tier", "priority"))
    spec: dict[str, Any] = {"appliedTo": {"workload": domain}}
    if "tier" in el.attrib:
        spec["tier"] = el.attrib["tier"]
    if "priority" in el.attrib:
        text = el.attrib["priority"]
        if not re.fullmatch(r"-?[0-9]+", text.strip()):
            raise _Bad(f"{where}/@priority", f"bad value {text!r} (expected an integer)")
        spec["priority"] = int(text)
    spec["rules"] = [
        _rule(rule, f"{where}/hw:rule[{i}]")
        for i, rule in enumerate(_children(el, where, ("rule",)), start=1)
    ]
    metadata: dict[str, Any] = {"name": policy_name(domain)}
    if tenant is not None:
        metadata["tenant"] = tenant
    return {"apiVersion": API_VERSION, "kind": "Policy", "metadata": metadata, "spec": spec}


def _workload(
    el: ET.Element, domain: str, host: str, taps: tuple[Tap, ...]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    where = "hw:workload"
    _check_attrs(el, where, ("tenant",))
    tenant = el.get("tenant")
    labels: dict[str, str] = {}
    ips_of: dict[str, list[str]] = {}
    policy: dict[str, Any] | None = None
    counts = {"label": 0, "interface": 0}
    for child in _children(el, where, ("label", "interface", "policy")):
        kind = child.tag[len(_Q) :]
        if kind == "policy":
            if policy is not None:
                raise _Bad(f"{where}/hw:policy", "more than one hw:policy element")
            policy = _policy(child, domain, tenant)
            continue
        counts[kind] += 1
        at = f"{where}/hw:{kind}[{counts[kind]}]"
        if kind == "label":
            _check_attrs(child, at, ("key", "value"))
            _children(child, at, ())
            key = _required(child, at, "key")
            if key in labels:
                raise _Bad(f"{at}/@key", f"duplicate label key {key!r}")
            labels[key] = _required(child, at, "value")
        else:
            _check_attrs(child, at, ("mac",))
            mac = _required(child, at, "mac").lower()
            if mac in ips_of:
                raise _Bad(f"{at}/@mac", f"duplicate hw:interface for MAC {mac}")
            if mac not in {t.mac for t in taps}:
                raise _Bad(f"{at}/@mac", f"no devices/interface has MAC {mac}")
            ips_of[mac] = [
                (ip.text or "").strip() for ip in _children(child, at, ("ip",)) if _no_attrs(ip, at)
            ]
    metadata: dict[str, Any] = {"name": domain}
    if tenant is not None:
        metadata["tenant"] = tenant
    if labels:
        metadata["labels"] = labels
    interfaces = [
        {"name": f"eth{i}", "mac": tap.mac, "ips": ips_of.get(tap.mac, [])}
        for i, tap in enumerate(taps)
    ]
    workload = {
        "apiVersion": API_VERSION,
        "kind": "Workload",
        "metadata": metadata,
        "spec": {"host": host, "interfaces": interfaces},
    }
    return workload, policy


def _no_attrs(el: ET.Element, where: str) -> bool:
    _check_attrs(el, f"{where}/hw:ip", ())
    return True


# Document field paths (from validation) -> where that value came from in the domain XML.
_PATHS: tuple[tuple[str, str], ...] = (
    (r"^metadata\.name$", "name"),
    (r"^metadata\.tenant$", "hw:workload/@tenant"),
    (r"^metadata\.labels\.(.+)$", "hw:workload/hw:label[@key='\\1']"),
    (r"^metadata\.labels$", "hw:workload/hw:label"),
    (r"^spec\.host$", "host"),
    (r"^spec\.interfaces$", "devices/interface"),
    (r"^spec\.interfaces\[(\d+)\]\.mac$", "devices/interface[+\\1]/mac/@address"),
    (
        r"^spec\.interfaces\[(\d+)\]\.ips\[(\d+)\]$",
        "hw:workload/hw:interface[@mac='{eth\\1}']/hw:ip[+\\2]",
    ),
    (r"^spec\.tier$", "hw:workload/hw:policy/@tier"),
    (r"^spec\.priority$", "hw:workload/hw:policy/@priority"),
    (r"^spec\.rules\[(\d+)\]\.from\[(\d+)\]\.?(.*)$", "hw:policy/hw:rule[+\\1]/hw:from[+\\2]"),
    (r"^spec\.rules\[(\d+)\]\.to\[(\d+)\]\.?(.*)$", "hw:policy/hw:rule[+\\1]/hw:to[+\\2]"),
    (r"^spec\.rules\[(\d+)\]\.services\[(\d+)\]$", "hw:policy/hw:rule[+\\1]/hw:service[+\\2]"),
    (r"^spec\.rules\[(\d+)\]\.(\w+)$", "hw:policy/hw:rule[+\\1]/@\\2"),
    (r"^spec\.rules\[(\d+)\]$", "hw:policy/hw:rule[+\\1]"),
    (r"^spec\.rules$", "hw:policy"),
)


def _one_based(text: str) -> str:
    """`[+N]` (a 0-based index from a document path) -> `[N+1]` (XPath's 1-based)."""
    return re.sub(r"\[\+(\d+)\]", lambda m: f"[{int(m.group(1)) + 1}]", text)


def xml_location(path: str, kind: str, macs: Sequence[str] = ()) -> str:
    """Where in the domain XML a document field path (from an `Issue`) came from; `macs`:
    the domain's interface MACs in order (`ethN`'s addresses sit under its MAC)."""
    for pattern, replacement in _PATHS:
        m = re.match(pattern, path)
        if m:
            where = _one_based(m.expand(replacement))
            where = re.sub(
                r"\{eth(\d+)\}",
                lambda e: macs[int(e.group(1))] if int(e.group(1)) < len(macs) else "?",
                where,
            )
            if kind == "Policy" and where.startswith("hw:policy"):
                where = "hw:workload/" + where
            if kind == "Policy" and where in ("name", "hw:workload/@tenant"):
                where = "hw:workload/hw:policy" if where == "name" else where
            return where
    prefix = "hw:workload/hw:policy" if kind == "Policy" else "hw:workload"
    return f"{prefix} ({path})" if path else prefix


def problems_of(
    domain: str, issues: Sequence[Issue], kinds: Mapping[int, str], macs: Sequence[str] = ()
) -> list[Problem]:
    """Validation issues of a domain's documents as problems that name the domain's XML."""
    out = []
    for issue in issues:
        kind = kinds.get(issue.source.document, "Workload")
        message = issue.message + (f" (expected {issue.expected})" if issue.expected else "")
        out.append(Problem(domain, xml_location(issue.path, kind, macs), message))
    return out


def parse_domain(xml: str, host: str) -> ParsedDomain:
    """One domain's XML -> Managed, Unmanaged or Invalid (never raises on bad metadata)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        return Invalid("?", "", False, (), (Problem("?", "domain XML", f"not XML: {exc}"),))
    name = (root.findtext("name") or "").strip()
    uuid = (root.findtext("uuid") or "").strip()
    active = root.get("id") not in (None, "-1")
    try:
        taps = _taps(root)
    except _Bad as exc:
        return Invalid(name, uuid, active, (), (Problem(name, exc.where, exc.message),))
    found = root.findall(f"./metadata/{_Q}workload")
    if not found:
        return Unmanaged(name, uuid, active, taps)
    if len(found) > 1:
        problem = Problem(name, "hw:workload", "more than one hw:workload element")
        return Invalid(name, uuid, active, taps, (problem,))
    try:
        workload, policy = _workload(found[0], name, host, taps)
    except _Bad as exc:
        return Invalid(name, uuid, active, taps, (Problem(name, exc.where, exc.message),))
    issues: list[Issue] = []
    kinds = {1: "Workload", 2: "Policy"}
    for number, raw in enumerate([workload] if policy is None else [workload, policy], 1):
        _, found_issues = d.parse_document(raw, source_of(name, number))
        issues.extend(found_issues)
    if issues:
        return Invalid(
            name, uuid, active, taps, tuple(problems_of(name, issues, kinds, [t.mac for t in taps]))
        )
    return Managed(name, uuid, active, taps, workload, policy)


# --- the other direction: documents -> metadata / domain XML ---------------------------


def _peer_xml(parent: ET.Element, tag: str, peer: d.Peer) -> None:
    el = ET.SubElement(parent, _Q + tag)
    for kind in _PEER_KINDS:
        value = getattr(peer, kind)
        if value is not None:
            el.set(kind, value)


def _policy_xml(parent: ET.Element, policy: d.PolicyDoc) -> None:
    spec = policy.spec
    el = ET.SubElement(parent, _Q + "policy", {"tier": spec.tier, "priority": str(spec.priority)})
    for rule in spec.rules:
        attrs = {"name": rule.name, "action": rule.action, "direction": rule.direction}
        attrs["log"] = "true" if rule.log else "false"
        r = ET.SubElement(el, _Q + "rule", attrs)
        for peer in rule.from_:
            _peer_xml(r, "from", peer)
        for peer in rule.to:
            _peer_xml(r, "to", peer)
        for service in rule.services or []:
            ET.SubElement(r, _Q + "service").text = service


def metadata_element(workload: d.WorkloadDoc, policy: d.PolicyDoc | None = None) -> ET.Element:
    attrs = {} if workload.metadata.tenant is None else {"tenant": workload.metadata.tenant}
    root = ET.Element(_Q + "workload", attrs)
    for key, value in workload.metadata.labels.items():
        ET.SubElement(root, _Q + "label", {"key": key, "value": value})
    for iface in workload.spec.interfaces:
        el = ET.SubElement(root, _Q + "interface", {"mac": iface.mac.lower()})
        for ip in iface.ips:
            ET.SubElement(el, _Q + "ip").text = ip
    if policy is not None:
        _policy_xml(root, policy)
    return root


def _unqualified(el: ET.Element) -> ET.Element:
    out = ET.Element(el.tag[len(_Q) :] if el.tag.startswith(_Q) else el.tag, el.attrib)
    out.text = el.text
    out.extend(_unqualified(child) for child in el)
    return out


def metadata_xml(workload: d.WorkloadDoc, policy: d.PolicyDoc | None = None) -> str:
    """The metadata for a Workload (and its embedded Policy) as libvirt's `setMetadata` and
    `virsh metadata DOMAIN --uri https://hyperwall.io/xmlns/workload/1 --key hw --set XML`
    take it: without a namespace (libvirt puts the whole element in the hw namespace)."""
    return ET.tostring(_unqualified(metadata_element(workload, policy)), encoding="unicode")


def domain_xml(
    workload: d.WorkloadDoc,
    policy: d.PolicyDoc | None = None,
    domain_type: str = "test",
    interface_type: str = "ethernet",
    extra_devices: Sequence[ET.Element] = (),
    os_xml: ET.Element | None = None,
    memory_mib: int = 128,
) -> str:
    """A minimal domain for a Workload: its name, metadata and one `<interface>` per declared
    interface (MAC as declared). The lab adds its guests' kernel and devices."""
    ET.register_namespace("hw", NS)
    root = ET.Element("domain", {"type": domain_type})
    ET.SubElement(root, "name").text = workload.metadata.name
    ET.SubElement(root, "memory", {"unit": "MiB"}).text = str(memory_mib)
    ET.SubElement(root, "vcpu").text = "1"
    if os_xml is None:
        os_xml = ET.Element("os")
        ET.SubElement(os_xml, "type").text = "hvm"
    root.append(os_xml)
    ET.SubElement(root, "metadata").append(metadata_element(workload, policy))
    devices = ET.SubElement(root, "devices")
    for iface in workload.spec.interfaces:
        el = ET.SubElement(devices, "interface", {"type": interface_type})
        ET.SubElement(el, "mac", {"address": iface.mac.lower()})
    for dev in extra_devices:
        devices.append(dev)
    return ET.tostring(root, encoding="unicode")
