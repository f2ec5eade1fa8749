"""Restart safety in the lab: agents killed with SIGKILL and restarted while the policy keeps
changing never open a window, never break an admitted connection, and converge at the end.

Two policy sets, A and B, differ in many rules (tiers, priorities, a `pass`, reject vs
drop, labels) but agree on a few pairs. While the agents churn (policy updates applied
without waiting, agents killed at random moments and restarted, everything driven by a
seeded `random.Random`):

- two long-lived TCP connections (cross host over IPv4, same host over IPv6) carry one byte
  every ~20 ms, each echoed and checked by a small client in the source VM;
- prober threads keep sending first packets for pairs that are denied at BOTH ends in BOTH
  sets (so also while one host runs A and the other B), and for pairs allowed at both ends
  in both sets.

Asserted: no denied probe is ever `allowed`, every allowed probe is `allowed` every time,
both streams saw every echo and no error, no agent died except those the test killed, and
in the end every agent runs the latest documents (`Lab.wait`) and real traffic equals
`trace`.
"""

from __future__ import annotations

import itertools
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hyperwall.agent.status import read_status
from hyperwall.analysis.trace import trace
from hyperwall.io.files import load_catalog
from hyperwall.lab import Lab, agents, responder_client
from hyperwall.lab.probe_messages import ProbeRequest
from hyperwall.lab.resolve import resolve_probe
from hyperwall.policy.model import Catalog

from .conftest import VERDICT_TO_RESULT, lab_marks, lab_name, lab_namespaces

pytestmark = lab_marks()

SEED = 20250607
STEPS = 36  # churn actions (apply, kill + restart) in the stress test
DENIED_LOOPS = 6  # prober threads for the denied pairs (each round waits one probe timeout)

WORKLOADS = """
apiVersion: hyperwall.io/v1
kind: Tenant
metadata: {name: t}
spec: {defaultAction: drop}
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {name: a, tenant: t, labels: {role: client}}
spec:
  host: hv1
  interfaces: [{name: eth0, mac: "52:54:00:8a:00:01", ips: [10.8.0.1, "fd00:8::1"]}]
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {name: b, tenant: t, labels: {role: server}}
spec:
  host: hv2
  interfaces: [{name: eth0, mac: "52:54:00:8a:00:02", ips: [10.8.0.2, "fd00:8::2"]}]
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {name: c, tenant: t, labels: {role: client}}
spec:
  host: hv1
  interfaces: [{name: eth0, mac: "52:54:00:8a:00:03", ips: [10.8.0.3, "fd00:8::3"]}]
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {name: d, tenant: t, labels: {role: other, env: ENV}}
spec:
  host: hv2
  interfaces: [{name: eth0, mac: "52:54:00:8a:00:04", ips: [10.8.0.4, "fd00:8::4"]}]
"""

POLICY_A = """
apiVersion: hyperwall.io/v1
kind: Policy
metadata: {name: base, tenant: t}
spec:
  tier: application
  priority: 100
  rules:
    - name: stream
      action: allow
      from: [{selector: role == "client"}]
      to: [{selector: role == "server"}]
      services: [tcp/7000, tcp/80]
    - name: peer
      action: allow
      from: [{workload: c}]
      to: [{workload: a}]
      services: [tcp/7001]
    - name: dns
      action: allow
      to: [{selector: role == "server"}]
      services: [udp/53]
    - name: no-ssh
      action: reject
      from: [{selector: role == "other"}]
      services: [tcp/22]
"""

