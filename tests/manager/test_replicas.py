"""Several managers on one store, concurrent writers, and the host state rules."""

from __future__ import annotations

import threading
from pathlib import Path

from hyperwall.manager.service import UNREACHABLE_AFTER, host_state
from tests.manager.conftest import example_documents, start_server
from tests.manager.support import call, group
from tests.store.conftest import UrlFactory


def test_a_commit_on_one_manager_wakes_long_polls_on_another(
    new_url: UrlFactory, tmp_path: Path
) -> None:
    url = new_url()
    first = start_server(url, tmp_path / "a.token")
    a = next(first)
    second = start_server(url, tmp_path / "b.token", admin=a.admin)
    b = next(second)
    try:
        assert not (tmp_path / "b.token").exists()  # the store had tokens already
        answer: dict[str, int] = {}

        def poll() -> None:
            r = call(b.url, b.admin, "GET", "/v1/agent/hv1/desired", after=0, wait=30)
            answer["status"] = r.status_code
            answer["revision"] = r.json()["revision"] if r.status_code == 200 else -1

        thread = threading.Thread(target=poll)
        thread.start()
        r = call(a.url, a.admin, "POST", "/v1/apply", {"documents": example_documents()})
        assert r.status_code == 200
        thread.join(40)
        assert answer == {"status": 200, "revision": 1}
    finally:
        second.close()
        first.close()


def test_concurrent_applies_all_land(new_url: UrlFactory, tmp_path: Path) -> None:
    server = start_server(new_url(), tmp_path / "a.token")
    live = next(server)
    try:
        call(live.url, live.admin, "POST", "/v1/apply", {"documents": example_documents()})
        codes: list[int] = []

        def write(i: int) -> None:
            body = {"documents": [group(f"g{i}")], "message": str(i)}
            codes.append(call(live.url, live.admin, "POST", "/v1/apply", body).status_code)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert codes == [200] * 4
        history = call(live.url, live.admin, "GET", "/v1/history").json()
        assert [h["revision"] for h in history] == [5, 4, 3, 2, 1]
    finally:
        server.close()


def test_host_state_rules() -> None:
    now = 1000.0
    fresh = {"reported": now - 1, "revision": 3, "converged": True, "error": None}
    assert host_state(fresh, 3, now) == "in-sync"
    assert host_state(fresh, 4, now) == "pending"
    assert host_state({**fresh, "converged": False}, 3, now) == "pending"
    assert host_state({**fresh, "error": "boom"}, 3, now) == "error"
    stale = {**fresh, "reported": now - UNREACHABLE_AFTER - 1}
    assert host_state(stale, 3, now) == "unreachable"
    assert host_state({"reported": None}, 3, now) == "unreachable"
