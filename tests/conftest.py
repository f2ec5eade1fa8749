"""Shared fixtures: a throwaway network namespace per test (always removed) and an nftables
context bound to it, for the kernel tests of the data plane and the agent."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator

import pytest

from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nft.kernel import NftKernel

_counter = itertools.count()
# Namespaces are named with this prefix (several runs on one machine keep apart by it).
PREFIX = os.environ.get("HW_TEST_NETNS_PREFIX", "hwx-")


# Test files that boot QEMU guests: one pytest-xdist worker runs them one after the other,
# so two guest labs never share the machine's two cores (TCG guests are CPU-bound).
_GUEST_FILES = ("test_guest", "test_demo.py")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on a throwaway namespace (`netns`, or `nft` bound to one) is a `kernel` test.

    Every test is grouped by its file for `pytest -n 2 --dist loadgroup` (module-scoped labs
    are built once), the guest files in one group."""
    for item in items:
        if "netns" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kernel)
        group = "guests" if item.path.name.startswith(_GUEST_FILES) else str(item.path)
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace")
    name = f"{PREFIX}{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def nft(netns: str) -> NftKernel:
    with inside(netns):
        return NftKernel()