POLICY_B = """
apiVersion: hyperwall.io/v1
kind: Policy
metadata: {name: base, tenant: t}
spec:
  tier: application
  priority: 50
  rules:
    - name: no-ssh
      action: drop
      from: [{selector: env == "blue"}]
      services: [tcp/22]
    - name: web
      action: allow
      from: [{selector: role == "client"}]
      to: [{selector: role == "server"}]
      services: [tcp/80, tcp/7000, tcp/8080]
    - name: peer
      action: allow
      from: [{workload: c}]
      to: [{workload: a}]
      services: [tcp/7001, udp/7001]
    - name: dns
      action: allow
      to: [{selector: role == "server"}]
      services: [udp/53, tcp/53]
---
apiVersion: hyperwall.io/v1
kind: Policy
metadata: {name: guard, tenant: t}
spec:
  tier: emergency
  priority: 10
  rules:
    - name: no-ping-d
      action: reject
      to: [{workload: d}]
      services: [icmp, icmpv6]
    - name: rest
      action: pass
---
apiVersion: hyperwall.io/v1
kind: Policy
metadata: {name: ping-c, tenant: t}
spec:
  tier: infrastructure
  appliedTo: {selector: 'hyperwall.io/name in {"c", "d"}'}
  rules:
    - name: d-to-c
      action: allow
      from: [{workload: d}]
      to: [{workload: c}]
      services: [icmp, icmpv6]
"""

SETS = {
    "A": {"workloads.yaml": WORKLOADS.replace("ENV", "green"), "policy.yaml": POLICY_A},
    "B": {"workloads.yaml": WORKLOADS.replace("ENV", "blue"), "policy.yaml": POLICY_B},
}

Probe = tuple[str, str, str]
# denied at both ends in both sets; allowed at both ends in both sets (checked by
# `test_the_sets_agree_on_the_probed_pairs` with `trace`, for every mix of A and B)
DENIED: list[Probe] = [
    ("10.8.0.4", "10.8.0.1", "tcp/22"),  # d -> a: cross host; A rejects, B drops
    ("fd00:8::2", "fd00:8::3", "tcp/80"),  # b -> c: server to client, cross host
    ("10.8.0.1", "10.8.0.4", "icmp/echo-request"),  # a -> d: B rejects at d
    ("10.8.0.4", "10.8.0.2", "udp/5353"),  # d -> b: same host
    ("fd00:8::1", "fd00:8::3", "tcp/7001"),  # a -> c: same host, the reverse of `peer`
]
ALLOWED: list[Probe] = [
    ("10.8.0.3", "10.8.0.2", "tcp/80"),  # c -> b: cross host
    ("fd00:8::4", "fd00:8::2", "udp/53"),  # d -> b: same host
    ("fd00:8::3", "fd00:8::1", "tcp/7001"),  # c -> a: same host, new connections
]
STREAMS = [  # (vm, src, dst, port): cross host over IPv4, same host over IPv6
    ("a", "10.8.0.1", "10.8.0.2", 7000),
    ("c", "fd00:8::3", "fd00:8::1", 7001),
]

STREAM_CLIENT = r"""
import json, os, socket, sys, time
src, dst, port, out, stop, limit = sys.argv[1:7]
def report(**fields):
    with open(out + ".tmp", "w") as f:
        json.dump(fields, f)
    os.replace(out + ".tmp", out)
family = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.bind((src, 0))
s.settimeout(10)
sent = echoed = 0
error = None
try:
    s.connect((dst, int(port)))
    report(state="connected", sent=0, echoed=0, error=None)
    end = time.monotonic() + float(limit)
    while not os.path.exists(stop) and time.monotonic() < end:
        byte = bytes([sent % 256])
        s.sendall(byte)
        sent += 1
        got = s.recv(1)
        if got != byte:
            error = f"echo {got!r} instead of {byte!r} after {echoed} echoes"
            break
        echoed += 1
        time.sleep(0.02)
except OSError as exc:
    error = f"{type(exc).__name__}: {exc} after {echoed} echoes"
report(state="done", sent=sent, echoed=echoed, error=error, stopped=os.path.exists(stop))
"""
STREAM_LIMIT = 300.0  # seconds a stream client runs at most if nobody stops it


# -- documents and expectations ----------------------------------------------------------


def write_set(root: Path, name: str) -> Path:
    folder = root / f"set-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    for file, text in SETS[name].items():
        (folder / file).write_text(text)
    return folder


