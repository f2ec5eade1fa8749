"""`Lab.migrate`: the lab's part of a live migration of a namespace VM, like a hypervisor's.

The VM's namespace keeps running (its processes and sockets stay); the host sides of its
links move to the destination host's namespace, the underlay follows, the documents say the
new host. The firewall part (the VM's rules on the destination before it arrives, its
connection state) is the agents': the lab calls them over their control sockets
(`agent.control`). The order (docs/design/lab.md, "Migration"):

  (a) `incoming` on the destination's agent, with a one-time key: its rules are in place;
  (b) `send` phase `precopy` on the source's agent (unless `state=False`);
  (c) the switchover (`lab.switchover`: derived from the lab's plan with the VM moved);
  (d) `send` phase `switchover` on the source's agent: the delta (unless `state=False`);
  (e) the documents: a new policy folder generation (or the manager's Workload);
  (f) `done` on the destination's agent once every agent has converged on them.

A UDP echo stream from the VM (`lab.gapmeter`) runs from before (a) to after (f); the gap is
the longest time without an echo. Counterparts: `lab.switchover` (pure), `agent.migration`.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import yaml

from hyperwall.analysis.trace import TraceInputError, resolve_end
from hyperwall.compiler import moving
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.evaluator.evaluate import evaluate
from hyperwall.evaluator.packet import service_packet
from hyperwall.io.files import SUFFIXES, decode_text
from hyperwall.lab import agents, guest_lab, nsexec
from hyperwall.lab.errors import LabError, LabInputError
from hyperwall.lab.state import LabPaths, write_state
from hyperwall.lab.switchover import Switchover, plan_switchover
from hyperwall.lab.topology import LabPlan, build_plan
from hyperwall.policy.model import Catalog, Workload

if TYPE_CHECKING:
    from hyperwall.lab.lab import Lab

OUTSIDE_PEER = "192.0.2.1"  # an outside address (the external namespace answers it)
METER_READY = 5.0


@dataclass(frozen=True, slots=True)
class MigrationReport:
    vm: str  # as given (a name or tenant/name)
    key: str  # the workload key
    source: str
    dest: str
    state: bool
    connections: int  # connection entries the handover moved
    gap_ms: float | None  # None: no allowed echo path, or the traffic did not resume
    echo: str | None  # "SRC -> DST udp/PORT": what the gap was measured on
    handover: tuple[str, ...] = ()  # what the agents answered, or why there was no handover
    errors: tuple[str, ...] = ()  # a failed handover (the VM moved with its policy anyway)
    steps_ms: tuple[tuple[str, float], ...] = ()  # how long each step took

    def to_json(self) -> dict[str, object]:
        return {
            "vm": self.vm,
            "from": self.source,
            "to": self.dest,
            "state": self.state,
            "connections": self.connections,
            "gapMs": self.gap_ms,
        }


# -- pure parts ----------------------------------------------------------------------------


def placed(catalog: Catalog, key: str, host: str) -> Catalog:
    """`catalog` with workload `key` on `host`."""
    return moving.placed(catalog, {key: host})


def find_vm(catalog: Catalog, vm: str, lab: str) -> Workload:
    """Workload `vm` (a name, tenant/name or one of its addresses), as `trace` resolves it."""
    try:
        workload = resolve_end(catalog, vm).workload
    except TraceInputError as exc:
        raise LabInputError(f"VM: {exc}") from None
    if workload is None:
        raise LabInputError(f"VM: {vm!r} is not a workload of lab {lab!r}")
    return workload


def echo_peer(catalog: Catalog, key: str) -> tuple[str, str, int] | None:
    """(source address, peer address, UDP port) for the gap stream: the VM's first IPv4
    address to another VM (or the outside) on a UDP port the policy allows both ways (the
    peer's responder echoes every port). None if the policy allows no such path."""
    w = catalog.workloads[key]
    mine = [(ip, i.name) for i in w.interfaces for ip in i.ips if ":" not in ip]
    if not mine:
        return None
    src, iface = mine[0]
    ports = {7}
    for service in catalog.config.services.values():
        ports |= {p.low for p in service.ports if p.proto == "udp" and not p.any_value}
    for policy in catalog.config.policies.values():
        for rule in policy.rules:
            ports |= {p.low for p in rule.services or () if p.proto == "udp" and not p.any_value}
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    peers: list[tuple[str, str | None]] = []
    for other in sorted(catalog.workloads.values(), key=lambda o: o.key):
        theirs = [(ip, i.name) for i in other.interfaces for ip in i.ips if ":" not in ip]
        if other.key != key and theirs:
            peers.append((theirs[0][0], f"{other.key}/{theirs[0][1]}"))
    peers.append((OUTSIDE_PEER, None))
    egress = compiler.host_program(w.host)
    for port in sorted(ports):
        for dst, endpoint in peers:
            packet = service_packet(src, dst, "udp", port)
            if evaluate(egress, f"{key}/{iface}", "out", packet).verdict != "allow":
                continue
            if endpoint is not None:
                host = catalog.workloads[endpoint.rsplit("/", 1)[0]].host
                ingress = compiler.host_program(host)
                if evaluate(ingress, endpoint, "in", packet).verdict != "allow":
                    continue
            return src, dst, port
    return None


def rehost_documents(text: str, name: str, w: Workload, host: str) -> str | None:
    """The file's text with `w`'s Workload document on `host`; None if it is not in it."""
    docs, issues = decode_text(text, name)
    if issues:
        return None
    found = False
    out: list[Any] = []
    for doc, _ in docs:
        meta = doc.get("metadata", {}) if isinstance(doc, dict) else {}
        if (
            isinstance(doc, dict)
            and doc.get("kind") == "Workload"
            and meta.get("name") == w.name
            and meta.get("tenant") == w.tenant
        ):
            doc = {**doc, "spec": {**doc["spec"], "host": host}}
            found = True
        out.append(doc)
    if not found:
        return None
    if name.endswith(".json"):
        return json.dumps(out if len(out) != 1 else out[0], indent=2) + "\n"
    return yaml.safe_dump_all(out, sort_keys=False)


# -- the kernel ----------------------------------------------------------------------------


def link_places(plan: LabPlan, links: tuple[str, ...]) -> dict[str, str]:
    """link -> the host (name) whose namespace holds it now (missing: in none of them)."""
    jobs = [nsexec.Job(("ip", "-n", h.ns, "-j", "link", "show"), what=h.ns) for h in plan.hosts]
    found: dict[str, str] = {}
    for host, out in zip(plan.hosts, nsexec.run_jobs(jobs, check=False), strict=True):
        try:
            names = {link["ifname"] for link in json.loads(out or "[]")}
        except ValueError:
            continue
        found.update((link, host.name) for link in links if link in names)
    return found


def _bridge_job(ns: str, lines: tuple[str, ...]) -> nsexec.Job:
    text = "\n".join(lines) + "\n"
    return nsexec.Job(("bridge", "-n", ns, "-force", "-batch", "-"), text, what=f"fdb in {ns}")


def switch(sw: Switchover, places: dict[str, str], dest_plan: LabPlan) -> None:
    """(c): move the links (from wherever they are), attach them, reroute the lab."""
    by_ns: dict[str, list[str]] = {}
    for link in sw.links:
        host = places.get(link)
        if host is None:
            raise LabError(f"link {link} of {sw.vm} is in no host namespace")
        if host != sw.dest:
            by_ns.setdefault(dest_plan.host(host).ns, []).append(
                f"link set {link} netns {sw.dest_ns}"
            )
    # Before the links leave, each source gets a standby route via the destination: the
    # VM's own routes go with its links, and a packet for the VM that reached the source
    # meanwhile would take the default route (in the lab: to the external namespace, which
    # answers every address, and answered mid-stream TCP with resets).
    standby = {
        ns: [
            f"{line.replace('route replace', 'route append', 1)} metric {STANDBY_METRIC}"
            for line in sw.reroute.get(ns, ())
            if line.startswith("route replace")
        ]
        for ns in by_ns
    }
    nsexec.run_jobs(nsexec.batch_job(lines, ns, force=True) for ns, lines in standby.items())
    nsexec.run_jobs(nsexec.batch_job(lines, ns) for ns, lines in by_ns.items())
    jobs = [nsexec.batch_job(list(sw.attach), sw.dest_ns)]
    jobs += [nsexec.batch_job(list(lines), ns) for ns, lines in sw.reroute.items()]
    nsexec.run_jobs(jobs)
    # the moved links took the destination's `default` sysctls, which the plan sets to the
    # same values: setting them per link is off the traffic's critical path
    after = [nsexec.Job(("sysctl", "-q", "-w", *sw.sysctls), ns=sw.dest_ns)] if sw.sysctls else []
    after += [nsexec.batch_job(list(lines), ns, force=True) for ns, lines in sw.remove.items()]
    after += [
        nsexec.batch_job(
            [line.replace("route append", "route del", 1) for line in lines], ns, force=True
        )
        for ns, lines in standby.items()
    ]
    after += [_bridge_job(ns, lines) for ns, lines in sw.fdb.items()]
    if sw.resolve:
        after.append(nsexec.batch_job(list(sw.resolve), sw.vm_ns, force=True))
    nsexec.run_jobs(after, check=False)


STANDBY_METRIC = 4000  # the source's route via the destination while the links move


# -- the gap -------------------------------------------------------------------------------


class GapMeter:
    """The echo stream in the VM's namespace (`lab.gapmeter`); `stop` returns the gap."""

    def __init__(self, ns: str, src: str, dst: str, port: int) -> None:
        argv = [sys.executable, "-m", "hyperwall.lab.gapmeter"]
        argv += ["--src", src, "--dst", dst, "--port", str(port)]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.ready = self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> float | None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            line = self.proc.stdout.read()
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        try:
            gap = json.loads(line.strip().splitlines()[-1])["gapMs"]
        except (ValueError, IndexError, KeyError):
            return None
        return float(gap) if gap is not None and self.ready else None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- the agents' handover hooks ------------------------------------------------------------


class Hooks:
    """The agents' side of the move, through their control sockets (`agent.control`)."""

    def __init__(self, paths: LabPaths, vm: str, source: str, dest: str, address: str) -> None:
        from hyperwall.agent.control import ControlClient

        self.source = ControlClient(paths.agent_dir(source) / "control.sock")
        self.dest = ControlClient(paths.agent_dir(dest) / "control.sock")
        self.vm, self.source_host, self.dest_host = vm, source, dest
        self.address = address
        self.key = secrets.token_hex(32)
        self.answers: list[str] = []

    def incoming(self) -> None:
        from hyperwall.agent.control import ControlError

        try:
            answer = self.dest.incoming(self.vm, self.source_host, self.key)
        except ControlError as exc:
            raise LabError(
                f"refused: the agent of {self.dest_host} cannot take {self.vm} ({exc}); the VM"
                " stays where it runs"
            ) from None
        self.address = str(answer.get("address") or self.address)
        self.answers.append(f"incoming: {json.dumps(answer)}")

    def send(self, phase: str) -> int:
        answer = self.source.send(self.vm, self.dest_host, self.address, self.key, phase)
        self.answers.append(f"{phase}: {json.dumps(answer)}")
        return int(answer.get("entries", 0))

    def done(self) -> None:
        self.answers.append(f"done: {json.dumps(self.dest.done(self.vm))}")

    def release(self, addresses: tuple[str, ...] = ()) -> None:
        answer = self.source.release(self.vm, addresses)
        self.answers.append(f"release: {json.dumps(answer)}")

    def before_move(self, state: bool, errors: list[str], steps: Steps) -> None:
        """(a) incoming (a failure refuses the move: nothing has moved yet), (b) precopy."""
        self.incoming()
        steps.step("incoming")
        if state:
            try:
                self.send("precopy")
            except Exception as exc:
                errors.append(f"precopy: {exc}")
            steps.step("precopy")

    def after_move(
        self, state: bool, errors: list[str], steps: Steps, addresses: tuple[str, ...] = ()
    ) -> int:
        """The switchover delta (the connections handed over), then `release`: nothing of
        the VM stays on the source (with state, without, or after a failure)."""
        connections = 0
        if state and not errors:
            try:
                connections = self.send("switchover")
            except Exception as exc:
                errors.append(f"switchover: {exc}")
            steps.step("delta")
        try:
            self.release(addresses)
        except Exception as exc:
            errors.append(f"release: {exc}")
        steps.step("release")
        return connections


class Steps:
    """Each step's milliseconds since the previous one (the report's `stepsMs`)."""

    def __init__(self) -> None:
        self.clock = time.monotonic()
        self.done: list[tuple[str, float]] = []

    def step(self, name: str) -> None:
        now = time.monotonic()
        self.done.append((name, round((now - self.clock) * 1000, 1)))
        self.clock = now


def handover_hooks(lab: Lab, vm: str, source: str, dest: str) -> Hooks | str:
    """The hooks, or why there are none (a lab without agents); LabError if the destination's
    agent cannot take the VM (the VM must never run unprotected: the move is refused)."""
    state = lab.state()
    if not state.agents:
        return "no agents: nothing to hand over"
    if lab.agent_pid(dest) is None:
        raise LabError(
            f"the agent of {dest} is not running: refused, {vm} would run unprotected there"
        )
    control = lab.paths.agent_dir(dest) / "control.sock"
    if not control.exists():
        # TODO(handover): remove once every agent serves its control socket (agent.control);
        # until then the agents learn of the move from the documents only (step e)
        return f"the agent of {dest} has no control socket ({control}): no handover"
    address = f"{lab.plan().host(dest).ipv4}:{agents.HANDOVER_PORT}"
    return Hooks(lab.paths, vm, source, dest, address)


# -- the documents -------------------------------------------------------------------------


def write_documents(lab: Lab, w: Workload, host: str) -> None:
    """(e) for the lab's policy folder: a new generation with `w` on `host`."""
    state = lab.state()
    current = lab.paths.policy_generation(state.generation)
    generation = state.generation + 1
    tmp = lab.paths.dir / f"policy.{generation}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(current, tmp)
    changed = False
    for file in sorted(tmp.rglob("*")):
        if file.suffix in SUFFIXES and file.is_file():
            text = rehost_documents(file.read_text(), file.name, w, host)
            if text is not None:
                file.write_text(text)
                changed = True
                break
    if not changed:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LabError(f"no Workload document of {w.key} in {current}")
    agents.install_generation(lab.paths, tmp, generation)
    write_state(lab.paths, replace(state, generation=generation))


class ManagerMove:
    """For a lab whose agents follow a manager: the move as the manager knows it. `begin`
    before (a) (the manager serves the destination the program with the VM placed there:
    `manager.moves`), `apply` at (e) (the Workload's new host), `end` after it."""

    def __init__(self, lab: Lab, w: Workload, host: str, token: str | None) -> None:
        record = json.loads(agents.agent_source_file(lab.paths).read_text())
        if token is None:
            raise LabInputError("--token-file: the lab follows a manager; give an admin token")
        self.server, self.token, self.w, self.host = str(record["server"]), token, w, host

    def _call(self, method: str, **kw: Any) -> object:
        from hyperwall.client import ManagerClient

        with ManagerClient(self.server, self.token) as client:
            return client.request(method, "/v1/migrations", **kw)

    def begin(self) -> None:
        from hyperwall.client.api import ClientError

        body = {"workload": self.w.name, "tenant": self.w.tenant, "to": self.host}
        try:
            self._call("POST", json=body)
        except ClientError as exc:
            raise LabError(f"refused: the manager did not begin the move: {exc}") from None

    def apply(self) -> None:
        """(e): the changed Workload, applied in the manager."""
        from hyperwall.client import ManagerClient

        with ManagerClient(self.server, self.token) as client:
            doc = client.document("Workload", self.w.name, self.w.tenant)
            doc["spec"] = {**doc["spec"], "host": self.host}
            client.apply([doc], f"lab migrate {self.w.key} to {self.host}")

    def end(self) -> None:
        params = {"workload": self.w.name}
        if self.w.tenant:
            params["tenant"] = self.w.tenant
        self._call("DELETE", params=params)


# -- the whole move ------------------------------------------------------------------------


def migrate(
    lab: Lab, vm: str, to: str, state: bool = True, timeout: float = 60.0, token: str | None = None
) -> MigrationReport:
    if guest_lab.is_guest_lab(lab.paths):
        raise LabInputError("VM: lab migrate moves namespace VMs; this lab's VMs are guests")
    catalog, plan = lab.catalog(), lab.plan()
    w = find_vm(catalog, vm, lab.name)
    hosts = [h.name for h in plan.hosts]
    if to not in hosts:
        raise LabInputError(f"--to: {to!r} is not a host of lab {lab.name!r} ({', '.join(hosts)})")
    links = tuple(i.host_ifname for i in plan.vm(w.key).interfaces)
    places = link_places(plan, links)
    running = {places.get(link, w.host) for link in links}
    if running == {to} and w.host == to:
        raise LabInputError(f"--to: {w.key} already runs on {to}")
    if not any(o.host == w.host for o in catalog.workloads.values() if o.key != w.key):
        raise LabInputError(
            f"VM: {w.key} is the last VM of {w.host}; the lab's hosts are those of its VMs"
        )
    source = next(iter(running - {to}), w.host)
    new_catalog = placed(catalog, w.key, to)
    new_plan = build_plan(lab.name, new_catalog, plan.mode)
    old_plan = plan
    if source != w.host:  # a move that died after (c) and before (e): the links are elsewhere
        old_plan = build_plan(lab.name, placed(catalog, w.key, source), plan.mode)
    sw = plan_switchover(old_plan, new_plan, w.key)
    hooks = handover_hooks(lab, w.key, source, to)
    manager = (
        ManagerMove(lab, w, to, token) if agents.agent_source_file(lab.paths).exists() else None
    )
    peer = echo_peer(catalog, w.key)
    meter = GapMeter(plan.vm(w.key).ns, *peer) if peer else None
    connections, errors = 0, list[str]()
    steps = Steps()
    step = steps.step
    moved = False
    try:
        if manager is not None:
            manager.begin()  # the destination gets the VM's rules from the manager
            step("begin")
        if isinstance(hooks, Hooks):
            hooks.before_move(state, errors, steps)  # (a), (b)
        moved = True
        switch(sw, places, new_plan)  # (c)
        step("switchover")
        if isinstance(hooks, Hooks):
            connections = hooks.after_move(state, errors, steps)  # (d) or (d')
        if manager is not None:  # (e)
            manager.apply()
        write_documents(lab, w, to)
        step("documents")
        if manager is not None:
            manager.end()
        if lab.state().agents:
            try:
                lab.wait(timeout)
            except LabError as exc:  # the VM has moved: report it, do not undo the move
                errors.append(f"converge: {exc}")
            step("converged")
        if isinstance(hooks, Hooks):
            hooks.done()  # (f)
            step("done")
        gap = meter.stop() if meter is not None else None
    except BaseException:
        if manager is not None and not moved:  # refused before anything moved: undo
            with contextlib.suppress(Exception):
                manager.end()
        raise
    finally:
        if meter is not None:
            meter.kill()
    handover = tuple(hooks.answers) if isinstance(hooks, Hooks) else (hooks,)
    return MigrationReport(
        vm=vm,
        key=w.key,
        source=source,
        dest=to,
        state=state,
        connections=connections,
        gap_ms=gap,
        echo=f"{peer[0]} -> {peer[1]} udp/{peer[2]}" if peer else None,
        handover=handover,
        errors=tuple(errors),
        steps_ms=tuple(steps.done),
    )
