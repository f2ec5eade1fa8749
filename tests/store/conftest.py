"""Store fixtures: the same tests run on a SQLite file and on a real etcd server.

`new_url` yields a factory of fresh store URLs: a new file in tmp_path for SQLite, a new key
prefix on the session's etcd server (started on first use, killed at the end) for etcd.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.store.etcd_server import EtcdProcess

UrlFactory = Callable[[], str]


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    try:
        server = EtcdProcess.start(tmp_path_factory.mktemp("etcd"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


def sqlite_urls(base: Path, poll: float = 0.05) -> UrlFactory:
    counter = itertools.count()
    return lambda: f"sqlite:///{base}/store-{next(counter)}.db?poll={poll}"


def etcd_urls(server: EtcdProcess) -> UrlFactory:
    return lambda: f"etcd://{server.host}:{server.port}/hw-test/{uuid.uuid4().hex}"


@pytest.fixture(params=["sqlite", "etcd"])
def new_url(request: pytest.FixtureRequest, tmp_path: Path) -> UrlFactory:
    """A factory of URLs of fresh, empty stores of one backend."""
    if request.param == "sqlite":
        return sqlite_urls(tmp_path)
    return etcd_urls(request.getfixturevalue("etcd_server"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> UrlFactory:
    return sqlite_urls(tmp_path)


@pytest.fixture
def etcd_url(etcd_server: EtcdProcess) -> UrlFactory:
    return etcd_urls(etcd_server)