def mixed_results(catalogs: dict[str, Catalog], probe: Probe) -> set[str]:
    """What `probe` gets when the sender's host runs one set and the receiver's another."""
    out = set()
    for src_set, dst_set in itertools.product(catalogs, repeat=2):
        egress = trace(catalogs[src_set], *probe).egress
        ingress = trace(catalogs[dst_set], *probe).ingress
        assert egress is not None and ingress is not None
        verdict = next((d.verdict for d in (egress, ingress) if d.verdict != "allow"), "allow")
        out.add(VERDICT_TO_RESULT[verdict])
    return out


def test_the_sets_agree_on_the_probed_pairs(tmp_path: Path) -> None:
    """The premise of the stress test, from `trace`: the denied pairs are denied and the
    allowed pairs allowed, at both ends, by A, by B and by any mix of the two."""
    catalogs = {n: load_catalog([write_set(tmp_path, n)]) for n in SETS}
    for probe in DENIED:
        assert "allowed" not in mixed_results(catalogs, probe), probe
        for catalog in catalogs.values():
            result = trace(catalog, *probe)
            assert result.egress is not None and result.egress.verdict != "allow", probe
            assert result.ingress is not None and result.ingress.verdict != "allow", probe
    for probe in ALLOWED:
        assert mixed_results(catalogs, probe) == {"allowed"}, probe
    for _, src, dst, port in STREAMS:
        assert mixed_results(catalogs, (src, dst, f"tcp/{port}")) == {"allowed"}
    # the sets do differ where it is not probed
    differ = [("10.8.0.4", "10.8.0.3", "icmp/echo-request"), ("10.8.0.1", "10.8.0.2", "tcp/8080")]
    for probe in differ:
        assert len({trace(c, *probe).verdict for c in catalogs.values()}) == 2, probe


# -- the lab, streams and probers --------------------------------------------------------


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(lab_name("k"))
    lab.down()  # left-overs of an earlier run with the same pid
    try:
        lab.up([write_set(tmp_path, "A")])
        yield lab
    finally:
        lab.down()
        assert lab_namespaces(lab) == []


@dataclass
class Stream:
    """A long-lived TCP connection from a VM, driven by STREAM_CLIENT inside its namespace."""

    vm: str
    src: str
    dst: str
    port: int
    out: Path
    stop: Path
    future: Future[subprocess.CompletedProcess[str]] | None = None

    def start(self, lab: Lab, pool: ThreadPoolExecutor) -> None:
        argv = [sys.executable, "-c", STREAM_CLIENT, self.src, self.dst, str(self.port)]
        argv += [str(self.out), str(self.stop), str(STREAM_LIMIT)]
        self.future = pool.submit(lab.exec, self.vm, argv)
        for _ in range(1000):  # until connected (bounded: about 20 s)
            report = self.report()
            if report.get("state") is not None or self.future.done():
                break
            time.sleep(0.02)
        assert self.report().get("state") == "connected", self.describe()

    def report(self) -> dict[str, object]:
        try:
            data: dict[str, object] = json.loads(self.out.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def finish(self) -> dict[str, object]:
        self.stop.touch()
        assert self.future is not None
        done = self.future.result(timeout=60)
        assert done.returncode == 0, f"{self.describe()}: {done.stdout}{done.stderr}"
        return self.report()

    def describe(self) -> str:
        return f"stream {self.src} -> {self.dst} tcp/{self.port}: {self.report()}"


def start_streams(lab: Lab, pool: ThreadPoolExecutor, folder: Path) -> list[Stream]:
    streams = [
        Stream(vm, src, dst, port, folder / f"stream{i}.json", folder / f"stop{i}")
        for i, (vm, src, dst, port) in enumerate(STREAMS)
    ]
    try:
        for stream in streams:
            stream.start(lab, pool)
    except BaseException:
        for stream in streams:  # the pool waits for the clients: stop those that run
            stream.stop.touch()
        raise
    return streams


def assert_streams_survived(streams: list[Stream]) -> None:
    for stream in streams:
        report = stream.finish()
        assert report.get("state") == "done" and report.get("error") is None, stream.describe()
        assert report.get("stopped") is True, stream.describe()  # ran until told to stop
        assert report["sent"] == report["echoed"], stream.describe()
        assert isinstance(report["echoed"], int) and report["echoed"] > 0, stream.describe()


def probe_jobs(lab: Lab, probes: list[Probe], timeout: float) -> list[tuple[Path, ProbeRequest]]:
    """The responder requests for `probes`, resolved once (the probers then never read the
    documents, which `apply` keeps replacing)."""
    catalog, state = lab.catalog(), lab.state()
    jobs = []
    for src, dst, service in probes:
        target = resolve_probe(catalog, src, dst, service)
        assert target.source.workload is not None
        responder = state.vms[target.source.workload.key]
        request = ProbeRequest(
            target.proto, target.source.address, target.destination.address, target.port, timeout
        )
        jobs.append((lab.paths.sockets / responder.socket, request))
    return jobs


@dataclass
class Prober:
    """Threads that keep probing until stopped (or `max_rounds` each) and record results."""

    lab: Lab
    probes: list[Probe]
    loops: int
    timeout: float
    pause: float
    max_rounds: int = 2000
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[tuple[Probe, str, str]] = field(default_factory=list)  # probe, result, detail
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, pool: ThreadPoolExecutor) -> list[Future[None]]:
        jobs = probe_jobs(self.lab, self.probes, self.timeout)
        return [pool.submit(self._loop, jobs, i) for i in range(self.loops)]

    def _loop(self, jobs: list[tuple[Path, ProbeRequest]], index: int) -> None:
        rng = random.Random(SEED + index)
        self.stop.wait(rng.uniform(0, self.timeout))  # spread the loops' first packets
        for _ in range(self.max_rounds):
            if self.stop.is_set():
                return
            try:
                outcomes = responder_client.probe_many(jobs)
            except responder_client.ResponderError as exc:
                with self.lock:
                    self.errors.append(str(exc))
                return
            with self.lock:
                for probe, outcome in zip(self.probes, outcomes, strict=True):
                    self.results.append((probe, outcome.result, outcome.detail))
            self.stop.wait(rng.uniform(0, self.pause))

    def summary(self) -> dict[str, int]:
        with self.lock:
            counts: dict[str, int] = {}
            for probe, result, _ in self.results:
                key = f"{' '.join(probe)} {result}"
                counts[key] = counts.get(key, 0) + 1
            return counts


