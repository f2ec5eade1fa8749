"""Probe resolution matches `hyperwall trace` exactly: `lab.resolve`."""

from __future__ import annotations

import pytest

from hyperwall.analysis.trace import trace
from hyperwall.io.files import load_catalog
from hyperwall.lab.errors import LabInputError
from hyperwall.lab.resolve import resolve_probe
from hyperwall.policy.model import Catalog
from hyperwall.policy.ports import PROTO_NUMBERS

from .conftest import EXAMPLES, probe_rows


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog([EXAMPLES])


EXTRA = [
    ("fd00:1::5", "web-2", "ping"),
    ("jump-1", "web-2", "ping"),
    ("fd00:1::21", "dns-1", "dns"),
]


@pytest.mark.parametrize(("src", "dst", "service"), [r[:3] for r in probe_rows()] + EXTRA)
def test_same_addresses_and_port_as_trace(
    catalog: Catalog, src: str, dst: str, service: str
) -> None:
    target = resolve_probe(catalog, src, dst, service)
    packet = trace(catalog, src, dst, service).packet
    assert (target.source.address, target.destination.address) == (packet.src, packet.dst)
    assert (target.port, PROTO_NUMBERS[target.proto]) == (packet.dport, packet.proto)


def test_concrete_services(catalog: Catalog) -> None:
    assert resolve_probe(catalog, "web-1", "app-1", "app-api").service == "tcp/8000"
    assert resolve_probe(catalog, "web-1", "dns-1", "dns").service == "udp/53"
    ping = resolve_probe(catalog, "jump-1", "web-2", "ping")
    assert (ping.proto, ping.port, ping.service) == ("icmp", 8, "icmp/echo-request")
    v6 = resolve_probe(catalog, "fd00:1::5", "web-2", "icmpv6/echo-request")
    assert (v6.destination.address, v6.port) == ("fd00:1::22", 128)
    external = resolve_probe(catalog, "198.51.100.7", "lb-1", "https")
    assert external.source.workload is None and external.destination.address == "10.1.0.10"


@pytest.mark.parametrize(
    ("src", "dst", "service"),
    [
        ("web-1", "web-1", "tcp/80"),  # never leaves the VM
        ("198.51.100.7", "192.0.2.1", "tcp/80"),  # neither end in the lab
        ("web-1", "db-1", "sctp/9"),
        ("web-1", "db-1", "any"),
        ("web-1", "db-1", "icmp/destination-unreachable"),
        ("fd00:1::21", "db-1", "icmp/echo-request"),
        ("web-1", "fd00:1::41", "tcp/1"),
        ("nobody", "db-1", "tcp/1"),
        ("web-1", "db-1", "no-such-service"),
    ],
)
def test_what_the_lab_cannot_send(catalog: Catalog, src: str, dst: str, service: str) -> None:
    with pytest.raises(LabInputError):
        resolve_probe(catalog, src, dst, service)
