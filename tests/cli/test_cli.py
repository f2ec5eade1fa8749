"""Tests for the `hyperwall` command line: `validate`, `trace`, `compile` and `demo`.

Runs `hyperwall.cli.app.app` in-process with typer's `CliRunner` against `examples/` and
small document sets under `tmp_path`, checking exit codes (0 allow / valid, 1 drop or
reject, 2 bad input), the error listing, and the exact JSON shape docs/policy.md promises for
`trace --json`. One test runs the installed console script in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from hyperwall.cli.app import app

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
API = "hyperwall.io/v1"

runner = CliRunner()


def run(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def trace_json(src: str, dst: str, service: str, docs: Path = EXAMPLES) -> tuple[int, Any]:
    result = run("trace", "-f", docs, "--from", src, "--to", dst, "--service", service, "--json")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def read_probes() -> list[tuple[str, str, str, str]]:
    rows = []
    for line in (EXAMPLES / "probes.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            src, dst, service, expected, *_ = line.split("\t")
            rows.append((src, dst, service, expected))
    return rows


def write_docs(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return path


def vm(name: str, tenant: str | None, mac: str, ips: list[str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if tenant:
        metadata["tenant"] = tenant
    return {
        "apiVersion": API,
        "kind": "Workload",
        "metadata": metadata,
        "spec": {"host": "hv1", "interfaces": [{"name": "eth0", "mac": mac, "ips": ips}]},
    }


def tenant(name: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}}


# --- validate ----------------------------------------------------------------------------


def test_validate_examples() -> None:
    result = run("validate", "-f", EXAMPLES)
    assert result.exit_code == 0, result.output
    assert "valid" in result.stdout
    for count in ("2 tenants", "13 workloads", "16 groups", "10 services", "5 policies"):
        assert count in result.stdout


def test_validate_examples_json() -> None:
    result = run("validate", "-f", EXAMPLES, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["valid"] is True
    assert data["counts"]["workloads"] == 13


def test_validate_several_files() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"), reverse=True)
    args: list[str | Path] = ["validate"]
    for path in files:
        args += ["-f", path]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout == run("validate", "-f", EXAMPLES).stdout


def test_validate_subset_with_dangling_reference() -> None:
    # provider.yaml's pci-scope names acme/pci, which lives in acme-shop.yaml
    result = run("validate", "-f", EXAMPLES / "tenants.yaml", "-f", EXAMPLES / "provider.yaml")
    assert result.exit_code == 2
    assert "provider.yaml document 15: spec.groups[0]" in result.stderr
    assert "'acme/pci'" in result.stderr


def bad_set(tmp_path: Path) -> tuple[Path, Path]:
    first = write_docs(
        tmp_path / "a.yaml",
        [
            tenant("acme"),
            vm("web-1", "acme", "52:54:00:00:00:01", ["10.0.0.1"]),
            {
                "apiVersion": API,
                "kind": "Policy",
                "metadata": {"name": "p", "tenant": "acme"},
                "spec": {
                    "rules": [
                        {"name": "ok", "action": "allow"},
                        {"name": "bad", "action": "allow", "from": [{"group": "wbe"}]},
                    ]
                },
            },
        ],
    )
    second = write_docs(
        tmp_path / "b.yaml",
        [
            {"apiVersion": API, "kind": "Firewall", "metadata": {"name": "x"}},
            vm("web-2", "acme", "52:54:00:00:00:01", ["10.0.0.300"]),
            {
                "apiVersion": API,
                "kind": "Service",
                "metadata": {"name": "s"},
                "spec": {"ports": ["tcp/0"]},
            },
        ],
    )
    return first, second


def test_validate_invalid_documents_prints_every_error(tmp_path: Path) -> None:
    first, second = bad_set(tmp_path)
    result = run("validate", "-f", tmp_path)
    assert result.exit_code == 2
    assert result.stdout == ""
    expected = [
        f"{first} document 3: spec.rules[1].from[0].group",
        f"{second} document 1: kind",
        f"{second} document 2: spec.interfaces[0].ips[0]",
        f"{second} document 3: spec.ports[0]",
    ]
    for where in expected:
        assert where in result.stderr, result.stderr
    assert "'wbe'" in result.stderr
    assert "'Firewall'" in result.stderr
    assert "4 error" in result.stderr
    assert "nothing was applied" in result.stderr


def test_validate_invalid_documents_json(tmp_path: Path) -> None:
    first, second = bad_set(tmp_path)
    result = run("validate", "-f", tmp_path, "--json")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert [(e["file"], e["document"], e["path"]) for e in data["errors"]] == [
        (str(first), 3, "spec.rules[1].from[0].group"),
        (str(second), 1, "kind"),
        (str(second), 2, "spec.interfaces[0].ips[0]"),
        (str(second), 3, "spec.ports[0]"),
    ]
    assert all(e["message"] for e in data["errors"])


def test_validate_missing_path_and_yaml_error(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("kind: [\n", encoding="utf-8")
    result = run("validate", "-f", tmp_path, "-f", tmp_path / "missing.yaml")
    assert result.exit_code == 2
    assert "missing.yaml" in result.stderr and "no such file or folder" in result.stderr
    assert "broken.yaml document 1" in result.stderr and "line 2, column 1" in result.stderr


def test_validate_without_arguments_is_a_usage_error() -> None:
    assert run("validate").exit_code == 2


def test_validate_prints_user_text_verbatim(tmp_path: Path) -> None:
    write_docs(tmp_path / "a.yaml", [{**tenant("acme"), "metadata": {"name": "[/red]"}}])
    result = run("validate", "-f", tmp_path)
    assert result.exit_code == 2
    assert "'[/red]'" in result.stderr


# --- trace -------------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst", "service", "expected"), read_probes())
def test_every_probe_gives_its_expected_verdict(
    src: str, dst: str, service: str, expected: str
) -> None:
    code, data = trace_json(src, dst, service)
    assert data["verdict"] == expected
    assert code == (0 if expected == "allow" else 1)


# the `--json` examples of docs/policy.md section 8, and rows of its table in section 9
@pytest.mark.parametrize(
    ("src", "dst", "service", "expected"),
    [
        (
            "lb-1",
            "web-1",
            "http",
            {
                "verdict": "allow",
                "egress": {"verdict": "allow", "rule": "acme/shop/lb-out"},
                "ingress": {"verdict": "allow", "rule": "acme/shop/web-in"},
            },
        ),
        (
            "web-1",
            "db-1",
            "tcp/5432",
            {
                "verdict": "reject",
                "egress": {"verdict": "reject", "rule": "acme/shop/web-to-db"},
                "ingress": {"verdict": "drop", "rule": "acme/pci-guard/deny-rest"},
            },
        ),
        (
            "198.51.100.7",
            "lb-1",
            "https",
            {
                "verdict": "allow",
                "egress": None,
                "ingress": {"verdict": "allow", "rule": "acme/shop/office-to-lb"},
            },
        ),
        (
            "globex-web-1",
            "web-1",
            "http",
            {
                "verdict": "drop",
                "egress": {"verdict": "drop", "rule": "default"},
                "ingress": {"verdict": "drop", "rule": "default"},
            },
        ),
        (
            "db-1",
            "192.0.2.10",
            "backup",
            {
                "verdict": "allow",
                "egress": {"verdict": "allow", "rule": "acme/shop/db-backup"},
                "ingress": None,
            },
        ),
        (
            "globex-web-1",
            "lb-1",
            "https",
            {
                "verdict": "drop",
                "egress": {"verdict": "allow", "rule": "globex/app/web-egress-https"},
                "ingress": {"verdict": "drop", "rule": "default"},
            },
        ),
        (
            "198.51.100.7",
            "globex-web-2",
            "https",
            {
                "verdict": "drop",
                "egress": None,
                "ingress": {"verdict": "drop", "rule": "quarantine/isolate"},
            },
        ),
        (
            "mon-1",
            "db-1",
            "node-exporter",
            {
                "verdict": "allow",
                "egress": {"verdict": "allow", "rule": "infra-services/monitoring-out"},
                "ingress": {"verdict": "allow", "rule": "infra-services/node-exporter-in"},
            },
        ),
        (
            "jump-1",
            "db-1",
            "ssh",
            {
                "verdict": "drop",
                "egress": {"verdict": "allow", "rule": "acme/shop/admin-ssh"},
                "ingress": {"verdict": "drop", "rule": "acme/pci-guard/deny-rest"},
            },
        ),
        (
            "fd00:1::31",
            "fd00:1::41",
            "tcp/5432",
            {
                "verdict": "allow",
                "egress": {"verdict": "allow", "rule": "acme/shop/app-to-db"},
                "ingress": {"verdict": "allow", "rule": "acme/shop/app-to-db"},
            },
        ),
        (
            "jump-1",
            "app-1",
            "ping",
            {
                "verdict": "allow",
                "egress": {"verdict": "allow", "rule": "acme/shop/admin-ping"},
                "ingress": {"verdict": "allow", "rule": "acme/shop/admin-ping"},
            },
        ),
        (
            "web-1",
            "app-1",
            "tcp/8081",
            {
                "verdict": "drop",
                "egress": {"verdict": "drop", "rule": "default"},
                "ingress": {"verdict": "drop", "rule": "default"},
            },
        ),
    ],
)
def test_trace_json_is_shaped_like_policy_md(
    src: str, dst: str, service: str, expected: dict[str, Any]
) -> None:
    code, data = trace_json(src, dst, service)
    assert data == expected
    assert list(data) == ["verdict", "egress", "ingress"]
    for end in (data["egress"], data["ingress"]):
        assert end is None or list(end) == ["verdict", "rule"]
    assert code == (0 if expected["verdict"] == "allow" else 1)


def test_trace_text() -> None:
    result = run(
        "trace", "-f", EXAMPLES, "--from", "web-1", "--to", "db-1", "--service", "postgres"
    )
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "reject"
    assert "egress" in lines[1] and "web-1" in lines[1] and "10.1.0.21" in lines[1]
    assert "reject" in lines[1] and "acme/shop/web-to-db" in lines[1]
    assert "ingress" in lines[2] and "db-1" in lines[2] and "10.1.0.41" in lines[2]
    assert "drop" in lines[2] and "acme/pci-guard/deny-rest" in lines[2]


def test_trace_text_allow_and_external_end() -> None:
    args = ("--from", "198.51.100.7", "--to", "lb-1", "--service", "https")
    result = run("trace", "-f", EXAMPLES, *args)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "allow"
    assert "198.51.100.7" in lines[1] and "acme/shop" not in lines[1]
    assert "acme/shop/office-to-lb" in lines[2]


def test_trace_address_of_a_second_interface_stands_for_its_workload() -> None:
    code, data = trace_json("10.1.0.42", "192.0.2.10", "backup")
    assert code == 0
    assert data["egress"] == {"verdict": "allow", "rule": "acme/shop/db-backup"}


def test_trace_ipv6_by_name_follows_the_source_family() -> None:
    code, data = trace_json("fd00:1::31", "db-1", "tcp/5432")
    assert (code, data["verdict"]) == (0, "allow")


def test_trace_service_name_stands_for_its_first_port() -> None:
    # app-api is tcp/8000-8080: the trace uses tcp/8000
    assert trace_json("web-1", "app-2", "app-api")[1] == trace_json("web-1", "app-2", "tcp/8000")[1]
    # dns is udp/53, tcp/53: the trace uses udp/53
    assert trace_json("web-1", "dns-1", "dns")[1] == trace_json("web-1", "dns-1", "udp/53")[1]


def ambiguous_set(tmp_path: Path) -> Path:
    return write_docs(
        tmp_path / "fleet.yaml",
        [
            tenant("acme"),
            tenant("globex"),
            vm("web-1", "acme", "52:54:00:00:00:01", ["10.0.0.1"]),
            vm("web-1", "globex", "52:54:00:00:00:02", ["10.0.0.2"]),
            vm("dns-1", None, "52:54:00:00:00:03", ["10.0.0.3", "fd00::3"]),
        ],
    )


@pytest.mark.parametrize(
    ("src", "dst", "service", "fragment"),
    [
        ("nope", "dns-1", "tcp/53", "'nope'"),
        ("dns-1", "globex/nope", "tcp/53", "'globex/nope'"),
        ("web-1", "dns-1", "tcp/53", "ambiguous"),
        ("dns-1", "web-1", "tcp/53", "acme/web-1, globex/web-1"),
        ("dns-1", "10.0.0.300", "tcp/53", "'10.0.0.300'"),
        ("dns-1", "acme/web-1", "tcp/0", "1-65535"),
        ("dns-1", "acme/web-1", "tcp/10-5", "tcp/10-5"),
        ("dns-1", "acme/web-1", "foo/1", "'foo'"),
        ("dns-1", "acme/web-1", "smtp", "'smtp'"),
        ("dns-1", "acme/web-1", "tcp", "needs a port"),
        ("dns-1", "acme/web-1", "any", "'any'"),
        ("10.0.0.3", "fd00::3", "tcp/53", "address families"),
        ("fd00::3", "fd00::9", "icmp/echo-request", "icmpv6"),
        ("10.0.0.3", "10.0.0.9", "icmpv6/echo-request", "icmp/"),
        ("fd00::3", "acme/web-1", "tcp/53", "IPv6"),  # acme/web-1 has no IPv6 address
    ],
)
def test_trace_bad_input_exits_2(
    tmp_path: Path, src: str, dst: str, service: str, fragment: str
) -> None:
    docs = ambiguous_set(tmp_path)
    result = run("trace", "-f", docs, "--from", src, "--to", dst, "--service", service, "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert fragment in result.stderr


def test_trace_qualified_name_resolves_ambiguity(tmp_path: Path) -> None:
    docs = ambiguous_set(tmp_path)
    code, data = trace_json("acme/web-1", "globex/web-1", "tcp/80", docs)
    # both tenants default to drop
    assert (code, data["verdict"], data["egress"]["rule"]) == (1, "drop", "default")


def test_trace_invalid_documents_exit_2(tmp_path: Path) -> None:
    bad_set(tmp_path)
    result = run(
        "trace", "-f", tmp_path, "--from", "10.0.0.1", "--to", "10.0.0.2", "--service", "tcp/1"
    )
    assert result.exit_code == 2
    assert "spec.ports[0]" in result.stderr


def test_trace_prints_bad_names_verbatim() -> None:
    args = ("--from", "[/x]", "--to", "web-1", "--service", "http")
    result = run("trace", "-f", EXAMPLES, *args)
    assert result.exit_code == 2
    assert "'[/x]'" in result.stderr


# --- compile -----------------------------------------------------------------------------


def test_compile_text() -> None:
    result = run("compile", "-f", EXAMPLES, "--host", "hv1")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("host hv1")
    for workload in ("acme/web-1", "acme/lb-1", "globex/globex-web-1", "dns-1"):
        assert f"endpoint {workload}/eth0" in out
    assert "acme/db-1" not in out.split("\nchain ")[0]  # db-1 runs on hv2
    assert "52:54:00:01:00:21" in out and "10.1.0.21" in out  # anti-spoofing identity
    assert "chain in:acme/shop" in out and "chain out:infra-services" in out
    assert "acme/shop/web-to-db" in out


def test_compile_json() -> None:
    result = run("compile", "-f", EXAMPLES, "--host", "hv2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["host"] == "hv2"
    endpoints = data["endpoints"]
    assert set(endpoints) == {
        "acme/web-2/eth0",
        "acme/app-2/eth0",
        "acme/db-1/eth0",
        "acme/db-1/eth1",
        "globex/globex-web-2/eth0",
        "ntp-1/eth0",
        "mon-1/eth0",
    }
    db = endpoints["acme/db-1/eth1"]
    assert (db["mac"], db["ips"]) == ("52:54:00:01:01:41", ["10.1.0.42", "fd00:1::42"])
    assert db["ingress"]["environment"] == ["in:acme/pci-guard"]
    assert (db["default"], db["logDefault"]) == ("drop", True)
    assert {"in:acme/pci-guard", "in:acme/shop", "out:quarantine"} <= set(data["chains"])
    rules = json.dumps(data["chains"])
    assert "acme/pci-guard/deny-rest" in rules and "quarantine/isolate" in rules


def test_compile_unknown_host_exits_2() -> None:
    result = run("compile", "-f", EXAMPLES, "--host", "hv9")
    assert result.exit_code == 2
    assert "hv9" in result.stderr and "hv1, hv2" in result.stderr


def test_compile_invalid_documents_exit_2(tmp_path: Path) -> None:
    bad_set(tmp_path)
    result = run("compile", "-f", tmp_path, "--host", "hv1", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["valid"] is False


# --- demo --------------------------------------------------------------------------------


def test_demo() -> None:
    result = run("demo", "-f", EXAMPLES, "--trace-only")
    assert result.exit_code == 0, result.output
    assert "MISMATCH" not in result.stdout
    assert "acme/pci-guard/deny-rest" in result.stdout


def test_demo_reports_a_mismatch(tmp_path: Path) -> None:
    probes = tmp_path / "probes.tsv"
    probes.write_text("# from\tto\tservice\texpected\nweb-1\tdb-1\tpostgres\tallow\n")
    result = run("demo", "-f", EXAMPLES, "--probes", probes, "--trace-only")
    assert result.exit_code == 1
    assert "MISMATCH" in result.stdout


# --- the console script ------------------------------------------------------------------


def test_console_script() -> None:
    script = REPO / ".venv" / "bin" / "hyperwall"
    if not script.exists():
        script = Path(sys.executable).parent / "hyperwall"
    args = [
        "trace",
        "-f",
        str(EXAMPLES),
        "--from",
        "web-1",
        "--to",
        "db-1",
        "--service",
        "postgres",
    ]
    done = subprocess.run(
        [str(script), *args, "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout) == {
        "verdict": "reject",
        "egress": {"verdict": "reject", "rule": "acme/shop/web-to-db"},
        "ingress": {"verdict": "drop", "rule": "acme/pci-guard/deny-rest"},
    }
