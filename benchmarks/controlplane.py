"""Control-plane benchmark: one label change, from `apply` to every affected agent realized.

Setup, per store (SQLite, then etcd from Debian's etcd-server started here):
- `hyperwall manager` as its own process on loopback;
- the synthetic fleet of `benchmarks/synthetic.py` (FULL: 10,000 workloads on 100 hosts,
  1,000 groups, 1,000 policies, 10,000 rules) applied as one revision;
- 100 simulated agents, one per host, in `--procs` processes: each is the real agent's
  manager client (`ManagerSource`: long-poll, whole program then deltas, digest check,
  on-disk cache with its delta log) and reports its status (`PUT /status`) as soon as it
  holds a new program: everything a real agent does except programming the kernel.

Measured:
- initial apply of the whole fleet, and the time until all 100 agents hold their programs;
- `--changes` label changes of single workloads that move them between groups, one at a
  time: the apply call, and for each host the change made (`hostsChanged`), the time from
  just before the apply call to the agent's status report (wall clock, same machine), and
  to when the agent received the change ("delivered": the manager's part, before the
  agent's own decode, digest check, cache write and report).
  "fleet-wide" = the slowest affected agent of a change; p50/p99 over changes;
- apply throughput: `--burst` label changes applied back to back by one client, and the
  time until every agent reports the last one.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.compile import label_changes
from benchmarks.results_file import write_section
from benchmarks.synthetic import FULL, QUICK, TINY, FleetShape, generate
from hyperwall.agent.manager_source import Client, ManagerSource, StatusReport
from hyperwall.client.api import ClientError, ManagerClient
from hyperwall.lab.etcd import EtcdProcess, free_port
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "benchmarks.md"
SHAPES = {"full": FULL, "quick": QUICK, "tiny": TINY}
ETCD_FLAGS = (
    "--max-txn-ops=30000",
    "--max-request-bytes=67108864",
    "--quota-backend-bytes=8589934592",
)

# host, revision, wall-clock times: the manager's answer received, the status report sent
Report = tuple[str, int, float, float]


class TimedSource(ManagerSource):
    """The agent's manager client, noting when each answer arrived."""

    received = 0.0
    first_revision = -2

    def accept(self, answer: dict[str, Any]) -> bool:
        self.received = time.time()
        if answer.get("program") is not None:
            self.first_revision = answer.get("revision", -2)
        return super().accept(answer)


# -- simulated agents (each process runs several, one thread pair per agent) ---------------


def _agents_main(
    server: str, agents: list[tuple[str, str]], cache: str, out: Any, stop: Any
) -> None:
    sources = []
    for host, token in agents:
        source = TimedSource(server, token, host, Path(cache) / host, wait_seconds=30.0)
        client = Client(server, token, host)

        def changed(source: TimedSource = source, client: Client = client) -> None:
            held = source.current
            if held is None:
                return
            if held.revision == source.first_revision:  # a whole program arrived: as the
                gc.freeze()  # agent does, keep its millions of objects out of the collector
            report = StatusReport(
                held.revision, held.digest_text, True, None, len(held.program.endpoints)
            )
            for _ in range(5):
                try:
                    client.put("status", report.to_json())
                    break
                except Exception:
                    time.sleep(0.2)
            out.put((source.host, held.revision, source.received, time.time()))

        source.start(changed)
        sources.append(source)
    stop.wait()
    for source in sources:
        source.stop(timeout=0.1)


@dataclass
class Agents:
    ctx: Any
    out: Any
    stop: Any
    procs: list[Any] = field(default_factory=list)
    latest: dict[str, tuple[int, float]] = field(default_factory=dict)
    log: list[Report] = field(default_factory=list)

    @classmethod
    def start(cls, server: str, tokens: dict[str, str], cache: Path, procs: int) -> Agents:
        ctx = mp.get_context("spawn")
        agents = cls(ctx, ctx.Queue(), ctx.Event())
        items = sorted(tokens.items())
        for i in range(procs):
            part = items[i::procs]
            if part:
                p = ctx.Process(
                    target=_agents_main, args=(server, part, str(cache), agents.out, agents.stop)
                )
                p.start()
                agents.procs.append(p)
        return agents

    def drain(self, timeout: float) -> None:
        try:
            item = self.out.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            host, revision, got, at = item
            self.log.append((host, revision, got, at))
            if revision >= self.latest.get(host, (-1, 0.0))[0]:
                self.latest[host] = (revision, at)
            try:
                item = self.out.get_nowait()
            except queue.Empty:
                return

    def wait_all(
        self, hosts: Sequence[str], revision: int, deadline: float
    ) -> dict[str, tuple[float, float]]:
        """Wait until every host reported `revision` (or later): when each first received
        it and reported it (a later revision's report counts: it holds that change too)."""
        end = time.monotonic() + deadline
        while True:
            first: dict[str, tuple[float, float]] = {}
            for host, rev, got, at in self.log:
                if host in hosts and rev >= revision and host not in first:
                    first[host] = (got, at)
            if len(first) == len(set(hosts)):
                return first
            if time.monotonic() > end:
                missing = sorted(set(hosts) - set(first))
                raise TimeoutError(
                    f"{len(missing)} agents never reported {revision}: {missing[:5]}"
                )
            self.drain(0.05)

    def close(self) -> None:
        self.stop.set()
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()


