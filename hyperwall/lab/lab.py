"""`Lab`: real hosts and VMs as network namespaces, built from the policy documents.

The composition root of the lab (the CLI and the tests use it): documents -> `topology`
plan -> `build` in the kernel -> responders and agents -> probes through the responders.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from hyperwall.attachment import Attachment
from hyperwall.io.files import load_catalog
from hyperwall.lab import agents, build, guest_lab, nsexec, responder_client
from hyperwall.lab.agents import AgentReport
from hyperwall.lab.errors import LabError, LabInputError
from hyperwall.lab.probe_messages import ProbeOutcome, ProbeRequest, Result
from hyperwall.lab.resolve import ProbeTarget, resolve_probe
from hyperwall.lab.state import (
    DEFAULT_NAME,
    DEFAULT_ROOT,
    Agent,
    LabPaths,
    LabState,
    read_state,
    write_state,
)
from hyperwall.lab.topology import LabNames, LabPlan, build_plan, check_lab_name
from hyperwall.policy.model import Catalog

if TYPE_CHECKING:
    from hyperwall.lab.migrate import MigrationReport

DEFAULT_PROBE_TIMEOUT = 1.0
DEFAULT_AGENT_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class ProbeReport:
    src: str
    dst: str
    service: str
    target: ProbeTarget
    outcome: ProbeOutcome

    @property
    def result(self) -> Result:
        return self.outcome.result

    def to_json(self) -> dict[str, object]:
        return {
            "result": self.outcome.result,
            "src": self.src,
            "dst": self.dst,
            "service": self.service,
            "src_address": self.target.source.address,
            "dst_address": self.target.destination.address,
            "probe": self.target.service,
            "detail": self.outcome.detail,
        }


@dataclass(frozen=True, slots=True)
class VmStatus:
    key: str
    namespace: str
    addresses: tuple[str, ...]
    pid: int | None
    alive: bool  # its responder runs (a guest: its control proxy)
    guest: dict[str, object] | None = None  # --vm libvirt: domain, host, uri, taps, running

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "namespace": self.namespace,
            "addresses": list(self.addresses),
            "pid": self.pid,
            "alive": self.alive,
        }
        if self.guest is not None:
            out["guest"] = self.guest
        return out


@dataclass(frozen=True, slots=True)
class LabStatus:
    name: str
    phase: str
    namespaces: dict[str, bool]  # name -> exists
    stray: tuple[str, ...]  # namespaces with the prefix that the state does not know
    vms: tuple[VmStatus, ...]
    agents: tuple[AgentReport, ...]

    @property
    def healthy(self) -> bool:
        return (
            all(self.namespaces.values())
            and not self.stray
            and all(v.alive for v in self.vms)
            and all(a.ok for a in self.agents)
        )

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "phase": self.phase,
            "healthy": self.healthy,
            "namespaces": self.namespaces,
            "stray": list(self.stray),
            "vms": {v.key: v.to_json() for v in self.vms},
            "agents": [a.to_json() for a in self.agents],
        }


class Lab:
    """One lab, by name. `up` builds it; the other methods work on a lab that is up."""

    def __init__(self, name: str = DEFAULT_NAME, root: Path = DEFAULT_ROOT) -> None:
        self.names = LabNames(check_lab_name(name))
        self.paths = LabPaths(root, name)
        self._cache: tuple[int, Catalog, LabPlan] | None = None

    @property
    def name(self) -> str:
        return self.names.lab

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # -- reading the lab -------------------------------------------------------------------

    def state(self) -> LabState:
        state = read_state(self.paths)
        if state is None:
            raise LabError(f"lab {self.name!r} is not up (no {self.paths.state_file})")
        return state

    def catalog(self) -> Catalog:
        """The documents the lab runs now (what its agents read)."""
        return self._load()[0]

    def plan(self) -> LabPlan:
        return self._load()[1]

    def _load(self) -> tuple[Catalog, LabPlan]:
        generation = self.state().generation
        if self._cache is None or self._cache[0] != generation:
            catalog = load_catalog([self.paths.policy])
            plan = build_plan(self.name, catalog, build.read_mode(self.paths))
            if guest_lab.is_guest_lab(self.paths):
                plan = guest_lab.plan_for(plan)
            self._cache = (generation, catalog, plan)
        return self._cache[1], self._cache[2]

    # -- up, apply, down -------------------------------------------------------------------

    def up(
        self,
        sources: Sequence[Path],
        agents_enabled: bool = True,
        timeout: float = DEFAULT_AGENT_TIMEOUT,
        mode: Attachment = "routed",
        server: str | None = None,
        token_files: Mapping[str, Path] | None = None,
        before_agents: Callable[[LabPlan], None] | None = None,
        vm: guest_lab.VmKind = "netns",
    ) -> None:
        """Build the lab; raise DocumentsInvalid, LabInputError or LabError.

        `mode`: how VMs attach to their host, "routed" (default) or "bridge" (docs/design/
        lab.md); the agents are started with the same `--mode`. With `server` (and a token
        file per host) the agents follow that manager instead of the lab's policy folder.

        If construction fails, everything made so far is removed. If only the agents fail to
        converge, the lab stays up for inspection (`status`, logs) and LabError is raised.

        `vm="libvirt"`: every VM is a real guest under a libvirtd per host (`guest_lab`).
        """
        sources = [Path(s).absolute() for s in sources]
        catalog = load_catalog(sources)
        plan = build_plan(self.name, catalog, mode)
        if vm == "libvirt":
            guest_lab.check_available()
            plan = guest_lab.plan_for(plan)
        leftovers = [n for n in nsexec.list_namespaces() if self.names.owns(n)]
        if self.paths.dir.exists() or leftovers:
            raise LabError(
                f"lab {self.name!r} exists or left things behind: run"
                f" `hyperwall lab down --name {self.name}` first"
            )
        state = LabState(
            name=self.name,
            phase="creating",
            created=time.time(),
            sources=tuple(str(s) for s in sources),
            generation=1,
            agents_enabled=agents_enabled,
            namespaces=tuple(ns.name for ns in plan.namespaces),
            links=tuple(
                f"{ns}/{link}"
                for ns in (n.name for n in plan.namespaces)
                for link in plan.links_in(ns)
            ),
        )
        try:
            write_state(self.paths, state)
            build.write_mode(self.paths, mode)
            if vm == "libvirt":
                guest_lab.mark(self.paths)
            if server is not None:
                agents.write_agent_source(self.paths, server, token_files or {})
            agents.install_policy(self.paths, sources, 1)
            build.build(plan)
            if vm == "libvirt":
                vms, external, _ = guest_lab.bring_up(self.paths, plan, sources)
            else:
                vms, external = build.start_responders(self.paths, plan)
            state = replace(state, vms=vms, external=external)
            write_state(self.paths, state)
            if before_agents is not None:
                before_agents(plan)
            if agents_enabled:
                pids = agents.start_agents(self.paths, plan)
                hosts = {h.name: h.ns for h in plan.hosts}
                state = replace(
                    state,
                    agents={h: Agent(hosts[h], pid) for h, pid in pids.items()},
                )
            state = replace(state, phase="ready")
            write_state(self.paths, state)
        except BaseException:
            self.down()
            raise
        if agents_enabled:
            try:
                self.wait(timeout)
            except LabError as exc:
                raise LabError(
                    f"{exc}. The lab stays up for inspection: `hyperwall lab status --name"
                    f" {self.name}`, logs in {self.paths.dir}/agents/*/log; remove it with"
                    " `hyperwall lab down`"
                ) from None

    def wait(self, timeout: float = DEFAULT_AGENT_TIMEOUT) -> list[AgentReport]:
        """Until every agent runs the program of the lab's current documents."""
        state = self.state()
        expected = self._expected(list(state.agents))
        return agents.wait_converged(self.paths, state, expected, timeout)

    def _expected(self, hosts: list[str]) -> dict[str, str]:
        if guest_lab.is_guest_lab(self.paths):
            return guest_lab.expected_hashes(self.paths, self.catalog(), hosts)
        return agents.expected_hashes(self.catalog(), hosts)

    def apply(
        self, sources: Sequence[Path], wait: bool = False, timeout: float = DEFAULT_AGENT_TIMEOUT
    ) -> None:
        """Give the agents new documents (policy and labels; the topology must stay)."""
        sources = [Path(s).absolute() for s in sources]
        catalog = load_catalog(sources)
        plan = build_plan(self.name, catalog)
        if guest_lab.is_guest_lab(self.paths):
            plan = guest_lab.plan_for(plan)
        state = self.state()
        if plan.topology_key() != self.plan().topology_key():
            raise LabInputError(
                "the documents change the lab's hosts, VMs or interfaces; `lab apply` takes"
                " policy and label changes only: run `lab down` and `lab up`"
            )
        generation = state.generation + 1
        agents.install_policy(self.paths, sources, generation)
        write_state(
            self.paths, replace(state, generation=generation, sources=tuple(map(str, sources)))
        )
        if wait:
            self.wait(timeout)

    def down(self) -> list[str]:
        """Remove the lab (idempotent; works without or with a stale state file)."""
        guest_lab.before_teardown(self.paths)
        removed = build.teardown(self.names, self.paths, read_state(self.paths))
        shutil.rmtree(self.paths.dir, ignore_errors=True)
        self._cache = None
        return removed

    # -- probes ----------------------------------------------------------------------------

    def _request(
        self, src: str, dst: str, service: str, timeout: float, source: str | None
    ) -> tuple[Path, ProbeTarget, ProbeRequest]:
        catalog, _ = self._load()
        target = resolve_probe(catalog, src, dst, service)
        state = self.state()
        origin = target.source.workload
        if origin is None:
            if state.external is None:
                raise LabError("the lab has no external namespace")
            responder = state.external
        else:
            responder = state.vms[origin.key]
        request = ProbeRequest(
            proto=target.proto,
            src=source or target.source.address,
            dst=target.destination.address,
            port=target.port,
            timeout=timeout,
        )
        return self.paths.sockets / responder.socket, target, request

    def probe_reports(
        self,
        probes: Sequence[tuple[str, str, str]],
        timeout: float = DEFAULT_PROBE_TIMEOUT,
        source: str | None = None,
        parallel: int = responder_client.MAX_PARALLEL,
    ) -> list[ProbeReport]:
        """Send the probes (SRC, DST, SERVICE), `parallel` at a time; reports in order.

        `source` overrides the source address (e.g. a spoofed one added with `exec`).
        """
        prepared = [(p, self._request(*p, timeout, source)) for p in probes]
        jobs = [(path, req) for _, (path, _, req) in prepared]
        try:
            outcomes = responder_client.probe_many(jobs, parallel)
        except responder_client.ResponderError as exc:
            raise LabError(str(exc)) from None
        reports = []
        for ((src, dst, service), (_, target, _)), outcome in zip(prepared, outcomes, strict=True):
            if outcome.result == "error":
                raise LabError(f"probe {src} -> {dst} {service} failed: {outcome.detail}")
            reports.append(ProbeReport(src, dst, service, target, outcome))
        return reports

    def probe_report(
        self,
        src: str,
        dst: str,
        service: str,
        timeout: float = DEFAULT_PROBE_TIMEOUT,
        source: str | None = None,
    ) -> ProbeReport:
        return self.probe_reports([(src, dst, service)], timeout, source)[0]

    def probe(
        self,
        src: str,
        dst: str,
        service: str,
        timeout: float = DEFAULT_PROBE_TIMEOUT,
        source: str | None = None,
    ) -> Result:
        """`allowed`, `blocked` or `rejected`: real traffic from SRC's namespace to DST."""
        return self.probe_report(src, dst, service, timeout, source).result

    def probe_many(
        self,
        probes: Sequence[tuple[str, str, str]],
        timeout: float = DEFAULT_PROBE_TIMEOUT,
        parallel: int = responder_client.MAX_PARALLEL,
    ) -> list[Result]:
        """The results of many probes, run concurrently (a blocked one waits `timeout`)."""
        return [r.result for r in self.probe_reports(probes, timeout, parallel=parallel)]

    # -- other -----------------------------------------------------------------------------

    def namespace_of(self, vm: str) -> str:
        """The namespace of workload `vm` (`web-1`, `acme/web-1`), or of `external`."""
        plan = self.plan()
        if vm == "external":
            return plan.external.ns
        found = [v for v in plan.vms if vm in (v.key, v.name)]
        if not found:
            raise LabInputError(f"{vm!r} is not a workload of lab {self.name!r}")
        if len(found) > 1:
            keys = ", ".join(v.key for v in found)
            raise LabInputError(f"workload name {vm!r} is ambiguous: give one of {keys}")
        return found[0].ns

    def exec(
        self, vm: str, argv: Sequence[str], check: bool = False, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the namespace of workload `vm` (or `external`), or the guest."""
        namespace = self.namespace_of(vm)
        if vm != "external" and guest_lab.is_guest_lab(self.paths):
            key = next(v.key for v in self.plan().vms if v.ns == namespace)
            return guest_lab.exec_in_guest(self.paths, self.state().vms[key], argv, check, stdin)
        return subprocess.run(
            ["ip", "netns", "exec", namespace, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
        )

    def status(self) -> LabStatus:
        state = self.state()
        existing = set(nsexec.list_namespaces())
        namespaces = {n: n in existing for n in state.namespaces}
        stray = tuple(sorted(n for n in existing if self.names.owns(n) and n not in namespaces))
        guest = guest_lab.guest_status(self.paths) if guest_lab.is_guest_lab(self.paths) else {}
        vms = tuple(
            VmStatus(
                key,
                r.ns,
                r.addresses,
                r.pid,
                r.pid is not None
                and nsexec.alive(r.pid)
                and guest.get(key, {}).get("running", True),
                guest.get(key),
            )
            for key, r in sorted(state.vms.items())
        )
        reports: list[AgentReport] = []
        if state.agents:
            try:
                expected = self._expected(list(state.agents))
            except Exception:  # documents unreadable: report the agents without a target
                expected = {}
            reports = agents.agent_reports(self.paths, state, expected)
        return LabStatus(self.name, state.phase, namespaces, stray, vms, tuple(reports))

    # -- one agent at a time (restart safety) ----------------------------------------------

    def agent_pid(self, host: str) -> int | None:
        """The pid of the running agent of `host`; None if it is not running."""
        agent = self.state().agents.get(host)
        if agent is None:
            raise LabInputError(f"lab {self.name!r} has no agent on host {host!r}")
        pid = agent.pid
        return pid if pid is not None and agents.is_agent(self.paths, pid) else None

    def kill_agent(self, host: str, sig: int | None = None) -> int:
        """Send `sig` (default SIGKILL) to the agent of `host` and wait until it is gone.

        Its table stays in the kernel (enforcement goes on); `start_agent` starts it again.
        """
        pid = self.agent_pid(host)
        if pid is None:
            raise LabError(f"the agent of host {host!r} is not running")
        agents.stop_agent(self.paths, pid, sig)
        return pid

    def start_agent(self, host: str) -> int:
        """Start the agent of `host` again, like `up` does (after it died or was killed).

        Does not wait: `wait()` returns once it (and every other agent) has converged.
        """
        if self.agent_pid(host) is not None:
            raise LabError(f"the agent of host {host!r} is already running")
        pid = agents.start_agent(self.paths, self.plan(), host)
        state = self.state()
        agent = replace(state.agents[host], pid=pid)
        write_state(self.paths, replace(state, agents={**state.agents, host: agent}))
        return pid

    # -- live migration --------------------------------------------------------------------

    def migrate(
        self,
        vm: str,
        to: str,
        state: bool = True,
        timeout: float = DEFAULT_AGENT_TIMEOUT,
        token: str | None = None,
    ) -> MigrationReport:
        """Move VM `vm` to host `to` while it runs (`lab.migrate`; guests: `lab.guest_migrate`;
        docs/design/lab.md, "Migration"); `state=False` skips the agents' state handover."""
        if guest_lab.is_guest_lab(self.paths):  # a real `virsh migrate --live`
            from hyperwall.lab.guest_migrate import migrate_guest

            return migrate_guest(self, vm, to, state, timeout, token)
        from hyperwall.lab.migrate import migrate

        return migrate(self, vm, to, state, timeout, token)
