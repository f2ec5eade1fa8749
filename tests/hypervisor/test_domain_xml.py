"""Domain XML <-> documents: round trips (hypothesis), hand-written metadata, every error
names the domain and the offending element or attribute."""

from __future__ import annotations

import ipaddress

import libvirt
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperwall.hypervisor.domain_xml import (
    NS,
    Invalid,
    Managed,
    Unmanaged,
    domain_xml,
    metadata_xml,
    parse_domain,
)
from hyperwall.policy.documents import PolicyDoc, WorkloadDoc

NAME = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
LABEL_KEY = st.from_regex(r"[A-Za-z0-9_.-][A-Za-z0-9_./-]{0,15}", fullmatch=True).filter(
    lambda k: not k.startswith("hyperwall.io/")
)
LABEL_VALUE = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
    max_size=20,
)
MAC = (
    st.lists(st.integers(0, 255), min_size=6, max_size=6)
    .map(lambda b: [b[0] & 0xFE, *b[1:]])
    .map(lambda b: ":".join(f"{x:02x}" for x in b))
)
IP4 = st.integers(1, 2**32 - 2).map(lambda i: str(ipaddress.IPv4Address(i)))
IP6 = st.integers(1, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i)))


@st.composite
def workloads(draw: st.DrawFn) -> WorkloadDoc:
    macs = draw(st.lists(MAC, min_size=1, max_size=3, unique=True))
    interfaces = [
        {"name": f"eth{i}", "mac": mac, "ips": draw(st.lists(IP4 | IP6, max_size=3, unique=True))}
        for i, mac in enumerate(macs)
    ]
    metadata: dict[str, object] = {"name": draw(NAME)}
    tenant = draw(st.none() | NAME)
    if tenant is not None:
        metadata["tenant"] = tenant
    labels = draw(st.dictionaries(LABEL_KEY, LABEL_VALUE, max_size=4))
    if labels:
        metadata["labels"] = labels
    return WorkloadDoc.model_validate(
        {
            "apiVersion": "hyperwall.io/v1",
            "kind": "Workload",
            "metadata": metadata,
            "spec": {"host": "hv1", "interfaces": interfaces},
        }
    )


PEER = st.one_of(
    NAME.map(lambda n: {"group": n}),
    NAME.map(lambda n: {"workload": n}),
    st.just({"selector": 'role == "web"'}),
    st.just({"cidr": "192.0.2.0/24"}),
)
RULE = st.fixed_dictionaries(
    {
        "action": st.sampled_from(["allow", "drop", "reject", "pass"]),
        "direction": st.sampled_from(["in", "out", "both"]),
        "from": st.lists(PEER, max_size=2),
        "to": st.lists(PEER, max_size=2),
        "services": st.none()
        | st.lists(st.sampled_from(["tcp/22", "udp/53", "https"]), min_size=1, max_size=2),
        "log": st.booleans(),
    }
)


def embedded_policy(workload: WorkloadDoc, rules: list[dict[str, object]], tier: str, prio: int):
    meta: dict[str, object] = {"name": f"vm-{workload.metadata.name}"}
    if workload.metadata.tenant:
        meta["tenant"] = workload.metadata.tenant
    named = []
    for i, rule in enumerate(rules):
        r = {k: v for k, v in rule.items() if v is not None}
        named.append({"name": f"r{i}", **r})
    return PolicyDoc.model_validate(
        {
            "apiVersion": "hyperwall.io/v1",
            "kind": "Policy",
            "metadata": meta,
            "spec": {
                "tier": tier,
                "priority": prio,
                "appliedTo": {"workload": workload.metadata.name},
                "rules": named,
            },
        }
    )


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_workload_round_trips_through_domain_xml(workload: WorkloadDoc) -> None:
    parsed = parse_domain(domain_xml(workload), "hv1")
    assert isinstance(parsed, Managed), parsed
    assert WorkloadDoc.model_validate(parsed.workload) == workload
    assert parsed.policy is None


@settings(max_examples=100, deadline=None)
@given(
    workloads(),
    st.lists(RULE, max_size=3),
    st.sampled_from(["emergency", "infrastructure", "environment", "application"]),
    st.integers(0, 2**31 - 1),
)
def test_embedded_policy_round_trips(workload, rules, tier, prio) -> None:
    policy = embedded_policy(workload, rules, tier, prio)
    parsed = parse_domain(domain_xml(workload, policy), "hv1")
    assert isinstance(parsed, Managed), parsed
    assert WorkloadDoc.model_validate(parsed.workload) == workload
    assert parsed.policy is not None
    assert PolicyDoc.model_validate(parsed.policy) == policy


