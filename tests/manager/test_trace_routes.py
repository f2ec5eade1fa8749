"""The live trace endpoints on a live manager (SQLite store, the examples applied): who may
trace what, bad input, and the protocol with the agents (arm, armed, inject, result),
played here over HTTP by the test in the agents' place (the kernel side is
`tests/e2e/test_live_trace.py`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.manager.conftest import Live, example_documents, start_server
from tests.manager.support import call
from tests.store.conftest import sqlite_urls


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, dict[str, str]]]:
    base = tmp_path_factory.mktemp("hwf-traces")
    for live in start_server(sqlite_urls(base)(), base / "admin.token"):
        answer = call(live.url, live.admin, "POST", "/v1/apply", {"documents": example_documents()})
        assert answer.status_code == 200, answer.text
        tokens = {"provider": live.admin}
        for name, body in (
            ("globex", {"role": "tenant-admin", "tenant": "globex"}),
            ("auditor", {"role": "auditor"}),
            ("hv1", {"role": "agent", "host": "hv1"}),
            ("hv2", {"role": "agent", "host": "hv2"}),
        ):
            made = call(live.url, live.admin, "POST", "/v1/tokens", body)
            tokens[name] = made.json()["token"]
        yield live, tokens


def trace(live: Live, token: str, src: str, dst: str, service: str, timeout: float = 3.0) -> Any:
    body = {"from": src, "to": dst, "service": service, "timeout": timeout}
    return call(live.url, token, "POST", "/v1/traces", body)


def test_who_may_trace_what(fleet: tuple[Live, dict[str, str]]) -> None:
    live, tokens = fleet
    for who in ("auditor", "hv1"):
        assert trace(live, tokens[who], "web-1", "app-1", "app-api").status_code == 403
    refused = trace(live, tokens["globex"], "globex-web-1", "lb-1", "https")
    assert refused.status_code == 403 and "acme/lb-1" in refused.text
    # its own workloads: allowed (no agent answers here: both hosts are missing)
    own = trace(live, tokens["globex"], "globex-web-1", "globex-web-2", "https", timeout=1.5)
    assert own.status_code == 200, own.text
    assert own.json()["missing"] == ["hv1", "hv2"] and not own.json()["agrees"]


def test_bad_input_names_the_problem(fleet: tuple[Live, dict[str, str]]) -> None:
    live, tokens = fleet
    unknown = trace(live, tokens["provider"], "nope-1", "app-1", "app-api")
    assert unknown.status_code == 422 and "nope-1" in unknown.text
    outside = trace(live, tokens["provider"], "192.0.2.1", "192.0.2.2", "tcp/80")
    assert outside.status_code == 422 and "neither end" in outside.text
    too_long = trace(live, tokens["provider"], "web-1", "app-1", "app-api", timeout=600)
    assert too_long.status_code == 422


class Agent(threading.Thread):
    """Plays one host's agent over HTTP: arms, injects, answers `hits` (None: arms and
    never answers)."""

    def __init__(self, live: Live, token: str, host: str, hits: list[dict[str, Any]] | None):
        super().__init__(daemon=True)
        self.live, self.token, self.host, self.hits = live, token, host, hits
        self.seen: list[dict[str, Any]] = []
        self.lose_first = False

    def run(self) -> None:
        deadline = time.monotonic() + 10
        base = f"/v1/agent/{self.host}/traces"
        while time.monotonic() < deadline:
            got = call(self.live.url, self.token, "GET", f"{base}/desired", wait=2)
            if got.status_code != 200:
                continue
            for task in got.json()["tasks"]:
                self.seen.append(task)
                if self.lose_first:  # a dead agent's request took it: never acknowledged
                    self.lose_first = False
                    continue
                if task["action"] == "arm":
                    call(self.live.url, self.token, "POST", f"{base}/{task['id']}/armed")
                if task["action"] == "inject":  # the probe is out: its answer
                    body = {"hits": self.hits, "path": ["forward#1 rule accept"]}
                    call(self.live.url, self.token, "POST", f"{base}/{task['id']}/result", body)
                    return


def test_answers_side_by_side_and_a_difference(fleet: tuple[Live, dict[str, str]]) -> None:
    live, tokens = fleet
    egress = {
        "end": "egress",
        "verdict": "allow",
        "rule": "acme/shop/web-to-app",
        "chain": "p_1",
        "handle": 5,
    }
    ingress = {"end": "ingress", "verdict": "drop", "rule": "default", "chain": "d_1", "handle": 9}
    agent = Agent(live, tokens["hv1"], "hv1", [egress, ingress])  # web-1 and app-1: hv1
    agent.lose_first = True
    agent.start()
    answer = trace(live, tokens["provider"], "web-1", "app-1", "app-api", timeout=6).json()
    agent.join(10)
    actions = [t["action"] for t in agent.seen]
    assert actions == ["arm", "arm", "inject"]  # the lost arm came again, then the inject
    inject = agent.seen[-1]
    assert inject["endpoint"] == "acme/web-1/eth0" and inject["probe"]["port"] == 8000
    assert 32768 <= inject["probe"]["tag"] < 65536
    assert answer["offline"]["ingress"] == {"verdict": "allow", "rule": "acme/shop/web-to-app"}
    assert answer["live"]["egress"]["rule"] == "acme/shop/web-to-app"
    assert answer["differences"] == [
        "ingress: offline allow by acme/shop/web-to-app, kernel drop by default "
        "(host hv1, chain d_1, handle 9)"
    ]
    assert not answer["agrees"] and answer["missing"] == []


def test_a_denied_egress_does_not_wait_for_the_receiver(
    fleet: tuple[Live, dict[str, str]],
) -> None:
    live, tokens = fleet
    rejected = {
        "end": "egress",
        "verdict": "reject",
        "rule": "acme/shop/web-to-db",
        "chain": "p_2",
        "handle": 7,
    }
    sender = Agent(live, tokens["hv1"], "hv1", [rejected])
    receiver = Agent(live, tokens["hv2"], "hv2", None)  # arms, never answers
    sender.start()
    receiver.start()
    answer = trace(live, tokens["provider"], "web-1", "db-1", "tcp/5432", timeout=20).json()
    assert answer["agrees"] and answer["unchecked"] == ["ingress"]
    assert answer["missing"] == [] and "not waited for" in answer["hosts"]["hv2"]["note"]
    sender.join(10)
    receiver.join(10)
