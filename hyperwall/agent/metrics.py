"""The agent's Prometheus metrics (`--metrics-listen ADDR`): one registry per agent, served
by prometheus-client's HTTP server on its own thread.

Two kinds of values:

- observed by the worker as it goes (`observe_reconcile`): how long each reconcile took
  (`hyperwall_agent_sync_duration_seconds{trigger}`), and for those that changed the
  kernel the nftables transaction's size in commands and its time;
- read when scraped (`collect`, on the server's thread): the revision and whether it is in
  force, digest mismatches of the manager's programs, drops by reason (`nft.drops`: the
  kernel counters of the `spoofed` and `misdirected` chains, listed through a libnftables
  context of the metrics thread's own, and the per-rule hit totals of `agent.hits` for
  `rule` and `default`), the conntrack table's fill (this namespace's
  `nf_conntrack_count` / `nf_conntrack_max`), and the flow log's counts (records written
  and suppressed: `FlowCounts`, which the flow log fills; shipped, failed and skipped: the
  shipper's `ShipCounts`), and the connection log's (open connections, records, events
  dropped, overrun or unpaired: `agent.connection_log`).

Labels are bounded by design: a trigger, a reason, an outcome. Nothing per connection,
address, VM or rule (per-rule numbers are `hyperwall stats`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from hyperwall.agent.connection_log import ConnectionLog
from hyperwall.agent.flow_shipper import ShipCounts
from hyperwall.agent.hits import HitReader
from hyperwall.agent.manager_source import ManagerSource, revision_of
from hyperwall.agent.reconciler import Reconciler
from hyperwall.agent.status import AgentStatus
from hyperwall.dataplane.nft.drops import DROP_CHAINS, chain_drops, policy_drops

log = logging.getLogger(__name__)

CONNTRACK = Path("/proc/sys/net/netfilter")
SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
COMMANDS = (1, 10, 100, 1000, 10_000, 100_000, 1_000_000)


@dataclass
class FlowCounts:
    """What the flow log did since the agent started; the flow log increments these."""

    written: int = 0  # records written to the flow log file
    suppressed: int = 0  # records the kernel's per-rule rate limit suppressed (counted)


@dataclass
class Sources:
    """Where the scraped values come from; None: that part does not run in this agent."""

    reconciler: Reconciler | None = None
    manager: ManagerSource | None = None
    hits: HitReader | None = None
    shipper: ShipCounts | None = None
    flows: FlowCounts | None = None
    connections: ConnectionLog | None = None


def conntrack_fill(directory: Path = CONNTRACK) -> tuple[int, int] | None:
    """(entries, maximum) of this network namespace's conntrack table."""
    try:
        count = int((directory / "nf_conntrack_count").read_text())
        maximum = int((directory / "nf_conntrack_max").read_text())
    except (OSError, ValueError):
        return None
    return count, maximum