HAND_WRITTEN = """<domain type='kvm' id='3'>
  <name>web-1</name>
  <uuid>c7a5fdbd-cdaf-9455-926a-d65c16db1809</uuid>
  <metadata>
    <hw:workload xmlns:hw="https://hyperwall.io/xmlns/workload/1" tenant="acme">
      <hw:label key="role" value="web"/>
      <hw:label key="app" value="shop"/>
      <hw:interface mac="52:54:00:AA:00:01">
        <hw:ip>10.1.0.21</hw:ip>
        <hw:ip>fd00:1::21</hw:ip>
      </hw:interface>
      HW_POLICY
    </hw:workload>
  </metadata>
  <devices>
    <interface type='ethernet'>
      <mac address='52:54:00:aa:00:01'/>
      <target dev='vnet0'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:aa:00:02'/>
      <source bridge='br0'/>
      <target dev='vnet1'/>
    </interface>
  </devices>
</domain>"""

POLICY = """<hw:policy tier="application" priority="500">
  <hw:rule name="ssh-from-admins" action="allow" direction="in" log="true">
    <hw:from group="admins"/>
    <hw:from cidr="192.0.2.0/24"/>
    <hw:service>tcp/22</hw:service>
  </hw:rule>
</hw:policy>"""


def hand(policy: str = "", **swap: str) -> str:
    text = HAND_WRITTEN.replace("HW_POLICY", policy)
    for old, new in swap.items():
        text = text.replace(old.replace("_", " ") if " " in old else old, new)
    return text


def test_hand_written_metadata_is_enough() -> None:
    parsed = parse_domain(hand(POLICY), "hv2")
    assert isinstance(parsed, Managed)
    assert parsed.active and parsed.uuid.startswith("c7a5")
    assert parsed.workload == {
        "apiVersion": "hyperwall.io/v1",
        "kind": "Workload",
        "metadata": {"name": "web-1", "tenant": "acme", "labels": {"role": "web", "app": "shop"}},
        "spec": {
            "host": "hv2",
            "interfaces": [
                # MACs compare case-insensitively and come out in lower case
                {"name": "eth0", "mac": "52:54:00:aa:00:01", "ips": ["10.1.0.21", "fd00:1::21"]},
                {"name": "eth1", "mac": "52:54:00:aa:00:02", "ips": []},
            ],
        },
    }
    assert parsed.policy == {
        "apiVersion": "hyperwall.io/v1",
        "kind": "Policy",
        "metadata": {"name": "vm-web-1", "tenant": "acme"},
        "spec": {
            "appliedTo": {"workload": "web-1"},
            "tier": "application",
            "priority": 500,
            "rules": [
                {
                    "name": "ssh-from-admins",
                    "action": "allow",
                    "direction": "in",
                    "log": True,
                    "from": [{"group": "admins"}, {"cidr": "192.0.2.0/24"}],
                    "services": ["tcp/22"],
                }
            ],
        },
    }
    assert [(t.mac, t.dev, t.type, t.bridge) for t in parsed.taps] == [
        ("52:54:00:aa:00:01", "vnet0", "ethernet", None),
        ("52:54:00:aa:00:02", "vnet1", "bridge", "br0"),
    ]


def test_metadata_xml_is_what_libvirt_set_metadata_takes() -> None:
    """libvirt puts the element written without a namespace (as an operator types it for
    `virsh metadata --set`) into the hw namespace, children included."""
    parsed = parse_domain(hand(POLICY), "hv1")
    assert isinstance(parsed, Managed)
    workload = WorkloadDoc.model_validate(parsed.workload)
    policy = PolicyDoc.model_validate(parsed.policy)
    text = metadata_xml(workload, policy)
    assert text.startswith('<workload tenant="acme"><label key="role" value="web" />')
    bare = workload.model_copy(
        update={"metadata": workload.metadata.model_copy(update={"labels": {}})}
    )
    conn = libvirt.open("test:///default")
    dom = conn.defineXML(domain_xml(bare))
    try:
        before = parse_domain(dom.XMLDesc(0), "hv1")
        assert isinstance(before, Managed) and "labels" not in before.workload["metadata"]
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, text, "hw", NS, 0)
        again = parse_domain(dom.XMLDesc(0), "hv1")
        assert isinstance(again, Managed)
        assert (again.workload, again.policy) == (parsed.workload, parsed.policy)
    finally:
        dom.undefine()
        conn.close()


