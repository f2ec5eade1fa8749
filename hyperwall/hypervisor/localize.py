"""A host's program bound to the taps its hypervisor made (pure).

The compiled program names each VM interface by workload and MAC; the host-side device is
a fact of this host only (libvirt names taps itself: `vnet0`, ...; a restart may give
another name). `localize` keeps the endpoints whose domain runs here with a tap, and sets
each one's `ifname` to that tap. An endpoint without a running domain behind it is left
out: nothing to dispatch to; its addresses stay in every group it belongs to. A tap with
no endpoint matches no dispatch entry and fails closed in the kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from hyperwall.compiler.program import HostProgram


def _name_of(workload_key: str) -> str:
    return workload_key.rsplit("/", 1)[-1]


def localize(program: HostProgram, taps: Mapping[str, tuple[str, str]]) -> HostProgram:
    """`taps`: MAC (lower case) -> (domain name, tap device) of the running domains."""
    endpoints = {}
    for key, ep in program.endpoints.items():
        found = taps.get(ep.mac.lower())
        if found is None or found[0] != _name_of(ep.workload):
            continue
        endpoints[key] = ep if ep.ifname == found[1] else replace(ep, ifname=found[1])
    if endpoints == dict(program.endpoints):
        return program
    return replace(program, endpoints=endpoints)
