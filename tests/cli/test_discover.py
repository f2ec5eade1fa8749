"""`hyperwall discover` against libvirt's test driver (a private node file per test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HW = "https://hyperwall.io/xmlns/workload/1"


def domain(name: str, mac: str, metadata: str = "") -> str:
    meta = f"<metadata>{metadata}</metadata>" if metadata else ""
    return (
        f"<domain type='test'><name>{name}</name><memory>131072</memory>"
        f"<os><type>hvm</type></os>{meta}<devices><interface type='ethernet'>"
        f"<mac address='{mac}'/></interface></devices></domain>"
    )


def workload(tenant: str, mac: str, ip: str, extra: str = "") -> str:
    return (
        f'<hw:workload xmlns:hw="{HW}" tenant="{tenant}"><hw:label key="role" value="web"/>'
        f'<hw:interface mac="{mac}"><hw:ip>{ip}</hw:ip></hw:interface>{extra}</hw:workload>'
    )


def node(tmp_path: Path, *domains: str) -> str:
    path = tmp_path / "node.xml"
    path.write_text("<node>" + "".join(domains) + "</node>")
    return f"test://{path}"


def discover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hyperwall", "discover", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_managed_domains_in_name_order_with_their_policies(tmp_path: Path) -> None:
    policy = (
        '<hw:policy><hw:rule name="ssh" action="allow" direction="in">'
        '<hw:from cidr="192.0.2.0/24"/><hw:service>tcp/22</hw:service></hw:rule></hw:policy>'
    )
    uri = node(
        tmp_path,
        domain("web-2", "52:54:00:00:00:02", workload("acme", "52:54:00:00:00:02", "10.0.0.2")),
        domain("plain", "52:54:00:00:00:09"),
        domain(
            "web-1",
            "52:54:00:00:00:01",
            workload("acme", "52:54:00:00:00:01", "10.0.0.1", policy),
        ),
    )
    done = discover("--connect", uri, "--host", "hv7", "--json")
    assert done.returncode == 0, done.stderr
    docs = json.loads(done.stdout)
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Workload", "web-1"),
        ("Policy", "vm-web-1"),
        ("Workload", "web-2"),
    ]
    assert {d["spec"]["host"] for d in docs if d["kind"] == "Workload"} == {"hv7"}
    assert docs[1]["spec"]["appliedTo"] == {"workload": "web-1"}
    as_yaml = discover("--connect", uri, "--host", "hv7")
    assert as_yaml.returncode == 0
    assert list(yaml.safe_load_all(as_yaml.stdout)) == docs


def test_invalid_metadata_is_left_out_and_named(tmp_path: Path) -> None:
    uri = node(
        tmp_path,
        domain("good", "52:54:00:00:00:01", workload("acme", "52:54:00:00:00:01", "10.0.0.1")),
        domain("bad", "52:54:00:00:00:02", workload("acme", "52:54:00:00:00:02", "10.0.0.300")),
    )
    done = discover("-c", uri, "--host", "hv1", "--json")
    assert done.returncode == 1
    assert [d["metadata"]["name"] for d in json.loads(done.stdout)] == ["good"]
    assert "domain 'bad': hw:workload/hw:interface[@mac='52:54:00:00:00:02']/hw:ip[1]" in (
        done.stderr
    )


def test_bad_uri_and_unreachable(tmp_path: Path) -> None:
    assert discover("-c", "not a uri").returncode == 2
    assert discover("-c", "qemu://[::1/system").returncode == 2  # libvirt cannot parse it
    gone = discover("-c", f"qemu+unix:///system?socket={tmp_path}/none")
    assert gone.returncode == 4 and "cannot open" in gone.stderr


def test_bad_host_name(tmp_path: Path) -> None:
    uri = node(tmp_path, domain("plain", "52:54:00:00:00:09"))
    done = discover("-c", uri, "--host", "Not_A_Name")
    assert done.returncode == 2 and "--host" in done.stderr
