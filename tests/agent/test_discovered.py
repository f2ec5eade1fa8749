"""The agent's discovered domains reach a real manager: libvirt's test driver (a private
node file) read by the `DomainWatcher`, reported by the `Reporter` as the agent does with
`--server` and `--libvirt`, committed by the manager and shown by `hyperwall get` and
`hyperwall status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from hyperwall.agent.libvirt_source import discovered_report, domains_report
from hyperwall.agent.manager_source import Client, Reporter
from hyperwall.cli.app import app
from hyperwall.hypervisor.domain_xml import domain_xml
from hyperwall.hypervisor.watcher import DomainWatcher
from hyperwall.io.files import read_documents
from hyperwall.policy.documents import PolicyDoc, WorkloadDoc
from tests.agent.test_manager_source import wait_for
from tests.manager import conftest as manager_fixtures
from tests.manager.conftest import EXAMPLES, Live
from tests.manager.support import call

live_sqlite = manager_fixtures.live_sqlite  # a real manager on a fresh SQLite store
sqlite_url = manager_fixtures.sqlite_url
runner = CliRunner()


def example(name: str) -> dict[str, Any]:
    docs, _ = read_documents([EXAMPLES])
    return next(r for r, _ in docs if r.get("kind") == "Workload" and r["metadata"]["name"] == name)


def node_file(tmp_path: Path) -> Path:
    """A test-driver node with two running domains: web-1 (hyperwall metadata and embedded
    rules) and `plain` (no metadata)."""
    web = WorkloadDoc.model_validate(example("web-1"))
    policy = PolicyDoc.model_validate(
        {
            "apiVersion": "hyperwall.io/v1",
            "kind": "Policy",
            "metadata": {"name": "vm-web-1", "tenant": "acme"},
            "spec": {
                "appliedTo": {"workload": "web-1"},
                "rules": [{"name": "ssh", "action": "allow", "services": ["tcp/22"]}],
            },
        }
    )
    plain = (
        "<domain type='test'><name>plain</name><memory unit='MiB'>128</memory>"
        "<os><type>hvm</type></os><devices><interface type='ethernet'>"
        "<mac address='52:54:00:aa:bb:cc'/></interface></devices></domain>"
    )
    path = tmp_path / "node.xml"
    path.write_text(f"<node>{domain_xml(web, policy)}{plain}</node>")
    return path


def hw(live: Live, *args: str) -> Any:
    env = {"HYPERWALL_SERVER": live.url, "HYPERWALL_TOKEN": live.admin}
    result = runner.invoke(app, [*args, "--json"], env=env)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def test_discovered_workloads_reach_the_manager(live_sqlite: Live, tmp_path: Path) -> None:
    live = live_sqlite
    tenants, _ = read_documents([EXAMPLES / "tenants.yaml"])
    r = call(live.url, live.admin, "POST", "/v1/apply", {"documents": [d for d, _ in tenants]})
    assert r.status_code == 200
    token = call(live.url, live.admin, "POST", "/v1/tokens", {"role": "agent", "host": "hv1"})
    watcher = DomainWatcher(f"test://{node_file(tmp_path)}", "hv1", lambda name: None)
    reporter = Reporter(Client(live.url, token.json()["token"], "hv1"), max_backoff=0.2)
    watcher.start()
    reporter.start()
    try:
        assert watcher.wait_listed(10)
        reporter.discovered(discovered_report(watcher, domains_report(watcher, None, None)))
        wait_for(lambda: reporter.answers.get("discovered"), "the manager's answer")
        answer = reporter.answers["discovered"]
        assert answer["created"] and answer["refused"] == {}
        web = hw(live, "get", "workload", "web-1", "--tenant", "acme")
        assert web == example("web-1") | {"spec": {**example("web-1")["spec"], "host": "hv1"}}
        policy = hw(live, "get", "policy", "vm-web-1", "--tenant", "acme")
        assert policy["spec"]["appliedTo"] == {"workload": "web-1"}
        (newest, *_) = hw(live, "history")
        assert newest["author"].startswith("agent@hv1:")
        assert newest["message"] == "discovered on hv1: +web-1"
        (host,) = [h for h in hw(live, "status")["hosts"] if h["host"] == "hv1"]
        assert set(host["unmanaged"]) == {"plain"}
    finally:
        reporter.stop(timeout=5)
        watcher.stop()
