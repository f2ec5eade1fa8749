"""Store URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperwall.store import open_store
from hyperwall.store.etcd import EtcdStore
from hyperwall.store.sqlite import SqliteStore
from tests.store.conftest import UrlFactory
from tests.store.support import run


def test_sqlite_paths_relative_and_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    async def main() -> None:
        for url in ("sqlite:///rel.db", f"sqlite:///{tmp_path}/abs.db?poll=1"):
            store = await open_store(url)
            assert isinstance(store, SqliteStore)
            await store.close()

    run(main())
    assert (tmp_path / "rel.db").exists() and (tmp_path / "abs.db").exists()


def test_etcd_url_with_prefix(etcd_url: UrlFactory) -> None:
    async def main() -> None:
        store = await open_store(etcd_url() + "?timeout=5&max_txn_ops=64")
        assert isinstance(store, EtcdStore)
        await store.close()

    run(main())


@pytest.mark.parametrize(
    "url",
    ["postgres://x", "sqlite:///", "sqlite:///x.db?bogus=1", "etcd://host", "etcd://h:1/?x=1"],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        run(open_store(url))