# -- the manager ---------------------------------------------------------------------------


@dataclass
class Manager:
    proc: subprocess.Popen[bytes]
    url: str
    token: str

    @classmethod
    def start(cls, store: str, work: Path) -> Manager:
        port = free_port()
        token_file = work / "admin.token"
        argv = [sys.executable, "-m", "hyperwall", "manager", "--listen", f"127.0.0.1:{port}"]
        argv += ["--store", store, "--bootstrap-token-file", str(token_file)]
        with (work / "manager.log").open("ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"the manager exited: {(work / 'manager.log').read_text()}")
            if token_file.exists():
                try:
                    with ManagerClient(url, None, timeout=1) as c:
                        c.request("GET", "/v1/healthz")
                    return cls(proc, url, token_file.read_text().strip())
                except ClientError:
                    pass
            time.sleep(0.1)
        proc.kill()
        raise RuntimeError("the manager did not come up")

    def client(self, timeout: float = 600.0) -> ManagerClient:
        return ManagerClient(self.url, self.token, timeout=timeout)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the changes ---------------------------------------------------------------------------


def relabel_documents(
    documents: list[dict[str, Any]], count: int, seed: int
) -> list[tuple[dict[str, Any], str]]:
    """`count` Workload documents, each with one label changed so that the workload moves
    between groups (the same choice as the compile benchmark's label changes)."""
    catalog = build_catalog((d, Source("bench", i)) for i, d in enumerate(documents))
    groups = list(catalog.config.groups.values())
    picked = label_changes(catalog.workloads, groups, count, random.Random(seed))
    by_key = {
        (d["metadata"].get("tenant"), d["metadata"]["name"]): d
        for d in documents
        if d["kind"] == "Workload"
    }
    out = []
    for new, what in picked:
        doc = by_key[(new.tenant, new.name)]
        changed = {**doc, "metadata": {**doc["metadata"], "labels": dict(new.labels)}}
        out.append((changed, what))
    return out


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class StoreResult:
    store: str
    initial_apply: float = 0.0
    initial_sync: float = 0.0
    apply_calls: list[float] = field(default_factory=list)
    fleet_wide: list[float] = field(default_factory=list)
    per_agent: list[float] = field(default_factory=list)
    delivered: list[float] = field(default_factory=list)  # last affected agent received it
    affected: list[int] = field(default_factory=list)
    burst: int = 0
    burst_apply: float = 0.0
    burst_realized: float = 0.0


def run_store(
    kind: str, documents: list[dict[str, Any]], args: argparse.Namespace, work: Path
) -> StoreResult:
    result = StoreResult(kind)
    etcd: EtcdProcess | None = None
    if kind == "etcd":
        etcd = EtcdProcess.start(work / "etcd", extra_args=ETCD_FLAGS)
        store = f"etcd://127.0.0.1:{etcd.port}/bench?max_txn_ops=30000&timeout=120"
    else:
        store = f"sqlite:///{work / 'manager.db'}"
    manager = Manager.start(store, work)
    agents: Agents | None = None
    try:
        with manager.client() as c:
            t = time.perf_counter()
            first = c.apply(documents, message="the fleet").revision
            result.initial_apply = time.perf_counter() - t
            hosts = sorted({d["spec"]["host"] for d in documents if d["kind"] == "Workload"})
            tokens = {h: c.create_token("agent", host=h).token for h in hosts}
        print(f"[{kind}] fleet applied in {result.initial_apply:.1f} s", flush=True)
        t0 = time.time()
        agents = Agents.start(manager.url, tokens, work / "agents", args.procs)
        synced = agents.wait_all(hosts, first, deadline=1800)
        result.initial_sync = max(at for _, at in synced.values()) - t0
        print(f"[{kind}] {len(hosts)} agents synced in {result.initial_sync:.1f} s", flush=True)
        changes = relabel_documents(documents, args.changes + args.burst, args.seed)
        with manager.client() as c:
            for doc, what in changes[: args.changes]:
                time.sleep(args.pause)
                agents.drain(0)
                t0 = time.time()
                t = time.perf_counter()
                answer = c.apply([doc], message=what)
                result.apply_calls.append(time.perf_counter() - t)
                revision, touched = answer.revision, answer.hostsChanged
                reported = agents.wait_all(touched, revision, deadline=300)
                delays = [at - t0 for _, at in reported.values()]
                result.per_agent += delays
                result.fleet_wide.append(max(delays, default=0.0))
                got = [g - t0 for g, _ in reported.values()]
                result.delivered.append(max(got, default=0.0))
                result.affected.append(len(touched))
                print(
                    f"[{kind}] r{revision} {what}: {len(touched)} hosts, "
                    f"fleet-wide {max(delays, default=0) * 1000:.0f} ms",
                    flush=True,
                )
            burst = changes[args.changes :]
            t0 = time.time()
            last = 0
            for doc, what in burst:
                last = c.apply([doc], message=what).revision
            result.burst = len(burst)
            result.burst_apply = time.time() - t0
            if burst:
                reported = agents.wait_all(hosts, last, deadline=600)
                result.burst_realized = max(at for _, at in reported.values()) - t0
    finally:
        if agents is not None:
            agents.close()
        manager.stop()
        if etcd is not None:
            etcd.stop()
    return result


# -- the report ----------------------------------------------------------------------------


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def counts(documents: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in documents:
        out[d["kind"]] = out.get(d["kind"], 0) + 1
        if d["kind"] == "Policy":
            out["rules"] = out.get("rules", 0) + len(d["spec"].get("rules", []))
    return out


def report(shape: FleetShape, stats: dict[str, int], results: list[StoreResult], args: Any) -> str:
    lines = [
        "## Control plane",
        "",
        "`benchmarks/controlplane` (see `benchmarks/controlplane.py`). Fleet: "
        f"{stats.get('Workload', 0):,} workloads on {shape.hosts} hosts, "
        f"{stats.get('Group', 0):,} groups, {stats.get('Policy', 0):,} policies, "
        f"{stats.get('rules', 0):,} rules; {shape.hosts} simulated agents (the real agent's "
        f"manager client: long-poll, program then deltas, digest check, on-disk cache; "
        f"no kernel) in {args.procs} processes, manager and agents on this 2-vCPU machine. "
        f"{args.changes} single-workload label changes that move the workload between groups, "
        f"one at a time ({args.pause:g} s apart); then {args.burst} back to back.",
        "",
        f"| store | fleet apply | {shape.hosts} agents synced | apply call p50 | delivered "
        "fleet-wide p50 | p99 | realized fleet-wide p50 | p99 | max | per agent p50 | p99 | "
        "hosts changed (median) | burst: applies/s | burst realized |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rate = r.burst / r.burst_apply if r.burst_apply else 0.0
        lines.append(
            f"| {r.store} | {r.initial_apply:.1f} s | {r.initial_sync:.1f} s | "
            f"{fmt_ms(pct(r.apply_calls, 50))} | {fmt_ms(pct(r.delivered, 50))} | "
            f"{fmt_ms(pct(r.delivered, 99))} | {fmt_ms(pct(r.fleet_wide, 50))} | "
            f"{fmt_ms(pct(r.fleet_wide, 99))} | {fmt_ms(max(r.fleet_wide, default=0))} | "
            f"{fmt_ms(pct(r.per_agent, 50))} | {fmt_ms(pct(r.per_agent, 99))} | "
            f"{statistics.median(r.affected) if r.affected else 0:g} | {rate:.1f} | "
            f"{r.burst_realized:.1f} s |"
        )
    lines += ["", "Target: one change realized fleet-wide in < 1 s p99.", ""]
    for r in results:
        p99 = pct(r.fleet_wide, 99)
        verdict = "pass" if p99 < 1.0 else "**FAIL**"
        lines.append(f"- {r.store}: p99 {fmt_ms(p99)}: {verdict}")
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="full")
    parser.add_argument("--stores", default="sqlite,etcd")
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.3)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="print, do not write the docs")
    args = parser.parse_args(argv)
    shape = SHAPES[args.shape]
    fleet = generate(shape)
    results = []
    for kind in args.stores.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"hwcp-{kind}-"))
        try:
            results.append(run_store(kind, fleet.documents, args, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    text = report(shape, counts(fleet.documents), results, args)
    print(text)
    if args.shape == "full" and not args.no_write:
        write_section(RESULTS, text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
