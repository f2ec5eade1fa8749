"""Shared fixtures: a throwaway network namespace per test (always removed) and an nftables
context bound to it, for the kernel tests of the data plane and the agent."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nft.kernel import NftKernel

_counter = itertools.count()
# Namespaces are named with this prefix (several runs on one machine keep apart by it).
PREFIX = os.environ.get("HW_TEST_NETNS_PREFIX", "hwx-")


# Test files that boot QEMU guests: one pytest-xdist worker runs them one after the other,
# so two guest labs never share the machine's two cores (TCG guests are CPU-bound).
_GUEST_FILES = ("test_guest", "test_demo.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on a throwaway namespace (`netns`, or `nft` bound to one) is a `kernel` test."""
    for item in items:
        if "netns" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kernel)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`pytest -n 2` (scripts/test): each test file goes whole to one worker, so a
    module-scoped lab is built once; the guest files go together to one worker.

    (xdist's own `--dist loadgroup` renames node ids through an attribute that pytest 9 no
    longer reads, so the grouping is done here, by file.)"""
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "guests" if Path(path).name.startswith(_GUEST_FILES) else path

    return FileScheduling(config, log)


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
