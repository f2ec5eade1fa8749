"""Shared fixtures: a throwaway network namespace per test (always removed) and an nftables
context bound to it, for the kernel tests of the data plane and the agent."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator

import pytest

from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nft.client import NftClient

_counter = itertools.count()
# Namespaces are named with this prefix (several runs on one machine keep apart by it).
PREFIX = os.environ.get("HW_TEST_NETNS_PREFIX", "hwx-")


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"{PREFIX}{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def nft(netns: str) -> NftClient:
    with inside(netns):
        return NftClient()