def table(lab: Lab, host: str) -> object:
    """`inet hyperwall` of `host` as nft JSON, handles kept, counter values zeroed."""
    argv = ["nft", "-j", "list", "table", "inet", "hyperwall"]
    done = subprocess.run(
        ["ip", "netns", "exec", lab.names.host_ns(host), *argv],
        capture_output=True,
        text=True,
        check=True,
    )

    def scrub(value: object) -> object:
        if isinstance(value, dict):
            return {k: ({} if k == "counter" else scrub(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return scrub(json.loads(done.stdout))


def assert_matches_trace(lab: Lab, probes: list[Probe]) -> None:
    catalog = lab.catalog()
    want = [VERDICT_TO_RESULT[trace(catalog, *p).verdict] for p in probes]
    got = lab.probe_many(probes)
    assert list(zip(probes, got, strict=True)) == list(zip(probes, want, strict=True))


# -- the tests ---------------------------------------------------------------------------


def test_kill_and_restart_without_changes_sends_nothing(lab: Lab, tmp_path: Path) -> None:
    hosts = sorted(lab.state().agents)
    with ThreadPoolExecutor(max_workers=4) as pool:
        streams = start_streams(lab, pool, tmp_path)
        try:
            before = {h: table(lab, h) for h in hosts}
            old = {h: lab.kill_agent(h, signal.SIGKILL) for h in hosts}
            assert all(lab.agent_pid(h) is None for h in hosts)
            assert_matches_trace(lab, DENIED + ALLOWED)  # the kernel keeps enforcing
            new = {h: lab.start_agent(h) for h in hosts}
            lab.wait()
        finally:
            for stream in streams:
                stream.stop.touch()
        for host in hosts:
            status = read_status(lab.paths.agent_status(host))
            assert status is not None and status.pid == new[host] != old[host]
            assert status.converged and status.error is None
            assert (status.mode, status.commands) in {("noop", 0), ("sync", 0)}, status
            assert table(lab, host) == before[host], f"{host}: the table changed"
        assert_streams_survived(streams)
    assert_matches_trace(lab, DENIED + ALLOWED)


def test_churn_with_kills_never_opens_a_window(lab: Lab, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    hosts = sorted(lab.state().agents)
    folders = {n: write_set(tmp_path, n) for n in SETS}
    current = "A"
    killed: set[str] = set()
    surprises: list[str] = []  # agents that died without being killed
    log: list[str] = []

    def check_alive() -> None:
        for host in hosts:
            if host not in killed and lab.agent_pid(host) is None:
                surprises.append(f"step {len(log)}: agent {host} died: {agent_log(lab, host)}")
                killed.add(host)  # restart it, keep going, fail at the end

    def apply_next() -> None:
        nonlocal current
        current = "B" if current == "A" else "A"
        lab.apply([folders[current]])
        log.append(f"apply {current}")

    def kill(host: str) -> None:
        pid = lab.kill_agent(host, signal.SIGKILL)
        killed.add(host)
        status = read_status(lab.paths.agent_status(host))
        started = status is not None and status.pid == pid  # else killed while starting
        log.append(f"kill {host}" + ("" if started else " (starting)"))

    def restart(host: str) -> None:
        lab.start_agent(host)
        killed.discard(host)
        log.append(f"start {host}")

    denied = Prober(lab, DENIED, loops=DENIED_LOOPS, timeout=1.0, pause=0.2)
    allowed = Prober(lab, ALLOWED, loops=1, timeout=3.0, pause=0.05)
    with ThreadPoolExecutor(max_workers=len(STREAMS) + DENIED_LOOPS + 1) as pool:
        streams = start_streams(lab, pool, tmp_path)
        probers = denied.run(pool) + allowed.run(pool)
        try:
            for _ in range(STEPS):
                check_alive()
                alive = [h for h in hosts if h not in killed]
                if rng.random() < 0.45 or not alive:
                    apply_next()
                else:
                    kill(rng.choice(alive))
                time.sleep(rng.uniform(0.0, 0.8))  # random moments (nothing is timed)
                # a killed agent comes back after a random while, sometimes after an apply
                # or while the previous documents are being applied; it may be killed again
                # before it is done starting
                for host in sorted(killed):
                    if rng.random() < 0.5:
                        restart(host)
            check_alive()
            for host in sorted(killed):
                restart(host)
            lab.wait()
        finally:
            denied.stop.set()
            allowed.stop.set()
            for stream in streams:
                stream.stop.touch()
            for future in probers:
                future.result(timeout=60)
        assert_streams_survived(streams)

    print("churn:", ", ".join(log))  # shown with the failure, if any
    print("denied:", denied.summary())
    print("allowed:", allowed.summary())
    print("streams:", [s.report() for s in streams])
    opened = [r for r in denied.results if r[1] == "allowed"]
    assert opened == [], f"denied pairs got through: {opened[:10]}; churn: {log}"
    closed = [r for r in allowed.results if r[1] != "allowed"]
    assert closed == [], f"allowed pairs were refused: {closed[:10]}; churn: {log}"
    assert denied.errors == [] and allowed.errors == []
    assert surprises == [], surprises
    assert {p for p, _, _ in denied.results} == set(DENIED)
    assert {p for p, _, _ in allowed.results} == set(ALLOWED)
    assert any(entry.startswith("kill") for entry in log) and "apply B" in log
    # converged to the latest documents (`wait` did; here said once more from the folder)
    expected = agents.expected_hashes(load_catalog([folders[current]]), hosts)
    for host in hosts:
        status = read_status(lab.paths.agent_status(host))
        assert status is not None and status.converged and status.error is None
        assert status.program_hash == expected[host]
    assert_matches_trace(lab, DENIED + ALLOWED + [("10.8.0.4", "10.8.0.3", "icmp/echo-request")])


def agent_log(lab: Lab, host: str) -> str:
    try:
        return lab.paths.agent_log(host).read_text(errors="replace")[-800:]
    except OSError:
        return "(no log)"
