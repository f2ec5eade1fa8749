"""The flow shipper against a live manager (in a thread, on a SQLite store): batches are
stored once, a manager that is away keeps the records in the agent's files and gets them
all after it returns, a crash between the manager's commit and the agent's cursor save
repeats nothing, records the manager would refuse are skipped and counted."""

from __future__ import annotations

import json
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperwall.agent.flow_shipper import CURSOR_FILE, FlowShipper, ShipError
from hyperwall.agent.manager_source import Client
from hyperwall.flows.filter import us_time
from tests.manager.conftest import Live, start_server
from tests.manager.support import call

T0 = 1_796_000_000_000_000


def append(path: Path, first: int, count: int, **extra: Any) -> None:
    with open(path, "a") as f:
        for n in range(first, first + count):
            record = {
                "time": us_time(T0 + n),
                "host": "hv1",
                "workload": "acme/db-1",
                "action": "drop",
                "rule": "acme/p/r",
                "n": n,
                **extra,
            }
            f.write(json.dumps(record) + "\n")


class Manager:
    """A manager that can be stopped and started again on the same store."""

    def __init__(self, base: Path) -> None:
        self.url = f"sqlite:///{base / 'store.db'}"
        self.token_file = base / "admin.token"
        self.admin: str | None = None
        self.run: Generator[Live, None, None] | None = None
        self.live: Live | None = None

    def start(self) -> Live:
        self.run = start_server(self.url, self.token_file, self.admin)
        self.live = next(self.run)
        self.admin = self.live.admin
        return self.live

    def stop(self) -> None:
        assert self.run is not None
        self.run.close()
        self.run = self.live = None


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    m = Manager(tmp_path)
    m.start()
    yield m
    if m.run is not None:
        m.stop()


def stored(live: Live) -> list[int]:
    answer = call(live.url, live.admin, "GET", "/v1/flows", limit=10_000)
    assert answer.status_code == 200, answer.text
    return sorted(r["n"] for r in answer.json()["records"])


def shipper(live: Live, state: Path, log: Path, url: str | None = None) -> FlowShipper:
    token = call(live.url, live.admin, "POST", "/v1/tokens", {"role": "agent", "host": "hv1"})
    client = Client(url or live.url, token.json()["token"], "hv1")
    state.mkdir(exist_ok=True)
    return FlowShipper(client, "hv1", log, state, max_backoff=0.2)


def ship_all(s: FlowShipper) -> None:
    while s.step():
        pass


def test_manager_away_then_back_gets_every_record_once(manager: Manager, tmp_path: Path) -> None:
    live = manager.live
    assert live is not None
    log = tmp_path / "flows.jsonl"
    s = shipper(live, tmp_path / "state", log)
    append(log, 0, 1500)  # more than a batch
    ship_all(s)
    assert stored(live) == list(range(1500)) and s.counts.batches == 2
    manager.stop()
    append(log, 1500, 700)  # the agent keeps logging while the manager is away
    with pytest.raises(ShipError):
        s.step()
    assert s.counts.shipped == 1500
    live = manager.start()
    s.client = Client(live.url, s.client.token, "hv1")  # a new port: same store, same token
    ship_all(s)
    assert stored(live) == list(range(2200))
    assert s.counts.shipped == 2200


def test_a_crash_before_the_cursor_save_repeats_nothing(manager: Manager, tmp_path: Path) -> None:
    live = manager.live
    assert live is not None
    log = tmp_path / "flows.jsonl"
    state = tmp_path / "state"
    s = shipper(live, state, log)
    append(log, 0, 10)
    ship_all(s)
    saved = tmp_path / "saved-cursor"
    shutil.copy(state / CURSOR_FILE, saved)
    append(log, 10, 10)
    ship_all(s)
    shutil.copy(saved, state / CURSOR_FILE)  # as if the agent died before saving
    append(log, 20, 5)  # and more arrived meanwhile: the replayed batch is longer
    again = FlowShipper(s.client, "hv1", log, state)
    ship_all(again)
    assert stored(live) == list(range(25))
    assert again.counts.shipped == 5


def test_records_the_manager_would_refuse_are_skipped(manager: Manager, tmp_path: Path) -> None:
    live = manager.live
    assert live is not None
    log = tmp_path / "flows.jsonl"
    s = shipper(live, tmp_path / "state", log)
    append(log, 0, 2)
    append(log, 2, 1, time="noon")
    append(log, 3, 1, host="hv2")
    with open(log, "a") as f:
        f.write("torn{\n")
    append(log, 4, 1)
    ship_all(s)
    assert stored(live) == [0, 1, 4]
    assert s.counts.rejected == 2 and s.tailer.unreadable == 1
