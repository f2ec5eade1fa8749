"""Tests for `hyperwall.policy.ports`: parsing service port forms and printing them back.

Every form of docs/policy.md's Service table (`tcp/443`, `tcp/8000-8080`, `udp`,
`icmp/echo-request`, `icmp/8`, `icmpv6`, `any`) must survive `parse_port_spec` -> `str` ->
`parse_port_spec`, and every malformed form must be refused with a message that says what was
expected.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperwall.policy.ports import (
    ANY,
    ICMP_TYPES,
    ICMPV6_TYPES,
    KEYWORDS,
    PortMatch,
    PortSpecError,
    is_inline,
    parse_port_spec,
)

# --- parse and print: every form -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match", "canonical"),
    [
        ("tcp/443", PortMatch("tcp", 443, 443, False), "tcp/443"),
        ("udp/53", PortMatch("udp", 53, 53, False), "udp/53"),
        ("sctp/3868", PortMatch("sctp", 3868, 3868, False), "sctp/3868"),
        ("tcp/1", PortMatch("tcp", 1, 1, False), "tcp/1"),
        ("tcp/65535", PortMatch("tcp", 65535, 65535, False), "tcp/65535"),
        ("tcp/8000-8080", PortMatch("tcp", 8000, 8080, False), "tcp/8000-8080"),
        ("udp/1-65535", PortMatch("udp", 1, 65535, False), "udp/1-65535"),
        ("tcp/80-80", PortMatch("tcp", 80, 80, False), "tcp/80"),
        ("tcp", PortMatch("tcp"), "tcp"),
        ("udp", PortMatch("udp"), "udp"),
        ("sctp", PortMatch("sctp"), "sctp"),
        ("icmp", PortMatch("icmp"), "icmp"),
        ("icmpv6", PortMatch("icmpv6"), "icmpv6"),
        ("any", ANY, "any"),
        ("icmp/echo-request", PortMatch("icmp", 8, 8, False), "icmp/echo-request"),
        ("icmp/8", PortMatch("icmp", 8, 8, False), "icmp/echo-request"),
        ("icmp/0", PortMatch("icmp", 0, 0, False), "icmp/echo-reply"),
        ("icmp/200", PortMatch("icmp", 200, 200, False), "icmp/200"),
        ("icmp/255", PortMatch("icmp", 255, 255, False), "icmp/255"),
        ("icmpv6/echo-request", PortMatch("icmpv6", 128, 128, False), "icmpv6/echo-request"),
        ("icmpv6/128", PortMatch("icmpv6", 128, 128, False), "icmpv6/echo-request"),
        ("icmpv6/packet-too-big", PortMatch("icmpv6", 2, 2, False), "icmpv6/packet-too-big"),
        ("icmpv6/0", PortMatch("icmpv6", 0, 0, False), "icmpv6/0"),
    ],
)
def test_parse_and_print(text: str, match: PortMatch, canonical: str) -> None:
    parsed = parse_port_spec(text)
    assert parsed == match
    assert str(parsed) == canonical
    assert parse_port_spec(str(parsed)) == parsed


@pytest.mark.parametrize(("name", "number"), sorted(ICMP_TYPES.items()))
def test_every_icmp_type_name_round_trips(name: str, number: int) -> None:
    parsed = parse_port_spec(f"icmp/{name}")
    assert (parsed.low, parsed.high) == (number, number)
    assert str(parsed) == f"icmp/{name}"
    assert parse_port_spec(f"icmp/{number}") == parsed


@pytest.mark.parametrize(("name", "number"), sorted(ICMPV6_TYPES.items()))
def test_every_icmpv6_type_name_round_trips(name: str, number: int) -> None:
    parsed = parse_port_spec(f"icmpv6/{name}")
    assert (parsed.low, parsed.high) == (number, number)
    assert str(parsed) == f"icmpv6/{name}"
    assert parse_port_spec(f"icmpv6/{number}") == parsed


def test_icmp_and_icmpv6_type_names_are_per_family() -> None:
    # echo-request is 8 for ICMP and 128 for ICMPv6; the same name maps per protocol
    assert parse_port_spec("icmp/echo-request").low == 8
    assert parse_port_spec("icmpv6/echo-request").low == 128
    assert parse_port_spec("icmp/destination-unreachable").low == 3
    assert parse_port_spec("icmpv6/destination-unreachable").low == 1


port_matches = st.one_of(
    st.builds(
        lambda proto, a, b: PortMatch(proto, min(a, b), max(a, b), False),
        st.sampled_from(["tcp", "udp", "sctp"]),
        st.integers(1, 65535),
        st.integers(1, 65535),
    ),
    st.builds(
        lambda proto, t: PortMatch(proto, t, t, False),
        st.sampled_from(["icmp", "icmpv6"]),
        st.integers(0, 255),
    ),
    st.builds(PortMatch, st.sampled_from(["tcp", "udp", "sctp", "icmp", "icmpv6", "any"])),
)


@given(port_matches)
def test_str_then_parse_is_identity(match: PortMatch) -> None:
    assert parse_port_spec(str(match)) == match


# --- malformed forms -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("tcp/0", ["0", "out of range", "1-65535"]),
        ("tcp/70000", ["70000", "out of range", "1-65535"]),
        ("udp/65536", ["65536", "1-65535"]),
        ("tcp/10-5", ["10-5", "empty", "LOW-HIGH"]),
        ("tcp/0-80", ["0", "1-65535"]),
        ("tcp/80-70000", ["70000", "1-65535"]),
        ("tcp/http", ["'http'", "a number 1-65535"]),
        ("tcp/-5", ["1-65535"]),
        ("tcp/80-", ["1-65535"]),
        ("tcp/ 80", ["1-65535"]),
        ("tcp/", ["missing port"]),
        ("foo/1", ["unknown protocol 'foo'", "tcp, udp, sctp, icmp, icmpv6 or any"]),
        ("any/80", ["unknown protocol 'any'"]),
        ("TCP/80", ["unknown protocol 'TCP'"]),
        ("http", ["unknown protocol 'http'"]),
        ("", ["unknown protocol ''"]),
        ("icmp/bogus", ["unknown icmp type 'bogus'", "0-255", "echo-request"]),
        ("icmp/256", ["'256'", "0-255"]),
        ("icmp/999", ["'999'", "0-255"]),
        ("icmpv6/bogus", ["unknown icmpv6 type", "nd-neighbor-solicit"]),
        ("icmpv6/router-advertisement", ["unknown icmpv6 type"]),  # that name is ICMPv4's
        ("icmp/", ["missing port or type"]),
    ],
)
def test_malformed_forms_are_refused(text: str, fragments: list[str]) -> None:
    with pytest.raises(PortSpecError) as info:
        parse_port_spec(text)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert "expected" in str(info.value) or "missing" in str(info.value)


def test_port_spec_error_is_a_value_error() -> None:
    # pydantic validators turn ValueErrors into validation issues
    assert issubclass(PortSpecError, ValueError)


# --- inline form or Service name --------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["tcp/443", "icmp/echo-request", "foo/1", "tcp/", *sorted(KEYWORDS)]
)
def test_inline_forms(text: str) -> None:
    assert is_inline(text)


@pytest.mark.parametrize("text", ["https", "app-api", "tcp-alt", "icmp6", "anything"])
def test_service_names_are_not_inline(text: str) -> None:
    assert not is_inline(text)


def test_defaults_of_a_whole_protocol() -> None:
    assert PortMatch("tcp") == PortMatch("tcp", 0, 65535, True)
    assert ANY.proto == "any"
    assert ANY.any_value
