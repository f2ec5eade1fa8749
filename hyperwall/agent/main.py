"""`hyperwall agent`: the per-host process, and its composition root.

Wires the inputs (policy folder poller or the manager watch, resync timer) to the work
queue and runs the one worker. With a manager (`ManagerConfig`), a hook after each
reconcile reports the status and the host's inventory to it (`manager_source.Reporter`);
with `--libvirt` too, the domains it discovered (`libvirt_source.discovered_report`), which
the manager commits as the host's workloads. Every `hits_seconds` the worker reads the
per-rule hit counters (`agent.hits`) into `STATE_DIR/hits.json` and reports them.
Runs inside the host's network namespace (its nftables context binds there). On
SIGTERM/SIGINT it stops and leaves the kernel table as it is: enforcement goes on.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from hyperwall.agent.compiling import LocalCompiler
from hyperwall.agent.connection_log import ConnectionLog
from hyperwall.agent.control import ControlServer
from hyperwall.agent.flow_shipper import FlowShipper
from hyperwall.agent.flow_sink import FlowSink
from hyperwall.agent.flowlog import FlowLog
from hyperwall.agent.handover import HandoverReceiver
from hyperwall.agent.hits import HitReader, load_tracker, save_tracker
from hyperwall.agent.libvirt_source import (
    DiscoveringFolder,
    Localized,
    discovered_report,
    write_domains,
)
from hyperwall.agent.manager_source import (
    ManagerSource,
    Reporter,
    StatusReport,
    host_inventory,
    revision_of,
)
from hyperwall.agent.metrics import AgentMetrics, FlowCounts, KernelDrops, Sources
from hyperwall.agent.migration import IncomingOverlay, Migrations
from hyperwall.agent.policydir import PolicyDir
from hyperwall.agent.reconciler import ProgramLoader, Reconciler
from hyperwall.agent.status import read_status
from hyperwall.agent.trace_worker import TraceWorker
from hyperwall.agent.workqueue import WorkQueue
from hyperwall.attachment import Attachment
from hyperwall.dataplane.conntrack.strict import strict_tcp_here
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.kernel import NftKernel
from hyperwall.dataplane.nft.render import Options
from hyperwall.hypervisor.watcher import RELIST, DomainWatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    """Where the desired state comes from when it is the manager (`--server`)."""

    server: str
    token: str
    cache_dir: Path
    verify_tls: bool = True
    wait_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class AgentConfig:
    host: str
    policy_dir: Path | None  # exactly one of policy_dir and manager
    state_dir: Path
    vm_prefix: str = "hwt"
    poll_seconds: float = 0.2
    resync_seconds: float = 30.0
    max_backoff: float = 10.0
    mode: Attachment = "routed"  # how VMs attach: render.Options.mode
    libvirt: str | None = None  # libvirt URI: this host's VMs come from its hypervisor
    handover_listen: str | None = None  # IP:PORT: accept migrating VMs' connection state
    manager: ManagerConfig | None = None
    hits_seconds: float = 10.0  # per-rule hit counters read every so often (0: never)
    flow_summary_seconds: float = 10.0  # suppressed-record summaries (agent.flowlog)
    flow_log: Path | None = None  # the flow log (agent.flowlog); shipped when following a manager
    metrics_listen: str | None = None  # HOST:PORT of /metrics (agent.metrics)


def _poll(queue: WorkQueue, source: PolicyDir, stop: threading.Event, every: float) -> None:
    last = None
    while not stop.wait(every):
        current = source.fingerprint()
        if current != last:
            last = current
            queue.add("policy")


def _tick(queue: WorkQueue, stop: threading.Event, every: float, key: str = "resync") -> None:
    while not stop.wait(every):
        queue.add(key)


AfterReconcile = Callable[[Reconciler], None]


def _manager_hook(config: AgentConfig, source: ManagerSource, reporter: Reporter) -> AfterReconcile:
    """After each reconcile: PUT the status; the inventory when the revision changed (not
    with `--libvirt`: there the discovered domains are the host's inventory)."""
    inventory_of: list[int] = []  # the revision whose inventory was last queued
    frozen: list[int] = []  # the digest of the program last moved out of the collector

    def after(reconciler: Reconciler) -> None:
        current = source.current
        if current is not None and frozen != [current.digest] and reconciler.synced:
            # a new program is in force: keep its objects (100k+ for a big host) out of the
            # collector's full passes, which otherwise pause the agent for ~0.5 s
            frozen[:] = [current.digest]
            gc.freeze()
        if config.libvirt is None and current is not None and inventory_of != [current.revision]:
            inventory_of[:] = [current.revision]
            reporter.inventory(host_inventory(current.program))
        status = read_status(reconciler.status_path)
        if status is None:
            return
        reporter.status(
            StatusReport(
                revision=revision_of(reconciler.policy_hash) or 0,
                program_hash=status.program_hash,
                converged=status.converged,
                error=status.error,
                endpoints=status.endpoints,
            )
        )

    return after


HITS = "hits"


def _read_hits(reader: HitReader, path: Path, reporter: Reporter | None) -> None:
    """Read the hit counters, keep them in `path`, report them to the manager."""
    read_at = time.time()
    try:
        if not reader.read(read_at):
            return
    except Exception as exc:  # a failed listing: the next period tries again
        log.warning("reading hit counters failed: %s", exc)
        return
    save_tracker(path, reader.tracker, read_at)
    if reporter is not None:
        reporter.hits({"read": read_at, "rules": reader.tracker.report()})


def run_agent(config: AgentConfig) -> None:
    backend = NftBackend(NftKernel(), Options(vm_prefix=config.vm_prefix, mode=config.mode))
    queue = WorkQueue()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    after_reconcile: AfterReconcile | None = None
    reporter: Reporter | None = None
    tracer: TraceWorker | None = None  # live traces (`trace --live`), with a manager only
    manager_source: ManagerSource | None = None
    load: ProgramLoader
    overlay: IncomingOverlay | None = None  # VMs migrating here (policy folder only)
    watcher: DomainWatcher | None = None
    discovering: DiscoveringFolder | None = None
    if config.libvirt is not None:
        watcher = DomainWatcher(
            config.libvirt,
            config.host,
            lambda name: queue.add(f"domain:{name}"),
            config.max_backoff,
        )
    if config.manager is not None:
        m = config.manager
        manager_source = ManagerSource(
            m.server,
            m.token,
            config.host,
            m.cache_dir,
            m.verify_tls,
            m.wait_seconds,
            config.max_backoff,
        )
        reporter = Reporter(manager_source.client, config.max_backoff)
        after_reconcile = _manager_hook(config, manager_source, reporter)
        tracer = TraceWorker(
            manager_source.client, lambda: (backend.program, backend.state), backend.options
        )
        load = manager_source.load
    elif config.policy_dir is not None:
        source = PolicyDir(config.policy_dir)
        if watcher is not None:
            discovering = DiscoveringFolder(source, watcher, config.host)
            overlay = IncomingOverlay(discovering.load, config.host)
        else:
            overlay = IncomingOverlay(source.load, config.host)
        load = LocalCompiler(overlay.load, config.host)
        threads.append(
            threading.Thread(
                target=_poll, args=(queue, source, stop, config.poll_seconds), daemon=True
            )
        )
    else:
        raise ValueError("AgentConfig needs a policy_dir or a manager")
    localized: Localized | None = None
    if watcher is not None:
        load = localized = Localized(load, watcher, config.vm_prefix)
    reconciler = Reconciler(config.host, load, backend, config.state_dir / "status.json")
    hits_path = config.state_dir / "hits.json"
    # a libnftables context of its own: listing sets fills a context's cache, which the
    # backend's next transaction would then have to revalidate
    hits = HitReader(backend, load_tracker(hits_path), NftKernel())
    if config.hits_seconds > 0:
        threads.append(
            threading.Thread(
                target=_tick, args=(queue, stop, config.hits_seconds, HITS), daemon=True
            )
        )
    shipper: FlowShipper | None = None
    if manager_source is not None and config.flow_log is not None:
        shipper = FlowShipper(
            manager_source.client,
            config.host,
            config.flow_log,
            config.state_dir,
            config.max_backoff,
        )
    flow_counts = FlowCounts()  # the flow log counts its records here
    sink = FlowSink(config.flow_log, flow_counts) if config.flow_log is not None else None
    connections = None
    if sink is not None:  # a record per managed connection that ends (agent.connection_log)
        connections = ConnectionLog(config.host, lambda: backend.program, sink.write)
    flowlog: FlowLog | None = None
    if sink is not None:  # a record per logged decision, from NFLOG (agent.flowlog)
        flowlog = FlowLog(
            config.host,
            lambda: backend.program,
            backend.options,
            sink.write,
            config.state_dir / "flowlog.json",
            config.flow_summary_seconds,
            counts=flow_counts,
        )
    metrics: AgentMetrics | None = None
    if config.metrics_listen is not None:
        sources = Sources(
            reconciler,
            manager_source,
            hits,
            shipper.counts if shipper else None,
            flow_counts,
            connections,
        )
        metrics = AgentMetrics(sources, KernelDrops(NftKernel))
        metrics.serve(config.metrics_listen)
    strict_tcp_here()  # a moved connection survives by its handed-over state, not by luck
    migrations = Migrations(
        config.host, overlay, None, lambda: queue.add("policy"), lambda: backend.program
    )
    migrations.discovers = watcher is not None
    if config.handover_listen is not None:
        migrations.receiver = HandoverReceiver(config.handover_listen, migrations.apply)
        migrations.receiver.start()
    control = ControlServer(config.state_dir / "control.sock", migrations.handle)
    control.start()

    def shutdown(signum: int, frame: FrameType | None) -> None:
        stop.set()
        queue.close()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    threads.append(
        threading.Thread(target=_tick, args=(queue, stop, config.resync_seconds), daemon=True)
    )
    for t in threads:
        t.start()
    if manager_source is not None and reporter is not None:
        reporter.start()
        manager_source.start(lambda: queue.add("policy"))
    if tracer is not None:
        tracer.start()
    if shipper is not None:
        shipper.start()
    if connections is not None:
        connections.start()
    if flowlog is not None:
        flowlog.start()
    if watcher is not None:
        watcher.start()
    queue.add("policy")
    failures: dict[str, int] = {}
    last_discovered: list[dict[str, Any]] = []  # the last discovered report queued
    while not stop.is_set():
        key = queue.get(timeout=1.0)
        if key is None:
            continue
        if key == HITS:  # on this thread: the backend's nftables context is not shared
            try:
                _read_hits(hits, hits_path, reporter)
            finally:
                queue.done(key)
            continue
        try:
            if watcher is not None and key.startswith("domain:"):
                watcher.refresh(key.removeprefix("domain:"))  # level-triggered: read it again
            elif watcher is not None and key == "resync":
                watcher.refresh(RELIST)  # the safety net for missed events
            started = time.monotonic()
            ok = reconciler.reconcile("policy" if key.startswith("domain:") else key)
            if metrics is not None:
                trigger = key.split(":", 1)[0]  # never a domain's name: bounded labels
                status = read_status(reconciler.status_path)
                metrics.observe_reconcile(trigger, time.monotonic() - started, status)
            if watcher is not None:
                report = write_domains(
                    config.state_dir / "domains.json", watcher, discovering, localized
                )
                if reporter is not None and watcher.listed:  # on change and every resync
                    found = discovered_report(watcher, report)
                    if key == "resync" or last_discovered != [found]:
                        last_discovered[:] = [found]
                        reporter.discovered(found)
        finally:
            queue.done(key)
        if after_reconcile is not None:
            after_reconcile(reconciler)
        if ok:
            failures.pop(key, None)
        else:
            failures[key] = failures.get(key, 0) + 1
            queue.add_after(key, min(config.max_backoff, 0.2 * 2 ** failures[key]))
    if manager_source is not None and reporter is not None:
        manager_source.stop(timeout=1.0)
        reporter.stop(timeout=1.0)
    if tracer is not None:
        tracer.stop(timeout=1.0)
    if shipper is not None:
        shipper.stop(timeout=1.0)
    if connections is not None:
        connections.stop(timeout=1.0)
    if flowlog is not None:
        flowlog.stop(timeout=1.0)
    if sink is not None:
        sink.close()
    if metrics is not None:
        metrics.stop()
    if watcher is not None:
        watcher.stop()
    control.stop()
    if migrations.receiver is not None:
        migrations.receiver.stop()