class KernelDrops:
    """The `spoofed`/`misdirected` chains' counters, through a context of its own (the
    worker's is not shared), created on first use in this process's namespace."""

    def __init__(self, make_kernel: Callable[[], Any]) -> None:
        self._make = make_kernel
        self._kernel: Any = None
        self._lock = threading.Lock()

    def read(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            if self._kernel is None:
                self._kernel = self._make()
            for chain in DROP_CHAINS:
                try:
                    listing = self._kernel.command(f"list chain inet hyperwall {chain}")
                except Exception:  # no table yet, or bridge mode: no such chain
                    continue
                out[chain] = chain_drops(json.loads(listing))
        return out


class AgentMetrics(Collector):
    def __init__(self, sources: Sources, kernel_drops: KernelDrops | None = None) -> None:
        self.sources = sources
        self.kernel_drops = kernel_drops
        self.registry = CollectorRegistry(auto_describe=True)
        self.sync_seconds = Histogram(
            "hyperwall_agent_sync_duration_seconds",
            "Time of one reconcile: desired program to kernel (trigger: policy, resync, ...)",
            ["trigger"],
            registry=self.registry,
            buckets=SECONDS,
        )
        self.nft_commands = Histogram(
            "hyperwall_agent_nft_transaction_commands",
            "nftables commands in one transaction that changed the kernel",
            ["mode"],
            registry=self.registry,
            buckets=COMMANDS,
        )
        self.nft_seconds = Histogram(
            "hyperwall_agent_nft_transaction_seconds",
            "Time of one nftables transaction that changed the kernel",
            ["mode"],
            registry=self.registry,
            buckets=SECONDS,
        )
        self.registry.register(self)
        self._server: Any = None

    def observe_reconcile(self, trigger: str, seconds: float, status: AgentStatus | None) -> None:
        self.sync_seconds.labels(trigger).observe(seconds)
        if status is not None and status.commands > 0:
            mode = status.mode or "unknown"
            self.nft_commands.labels(mode).observe(status.commands)
            self.nft_seconds.labels(mode).observe(status.seconds)

    def describe(self) -> Iterator[Any]:
        return iter(())  # values are read at scrape time: nothing to check up front

    def collect(self) -> Iterator[Any]:
        s = self.sources
        if s.reconciler is not None:
            revision = revision_of(s.reconciler.policy_hash)
            yield GaugeMetricFamily(
                "hyperwall_agent_revision",
                "The manager revision of the program this agent enforces (-1: none)",
                value=-1 if revision is None else revision,
            )
            yield GaugeMetricFamily(
                "hyperwall_agent_endpoints",
                "VM interfaces this agent enforces",
                value=len(s.reconciler.program.endpoints) if s.reconciler.program else 0,
            )
        if s.manager is not None:
            yield CounterMetricFamily(
                "hyperwall_agent_digest_mismatches",
                "Programs from the manager whose digest did not verify (the agent listed again)",
                value=s.manager.digest_mismatches,
            )
        yield from self._drops()
        fill = conntrack_fill()
        if fill is not None:
            yield GaugeMetricFamily(
                "hyperwall_agent_conntrack_entries", "Conntrack entries", value=fill[0]
            )
            yield GaugeMetricFamily(
                "hyperwall_agent_conntrack_max", "The conntrack table's size", value=fill[1]
            )
            yield GaugeMetricFamily(
                "hyperwall_agent_conntrack_fill_ratio",
                "Conntrack entries / the table's size",
                value=fill[0] / fill[1] if fill[1] else 0.0,
            )
        yield from self._flows()
        yield from self._connections()

    def _connections(self) -> Iterator[Any]:
        """The connection log's counts (`agent.connection_log.ConnectionStats`)."""
        log_ = self.sources.connections
        if log_ is None:
            return
        s = log_.stats()
        yield GaugeMetricFamily(
            "hyperwall_agent_connections_open",
            "Managed connections open in the connection log's table",
            value=s.open,
        )
        family = CounterMetricFamily(
            "hyperwall_agent_connection_events_lost",
            "Conntrack events without a record of their own: the table was full (dropped),"
            " the kernel overran the socket (overrun: ENOBUFS, events lost), or a DESTROY"
            " came without its NEW (unpaired: recorded from the DESTROY alone)",
            labels=["reason"],
        )
        family.add_metric(["dropped"], s.dropped)
        family.add_metric(["overrun"], s.overruns)
        family.add_metric(["unpaired"], s.unpaired)
        yield family
        yield CounterMetricFamily(
            "hyperwall_agent_connection_records",
            "Connection records written to the flow log",
            value=s.records,
        )

    def _drops(self) -> Iterator[Any]:
        family = CounterMetricFamily(
            "hyperwall_agent_drops",
            "Packets dropped, by reason: spoofed and misdirected (every packet), rule and"
            " default (first packets of new connections, from the per-rule hit counters)",
            labels=["reason"],
        )
        kernel = self.kernel_drops.read() if self.kernel_drops is not None else {}
        family.add_metric(["spoofed"], kernel.get("spoofed", 0))
        family.add_metric(["misdirected"], kernel.get("misdirected", 0))
        hits = self.sources.hits
        program = hits.backend.program if hits is not None else None
        if hits is not None and program is not None:
            totals = [(k, v.packets) for k, v in hits.tracker.rules.items()]
            by_rule, by_default = policy_drops(program, totals)
            family.add_metric(["rule"], by_rule)
            family.add_metric(["default"], by_default)
        yield family

    def _flows(self) -> Iterator[Any]:
        flows, ship = self.sources.flows, self.sources.shipper
        if flows is not None:
            yield CounterMetricFamily(
                "hyperwall_agent_flow_records_written",
                "Flow records written to the flow log",
                value=flows.written,
            )
            yield CounterMetricFamily(
                "hyperwall_agent_flow_records_suppressed",
                "Flow records the kernel's per-rule log rate limit suppressed",
                value=flows.suppressed,
            )
        if ship is not None:
            shipped = CounterMetricFamily(
                "hyperwall_agent_flow_records_shipped",
                "Flow records the manager stored from this agent",
                value=ship.shipped,
            )
            yield shipped
            yield CounterMetricFamily(
                "hyperwall_agent_flow_ship_failures",
                "Flow batches the manager did not take (retried after a backoff)",
                value=ship.failures,
            )
            yield CounterMetricFamily(
                "hyperwall_agent_flow_records_rejected",
                "Flow records skipped because the manager would refuse them",
                value=ship.rejected,
            )

    def serve(self, listen: str) -> None:
        """Serve `/metrics` on `HOST:PORT` (a thread of prometheus-client's)."""
        host, _, port = listen.rpartition(":")
        self._server, _ = start_http_server(int(port), host.strip("[]"), self.registry)
        log.info("metrics on http://%s/metrics", listen)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