def test_no_metadata_is_unmanaged() -> None:
    text = "<domain type='kvm'><name>plain</name><devices><interface type='ethernet'>"
    text += "<mac address='52:54:00:00:00:09'/><target dev='vnet4'/></interface></devices></domain>"
    parsed = parse_domain(text, "hv1")
    assert isinstance(parsed, Unmanaged)
    assert parsed.taps[0].dev == "vnet4"


def problems(text: str) -> list[str]:
    parsed = parse_domain(text, "hv1")
    assert isinstance(parsed, Invalid), parsed
    assert all(p.domain == "web-1" for p in parsed.problems)
    return [f"{p.where}: {p.message}" for p in parsed.problems]


def test_errors_name_the_offending_attribute() -> None:
    assert problems(hand().replace('key="role"', 'key="ro le"')) == [
        "hw:workload/hw:label[@key='ro le']: bad label key 'ro le': expected"
        " [A-Za-z0-9_./-]+, at most 253 characters"
    ]
    assert problems(hand().replace("10.1.0.21", "10.1.0.300")) == [
        "hw:workload/hw:interface[@mac='52:54:00:aa:00:01']/hw:ip[1]: bad IP address "
        "'10.1.0.300': expected an IPv4 or IPv6 address without prefix"
    ]
    assert problems(hand().replace('tenant="acme"', 'tenant="Acme"'))[0].startswith(
        "hw:workload/@tenant: bad name 'Acme'"
    )
    assert problems(hand().replace('value="web"', ""))[0] == (
        "hw:workload/hw:label[1]/@value: required attribute is missing"
    )
    assert problems(hand().replace('<hw:label key="app"', '<hw:label colour="x" key="app"')) == [
        "hw:workload/hw:label[2]/@colour: unknown attribute (expected one of key, value)"
    ]
    assert problems(hand().replace('mac="52:54:00:AA:00:01"', 'mac="52:54:00:00:00:77"')) == [
        "hw:workload/hw:interface[1]/@mac: no devices/interface has MAC 52:54:00:00:00:77"
    ]
    assert problems(hand().replace("<hw:label", "<hw:tag", 1).replace("/>", "/>", 1)) == [
        "hw:workload/hw:tag: unknown element"
    ]


def test_embedded_policy_errors_make_the_domain_invalid() -> None:
    bad_action = POLICY.replace('action="allow"', 'action="permit"')
    assert problems(hand(bad_action)) == [
        "hw:workload/hw:policy/hw:rule[1]/@action: bad value 'permit' "
        "(expected 'allow', 'drop', 'reject' or 'pass')"
    ]
    assert problems(hand(POLICY.replace('priority="500"', 'priority="high"'))) == [
        "hw:workload/hw:policy/@priority: bad value 'high' (expected an integer)"
    ]
    assert problems(hand(POLICY.replace('log="true"', 'log="yes"'))) == [
        "hw:workload/hw:policy/hw:rule[1]/@log: bad value 'yes' (expected true or false)"
    ]
    assert problems(
        hand(POLICY.replace('<hw:from group="admins"/>', '<hw:from group="a" cidr="10.0.0.0/8"/>'))
    ) == [
        "hw:workload/hw:policy/hw:rule[1]/hw:from[1]: expected exactly one of @group, @workload,"
        " @selector, @cidr"
    ]
    assert problems(hand(POLICY.replace("tcp/22", "tcp/99999")))[0].startswith(
        "hw:workload/hw:policy/hw:rule[1]/hw:service[1]: "
    )


def test_bad_domain_name_and_missing_mac() -> None:
    bad = hand().replace("<name>web-1</name>", "<name>Web_1</name>")
    parsed = parse_domain(bad, "hv1")
    assert isinstance(parsed, Invalid)
    assert [p.where for p in parsed.problems] == ["name"]
    no_mac = hand().replace("<mac address='52:54:00:aa:00:02'/>", "")
    parsed = parse_domain(no_mac, "hv1")
    assert isinstance(parsed, Invalid)
    assert [p.where for p in parsed.problems] == ["devices/interface[2]/mac/@address"]
