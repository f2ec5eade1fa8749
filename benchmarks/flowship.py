"""Benchmark of flow record shipping and the manager's flow store: `benchmarks/flowship`.

Measured in one run, each against the floor it cannot beat on this machine:

1. store: batches of 1,000 records into a fresh flow database (`manager.flow_db`: the row,
   four indexes, the host's position, one transaction per batch), records/s; floor: the
   same rows with one `executemany` per batch into a table without indexes or positions.
2. ship: a flow log of `--records` records written by the agent's writer (rotating at
   4 MiB), shipped by `FlowShipper` to a real `hyperwall manager` process (SQLite store)
   until all are stored: records/s end to end, and the agent side's CPU per record
   (`process_time` of this process, which runs only the shipper); floor: reading and
   decoding the same files with the `Tailer` alone (no HTTP, no store).
3. query: `GET /v1/flows?tenant=acme&limit=100` on the manager holding the shipped records
   plus the stored ones, median of 20; floor: `GET /v1/healthz` (one HTTP round trip).

Results are printed and written as the section `## Flow shipping (benchmarks/flowship)` of
`docs/benchmarks.md`, with the machine's load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.results_file import write_section
from hyperwall.agent.flow_shipper import FlowShipper
from hyperwall.agent.manager_source import Client
from hyperwall.flows.batch import MAX_BYTES, MAX_RECORDS
from hyperwall.flows.filter import us_time
from hyperwall.flows.record import from_json
from hyperwall.flows.tail import Position, Tailer
from hyperwall.flows.writer import FlowLogWriter
from hyperwall.manager import flow_db

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Flow shipping (benchmarks/flowship)"
T0 = 1_796_000_000_000_000
WORKLOADS = ["acme/db-1", "acme/web-1", "acme/app-1", "globex/api-1", "globex/db-1", "dns-1"]


def record(n: int, host: str = "hv1") -> dict[str, Any]:
    workload = WORKLOADS[n % len(WORKLOADS)]
    tenant = workload.split("/")[0] if "/" in workload else "provider"
    return {
        "time": us_time(T0 + n * 10),
        "host": host,
        "workload": workload,
        "direction": "in" if n % 2 else "out",
        "action": "drop" if n % 3 else "allow",
        "rule": f"{tenant}/policy-{n % 7}/rule-{n % 5}",
        "src": f"10.1.{n % 250}.{n % 200 + 1}",
        "dst": "10.1.0.41",
        "proto": "tcp",
        "sport": 30000 + n % 30000,
        "dport": 5432,
    }


@dataclass
class Results:
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    store_rate: float = 0.0
    store_floor: float = 0.0
    ship_rate: float = 0.0
    ship_floor: float = 0.0
    agent_cpu_us: float = 0.0
    shipped: int = 0
    batches: int = 0
    query_ms: float = 0.0
    health_ms: float = 0.0
    rows: int = 0
    notes: list[str] = field(default_factory=list)


def bench_store(folder: Path, batches: int) -> tuple[float, float]:
    """(records/s into the flow store, records/s of the plain-insert floor)."""
    rows = [[record(b * MAX_RECORDS + i) for i in range(MAX_RECORDS)] for b in range(batches)]
    conn = flow_db.connect(str(folder / "store.db"))
    start = time.perf_counter()
    for b, batch in enumerate(rows):
        flow_db.store_batch(conn, "hv1", "f", b, b + 1, batch)
    store = batches * MAX_RECORDS / (time.perf_counter() - start)
    conn.close()
    floor_db = sqlite3.connect(str(folder / "floor.db"), isolation_level=None)
    floor_db.execute("PRAGMA journal_mode = WAL")
    floor_db.execute("PRAGMA synchronous = NORMAL")
    floor_db.execute("CREATE TABLE f (id INTEGER PRIMARY KEY, record TEXT)")
    start = time.perf_counter()
    for batch in rows:
        floor_db.execute("BEGIN")
        floor_db.executemany("INSERT INTO f (record) VALUES (?)", [(json.dumps(r),) for r in batch])
        floor_db.execute("COMMIT")
    floor = batches * MAX_RECORDS / (time.perf_counter() - start)
    floor_db.close()
    return store, floor


def write_log(path: Path, count: int) -> None:
    with FlowLogWriter(path, max_bytes=4 * 1024 * 1024, backups=1000) as writer:
        for first in range(0, count, 1000):
            writer.write([from_json(record(n)) for n in range(first, min(count, first + 1000))])


def read_floor(path: Path, state: Path) -> float:
    """Records/s of reading and decoding the files with the Tailer alone."""
    tailer = Tailer(path, state / "floor-cursor.json")
    start = time.perf_counter()
    n = 0
    while (chunk := tailer.read(MAX_RECORDS, MAX_BYTES)) is not None:
        n += len(chunk.records)
        tailer.position = Position(chunk.file, chunk.end)
    return n / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ManagerProcess:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        script = Path(sys.executable).parent / "hyperwall"
        argv = [str(script)] if script.exists() else [sys.executable, "-m", "hyperwall"]
        self.log = open(folder / "manager.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            [
                *argv,
                "manager",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--store",
                f"sqlite:///{folder / 'store.db'}",
                "--bootstrap-token-file",
                str(folder / "admin.token"),
            ],
            stdout=self.log,
            stderr=self.log,
        )
        until(self._up, "the manager to answer")
        self.admin = (folder / "admin.token").read_text().strip()
        self.http = httpx.Client(  # one connection, kept: the timings are the requests'
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin}"}, timeout=60
        )

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError((self.folder / "manager.log").read_text())
        try:
            return httpx.get(self.url + "/v1/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def call(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.http.request(method, path, json=body)
        answer.raise_for_status()
        return answer.json() if answer.content else None

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def until(check: Callable[[], bool], what: str, deadline: float = 120.0) -> None:
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def median_ms(fn: Callable[[], object], times: int = 20) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def run_benchmark(records: int, store_batches: int) -> Results:
    results = Results(load=os.getloadavg())
    folder = Path(tempfile.mkdtemp(prefix="hwd-flowship-"))
    try:
        results.store_rate, results.store_floor = bench_store(folder, store_batches)
        log = folder / "agent" / "flows.jsonl"
        state = folder / "agent" / "state"
        state.mkdir(parents=True)
        write_log(log, records)
        results.ship_floor = read_floor(log, state)
        (folder / "manager").mkdir()
        manager = ManagerProcess(folder / "manager")
        try:
            token = manager.call("POST", "/v1/tokens", {"role": "agent", "host": "hv1"})["token"]
            shipper = FlowShipper(Client(manager.url, token, "hv1"), "hv1", log, state)
            cpu, wall = time.process_time(), time.perf_counter()
            while shipper.step():
                pass
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            results.shipped, results.batches = shipper.counts.shipped, shipper.counts.batches
            if results.shipped != records:
                results.notes.append(f"shipped {results.shipped} of {records} records")
            results.ship_rate = results.shipped / wall
            results.agent_cpu_us = cpu / max(1, results.shipped) * 1e6
            page = manager.call("GET", "/v1/flows?limit=1")
            results.rows = page["cursor"]
            results.query_ms = median_ms(
                lambda: manager.call("GET", "/v1/flows?tenant=acme&limit=100")
            )
            results.health_ms = median_ms(lambda: manager.call("GET", "/v1/healthz"))
        finally:
            manager.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def render_section(r: Results, records: int, store_batches: int) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.1f}" for x in r.load)
    lines = [
        SECTION,
        "",
        f"Measured {when}, load average {load} (2 shared vCPUs; other sessions' work runs"
        " beside it). One run; every rate is taken against its floor in the same run.",
        "",
        "| what | measured | floor in the same run | ratio |",
        "|---|---|---|---|",
        f"| flow store: batches of {MAX_RECORDS:,} records ({store_batches * MAX_RECORDS:,}"
        f" in all) | {r.store_rate:,.0f} records/s | {r.store_floor:,.0f} records/s (plain"
        f" insert, no index) | {r.store_rate / r.store_floor:.2f} |",
        f"| shipping {r.shipped:,} records in {r.batches} batches, agent to a manager process"
        f" | {r.ship_rate:,.0f} records/s | {r.ship_floor:,.0f} records/s (reading and"
        f" decoding the files alone) | {r.ship_rate / r.ship_floor:.2f} |",
        f"| agent CPU per shipped record | {r.agent_cpu_us:.1f} µs | | |",
        f"| `GET /v1/flows?tenant=acme&limit=100` over {r.rows:,} rows | {r.query_ms:.1f} ms"
        f" median of 20 | {r.health_ms:.1f} ms (`/v1/healthz`) | {r.query_ms / r.health_ms:.1f}"
        " |",
        "",
        "The store's cost over the floor is its four indexes (time, tenant, workload, rule)"
        " and the per-host position written in the same transaction. Shipping is bound by the"
        " manager: one batch in flight per agent, each a request, a validation of every record"
        " and one SQLite transaction; an agent catching up after an outage ships at this rate"
        " while it keeps logging.",
    ]
    lines += [f"- {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--records", type=int, default=50_000, help="records to ship")
    parser.add_argument("--store-batches", type=int, default=100, help="batches of 1,000")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    results = run_benchmark(args.records, args.store_batches)
    section = render_section(results, args.records, args.store_batches)
    print(section)
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", section)


if __name__ == "__main__":
    main()
