"""A throwaway namespace with an nftables context bound to it, named with engineer E's
prefix (`hwe-<pid>-<n>`) and always removed: for the hit counter tests' `nft` fixtures."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from collections.abc import Iterator

import pytest

from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nft.kernel import NftKernel

_counter = itertools.count()


@contextlib.contextmanager
def nft_in_namespace() -> Iterator[NftKernel]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace")
    name = f"hwe-{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with inside(name):
            kernel = NftKernel()
        yield kernel
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
