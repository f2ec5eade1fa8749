"""End to end: `hyperwall trace --live` through the manager, in a lab of namespaces.

One lab for the module (hosts and VMs from the examples), the manager in hv1's namespace
and one `hyperwall agent --server` per host (`test_manager_lab.Fleet`). Then:

- every row of the examples' probe table (`examples/probes.tsv`, allow, drop and reject,
  IPv4 and IPv6, same host and across hosts, external sources) traced live: the rules the
  kernels hit are those `trace` names, and no difference is reported;
- the CLI prints both and exits 0;
- a rule rewritten in the kernel behind the agent's back (same place, same comment, so the
  agent's read-back does not see it, but drop instead of allow): the live trace reports
  the difference and the CLI exits 1;
- a tenant-admin may trace its own workloads only;
- no trace rule and no probe device is left behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.agent.test_manager_source import example_documents, hyperwall
from tests.e2e.test_manager_lab import Fleet, probe_rows, running_fleet
from tests.lab.conftest import lab_marks

pytestmark = lab_marks()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("live")
    with running_fleet(f"hwf{os.getpid() % 100_000}", tmp) as fleet:
        docs = example_documents()
        fleet.converge(docs, fleet.manager.commit(docs))
        yield fleet


def live(fleet: Fleet, src: str, dst: str, service: str, token: str | None = None) -> Any:
    body = {"from": src, "to": dst, "service": service, "timeout": 8.0}
    return fleet.manager._http("POST", "/v1/traces", body, token=token)


def test_probe_table_agrees_with_trace(fleet: Fleet) -> None:
    rows = probe_rows()
    seen: set[str] = set()
    for src, dst, service, _result in rows:
        answer = live(fleet, src, dst, service)
        assert answer["differences"] == [], (src, dst, service)
        assert answer["agrees"] and not answer["missing"]
        offline = answer["offline"]
        for end in ("egress", "ingress"):
            if offline[end] is None or end in answer["unchecked"]:
                continue
            hit = answer["live"][end]
            assert (hit["verdict"], hit["rule"]) == (offline[end]["verdict"], offline[end]["rule"])
            seen.add(hit["verdict"])
        if answer["unchecked"]:  # the sender's end denied: the receiver never saw it
            assert answer["live"]["egress"]["verdict"] != "allow"
    assert seen == {"allow", "drop", "reject"}
    assert len(rows) >= 15


def test_concurrent_traces_each_see_their_own_probe(fleet: Fleet) -> None:
    """Several traces at once through the same hosts (TCP, ICMP, ICMPv6): each agent follows
    only the packets its own trace rule marked."""
    pairs = [
        ("web-1", "app-1", "app-api"),
        ("lb-1", "web-2", "http"),
        ("web-1", "db-1", "tcp/5432"),
        ("jump-1", "web-2", "icmp/echo-request"),  # ICMP: the echo id is the probe's tag
        ("fd00:1::5", "fd00:1::22", "icmpv6/echo-request"),
    ]
    with ThreadPoolExecutor(len(pairs)) as pool:
        answers = list(pool.map(lambda p: live(fleet, *p), pairs))
    for pair, answer in zip(pairs, answers, strict=True):
        assert answer["agrees"] and not answer["missing"], (pair, answer["differences"])
    assert answers[3]["live"]["ingress"]["rule"] == "acme/shop/admin-ping"
    assert answers[4]["live"]["ingress"]["rule"] == "acme/shop/admin-ping"


def _cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    hv1 = fleet.hosts[fleet.first]
    token = fleet.tmp / "admin-token"
    token.write_text(fleet.manager.admin + "\n")
    argv = [*hyperwall(), "trace", "--live", "--server", fleet.manager.url]
    return subprocess.run(
        ["ip", "netns", "exec", hv1, *argv, "--token-file", str(token), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def _handle_of(ns: str, chain: str, handle: int) -> dict[str, Any]:
    listing = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-j", "-a", "list", "chain", "inet", "hyperwall", chain],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rules = [e["rule"] for e in json.loads(listing)["nftables"] if "rule" in e]
    return next(r for r in rules if r["handle"] == handle)


def test_cli_and_a_rule_changed_behind_the_agents_back(fleet: Fleet) -> None:
    args = ("--from", "app-2", "--to", "db-1", "--service", "postgres")
    shown = _cli(fleet, *args)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "acme/shop/app-to-db" in shown.stdout and "agrees" in shown.stdout

    # the rule that admits app-2 at db-1 (hv2) becomes a drop in the kernel, in place and
    # with its comment, so the agent's read-back still finds the chain it wrote
    before = live(fleet, "app-2", "db-1", "postgres")
    hit = before["live"]["ingress"]
    ns = fleet.hosts[hit["host"]]
    rule = _handle_of(ns, hit["chain"], hit["handle"])
    text = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "nft",
            "-a",
            "list",
            "chain",
            "inet",
            "hyperwall",
            hit["chain"],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in text.splitlines() if x.rstrip().endswith(f"# handle {hit['handle']}"))
    body = line.split("# handle")[0].strip()
    # the verdict (accept, or the goto of a logged rule's log chain) becomes a drop
    tampered = re.sub(r"(accept|goto \S+)(?= comment)", "drop", body)
    assert tampered != body and "comment" in tampered, body
    subprocess.run(
        [
            *("ip", "netns", "exec", ns, "nft", "replace", "rule", "inet", "hyperwall"),
            *(hit["chain"], "handle", str(hit["handle"]), *tampered.split()),
        ],
        check=True,
    )
    assert rule["comment"] in tampered

    answer = live(fleet, "app-2", "db-1", "postgres")
    assert not answer["agrees"]
    assert any(
        d.startswith("ingress: offline allow by acme/shop/app-to-db") for d in answer["differences"]
    )
    assert answer["live"]["ingress"]["verdict"] == "drop"
    shown = _cli(fleet, *args, "--json")
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert json.loads(shown.stdout)["differences"]

    # a resync (or any sync) puts the program's rule back: the trace agrees again
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "flush", "chain", "inet", "hyperwall", hit["chain"]],
        check=True,
    )
    fleet.agents[hit["host"]].stop()
    # what a crash in the middle of a trace leaves: a trace chain (and the probe device,
    # which stays between traces anyway)
    leftover = "add table inet hyperwall_trace; add chain inet hyperwall_trace lt_leftover"
    subprocess.run(["ip", "netns", "exec", ns, "nft", leftover], check=True)
    fleet.agents[hit["host"]].start()
    fleet.converge(example_documents(), before["revision"])
    assert live(fleet, "app-2", "db-1", "postgres")["agrees"]
    # the restarted agent removed what the earlier one left (and the trace left nothing)
    ruleset = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "list", "ruleset"], capture_output=True, text=True
    ).stdout
    assert "lt_leftover" not in ruleset and "chain lt_" not in ruleset


def test_tenant_admin_traces_its_own_workloads_only(fleet: Fleet) -> None:
    made = fleet.manager._http("POST", "/v1/tokens", {"role": "tenant-admin", "tenant": "globex"})
    token = made["token"]
    own = live(fleet, "globex-web-1", "globex-web-2", "https", token=token)
    assert own["agrees"], own
    with pytest.raises(urllib.error.HTTPError) as refused:
        live(fleet, "globex-web-1", "lb-1", "https", token=token)
    assert refused.value.code == 403


def test_nothing_left_behind(fleet: Fleet) -> None:
    live(fleet, "web-1", "app-1", "app-api")
    for ns in fleet.hosts.values():
        tables = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "hyperwall_trace"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        assert "chain lt_" not in tables
