"""Throwaway namespaces for the conntrack kernel tests: named `hwct-*`, veths `hwct*`,
always removed (a namespace's veths go with it)."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

_counter = itertools.count()


def sh(ns: str, *cmd: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True, text=True
    ).stdout


def nft(ns: str, script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, check=True, text=True
    )


@contextmanager
def namespaces(*roles: str) -> Iterator[dict[str, str]]:
    """A namespace per role, `hwct-<pid>-<n>-<role>`, with lo up and rp_filter off."""
    tag = f"{os.getpid() % 100000}-{next(_counter)}"
    names = {role: f"hwct-{tag}-{role}" for role in roles}
    made: list[str] = []
    try:
        for name in names.values():
            subprocess.run(["ip", "netns", "add", name], check=True)
            made.append(name)
            sh(name, "ip", "link", "set", "lo", "up")
            sh(name, "sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0")
            sh(name, "sysctl", "-q", "-w", "net.ipv4.conf.default.rp_filter=0")
        yield names
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False)


def link(a: str, a_addr: str, b: str, b_addr: str) -> tuple[str, str]:
    """A veth between namespaces a and b with addresses (CIDR); returns the two names."""
    n = next(_counter)
    ea, eb = f"hwct{os.getpid() % 10000}a{n}", f"hwct{os.getpid() % 10000}b{n}"
    subprocess.run(
        ["ip", "link", "add", ea, "netns", a, "type", "veth", "peer", "name", eb, "netns", b],
        check=True,
    )
    for ns, dev, addr in ((a, ea, a_addr), (b, eb, b_addr)):
        sh(ns, "ip", "addr", "add", addr, "dev", dev)
        sh(ns, "ip", "link", "set", dev, "up")
    return ea, eb
