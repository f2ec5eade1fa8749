"""The manager's /metrics, scraped from a live manager: the realization lag moves when an
agent reports a new revision in force (once per host and revision), host states, and the
flow store's counts move with shipped batches."""

from __future__ import annotations

import re

import httpx

from hyperwall.flows.filter import us_time
from tests.manager.conftest import Live
from tests.manager.support import assertion, call, group


def scrape(live: Live) -> dict[str, float]:
    return parse_metrics(httpx.get(live.url + "/metrics", timeout=30).text)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text: `name{labels}` -> value."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


LAG = "hyperwall_manager_realization_lag_seconds_count"


def test_metrics_move_with_reports_and_flows(live_sqlite: Live) -> None:
    live = live_sqlite
    tenants = [{"apiVersion": "hyperwall.io/v1", "kind": "Tenant", "metadata": {"name": "acme"}}]
    revision = call(live.url, live.admin, "POST", "/v1/apply", {"documents": tenants}).json()
    agent = call(live.url, live.admin, "POST", "/v1/tokens", {"role": "agent", "host": "hv1"})
    token = agent.json()["token"]
    before = scrape(live)
    assert before[LAG] == 0
    assert before["hyperwall_manager_revision"] == revision["revision"]
    assert "hyperwall_manager_flow_records_stored_total" in before

    status = {
        "revision": revision["revision"],
        "programHash": None,
        "converged": True,
        "error": None,
        "endpoints": 0,
    }
    for _ in range(2):  # the second report of the same revision is no new realization
        r = call(live.url, token, "PUT", "/v1/agent/hv1/status", status)
        assert r.status_code == 204
    after = scrape(live)
    assert after[LAG] == 1
    assert after["hyperwall_manager_status_reports_total"] == 2
    assert sum(v for k, v in after.items() if k.startswith("hyperwall_manager_hosts{")) >= 1

    newer = call(live.url, live.admin, "POST", "/v1/apply", {"documents": [group("g")]}).json()
    pending = {**status, "revision": newer["revision"], "converged": False}
    call(live.url, token, "PUT", "/v1/agent/hv1/status", pending)
    assert scrape(live)[LAG] == 1  # not in force yet
    call(live.url, token, "PUT", "/v1/agent/hv1/status", {**pending, "converged": True})
    assert scrape(live)[LAG] == 2

    record = {"time": us_time(1_796_000_000_000_000), "host": "hv1", "workload": "acme/a"}
    batch = {"file": "f", "offset": 0, "end": 10, "records": [record, record]}
    assert call(live.url, token, "POST", "/v1/agent/hv1/flows", batch).status_code == 200
    flows = scrape(live)
    assert flows["hyperwall_manager_flow_records_stored_total"] == 2
    assert flows["hyperwall_manager_flow_store_bytes"] > 0

    # the assertion gate: every change that puts or deletes documents is timed
    gate = "hyperwall_manager_gate_seconds_count"
    checks = "hyperwall_manager_gate_assertions_checked_total"
    held = assertion("open", "g", "g", "tcp/80", "allow")  # nothing filters CIDR to CIDR
    assert call(live.url, live.admin, "POST", "/v1/apply", {"documents": [held]}).is_success
    gated = scrape(live)
    assert gated[gate] == flows[gate] + 1
    assert gated[checks] == flows[checks] + 1  # the new assertion checked itself
    assert gated['hyperwall_manager_gate_seconds_bucket{le="+Inf"}'] == gated[gate]
    assert gated["hyperwall_manager_gate_seconds_sum"] > 0
