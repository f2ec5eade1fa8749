"""The manager's Prometheus metrics, served at `GET /metrics` (no token: like `/v1/healthz`
it names no document; bind the manager accordingly).

- `hyperwall_manager_realization_lag_seconds`: from a revision's commit to each host's
  first report that it enforces it (converged), observed as the reports arrive
  (`reported`, called by the status route); only revisions committed while this manager
  runs are timed (an older one's commit time says nothing about this manager's pace);
- `hyperwall_manager_revision`, `hyperwall_manager_hosts{state}` (in-sync, pending,
  error, unreachable: `Manager.status`), read at scrape time;
- the flow store: records stored and expired, batches refused as busy (backpressure), the
  database's bytes in use;
- `hyperwall_manager_gate_seconds` (histogram) and `hyperwall_manager_gate_assertions_checked`:
  how long the assertion gate took on each apply, diff, delete and rollback of this manager
  and how many assertions it re-checked (`manager.gate_times`).

Labels: a host state only. Nothing per host, tenant, address or rule.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from hyperwall.manager.deps import Mgr
from hyperwall.manager.flow_store import FlowStore
from hyperwall.manager.gate_times import GateTimes
from hyperwall.manager.service import Manager

LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800)
STATES = ("in-sync", "pending", "error", "unreachable")
KEEP_TIMES = 256  # commit times of recent revisions kept for the lag


class ManagerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.lag = Histogram(
            "hyperwall_manager_realization_lag_seconds",
            "From a revision's commit to a host reporting it enforces it",
            registry=r,
            buckets=LAG_BUCKETS,
        )
        self.revision = Gauge(
            "hyperwall_manager_revision", "The newest revision the manager processed", registry=r
        )
        self.hosts = Gauge("hyperwall_manager_hosts", "Hosts by state", ["state"], registry=r)
        self.reports = Counter(
            "hyperwall_manager_status_reports", "Status reports received from agents", registry=r
        )
        self.flows = _FlowCounts()
        r.register(self.flows)
        self.gate = _GateCounts()
        r.register(self.gate)
        self.started = time.time()
        self._last: dict[str, int] = {}  # host -> newest revision it reported converged
        self._times: OrderedDict[int, float | None] = OrderedDict()

    async def _commit_time(self, manager: Manager, revision: int) -> float | None:
        if revision not in self._times:
            found = await manager.store.history(1, revision + 1)
            self._times[revision] = found[0].time if found and found[0].number == revision else None
            while len(self._times) > KEEP_TIMES:
                self._times.popitem(last=False)
        return self._times[revision]

    async def reported(self, manager: Manager, host: str, body: dict[str, Any]) -> None:
        """An agent's status report: time the realization of a revision new for it."""
        self.reports.inc()
        revision = body.get("revision")
        if not body.get("converged") or not isinstance(revision, int) or revision < 1:
            return
        if revision <= self._last.get(host, 0):
            return
        self._last[host] = revision
        committed = await self._commit_time(manager, revision)
        if committed is not None and committed >= self.started:
            self.lag.observe(max(0.0, time.time() - committed))

    async def scrape(self, manager: Manager, flows: FlowStore | None) -> bytes:
        self.revision.set(max(manager.fleet.revision, 0))
        status = await manager.status()
        counts = dict.fromkeys(STATES, 0)
        for host in status["hosts"]:
            counts[host["state"]] = counts.get(host["state"], 0) + 1
        for state, n in counts.items():
            self.hosts.labels(state).set(n)
        self.flows.store = flows
        self.flows.used = await flows.used_bytes() if flows is not None else 0
        self.gate.times = manager.gate_times
        return generate_latest(self.registry)


class _FlowCounts(Collector):
    """The flow store's counts, as of the scrape that set `store` and `used`."""

    def __init__(self) -> None:
        self.store: FlowStore | None = None
        self.used = 0

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        store = self.store
        if store is None:
            return
        yield CounterMetricFamily(
            "hyperwall_manager_flow_records_stored",
            "Flow records stored since the manager started",
            value=store.stored_total,
        )
        yield CounterMetricFamily(
            "hyperwall_manager_flow_records_expired",
            "Flow records deleted by retention since the manager started",
            value=store.expired_total,
        )
        yield CounterMetricFamily(
            "hyperwall_manager_flow_batches_refused",
            "Flow batches refused as busy (429: the shipper backs off)",
            value=store.refused_total,
        )
        yield GaugeMetricFamily(
            "hyperwall_manager_flow_store_bytes", "Bytes in use in the flow database", self.used
        )


class _GateCounts(Collector):
    """The assertion gate's durations, as of the scrape that set `times`."""

    def __init__(self) -> None:
        self.times: GateTimes | None = None

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        times = self.times
        if times is None:
            return
        yield HistogramMetricFamily(
            "hyperwall_manager_gate_seconds",
            "How long the assertion gate took per change (touched assertions re-checked)",
            buckets=times.cumulative(),
            sum_value=times.total,
        )
        yield CounterMetricFamily(
            "hyperwall_manager_gate_assertions_checked",
            "Assertions the gate re-checked since the manager started",
            value=times.checked,
        )


def metrics_of(app: Any) -> ManagerMetrics:
    found = app.state.metrics
    assert isinstance(found, ManagerMetrics)
    return found


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, manager: Mgr) -> Response:
    """Prometheus text format."""
    flows = getattr(request.app.state, "flows", None)
    body = await metrics_of(request.app).scrape(manager, flows)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
