"""`Lab.migrate` in a `--vm libvirt` lab: a real live migration between two hosts' libvirtds.

libvirt moves the guest (`migrateToURI3`, peer to peer over the underlay: `virsh migrate
--live --p2p --persistent --undefinesource`); its `hw:workload` metadata travels in the domain
XML. The lab acts as the hypervisor's network setup and orchestrator, never as the firewall:

  (a) `incoming` on the destination's agent: a `--libvirt` agent only arms its handover
      receiver with the one-time key (the VM's rules come with its domain);
  (b) `send` phase `precopy` on the source's agent (unless `state=False`);
  (c) on the source, a fallback route to the VM's addresses via the destination (metric
      `FALLBACK_METRIC`, behind the tap's own route): once libvirt deletes the source's tap,
      traffic that still arrives there follows the VM by itself;
  (d) the migration. Meanwhile a watcher sees the domain appear on the destination, paused,
      with its taps: it gives them the gateway addresses and neighbours (`guests.wire_taps`
      without the routes), records when the destination's agent has the taps in its
      dispatch maps (`enforced`), and when the domain runs there (`resumed`) routes the VM's
      addresses into the taps. The routes wait for the resume: a paused guest's tap has
      carrier, and routing into it earlier would swallow the destination's own traffic to
      the VM for the whole memory copy;
  (e) every other namespace (the source, the other hosts, the external namespace) routes
      the VM's addresses via the destination (the plan with the VM moved); the fallback goes;
  (f) the documents say the new host (the other hosts' agents learn the VM's place from
      them: a `--libvirt` agent takes only its own host's workloads from libvirt);
  (g) `send` phase `switchover` (the delta; the source removes the VM's entries), or
      `release` (`state=False`, or a failed handover);
  (h) the guest's control proxy follows it (a new channel path per host), `guests.json` and
      the lab's state say the new host; once every agent converged, `done` on the destination.

The gap is measured from the outside: a TCP (or UDP) echo stream from the external namespace
to the guest's echo service (`lab.gapmeter --proto`), on a path the policy allows. qemu's
own downtime comes from libvirt's completed job statistics on the destination.
Counterparts: `lab.migrate` (namespace VMs, and the hooks), `agent.migration`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.evaluator.evaluate import evaluate
from hyperwall.evaluator.packet import service_packet
from hyperwall.lab import agents, guests, libvirtd, nsexec
from hyperwall.lab.errors import LabError, LabInputError
from hyperwall.lab.migrate import (
    OUTSIDE_PEER,
    GapMeter,
    Hooks,
    ManagerMove,
    MigrationReport,
    Steps,
    find_vm,
    handover_hooks,
    placed,
    write_documents,
)
from hyperwall.lab.state import LabPaths, Responder, write_state
from hyperwall.lab.switchover import plan_switchover
from hyperwall.lab.topology import LabPlan, LabVm, build_plan
from hyperwall.policy.model import Catalog

if TYPE_CHECKING:
    from hyperwall.lab.lab import Lab

FALLBACK_METRIC = 4096  # behind the tap's route (IPv4 0, IPv6 1024)
POLL = 0.002
MIGRATE_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class GuestMigrationReport(MigrationReport):
    downtime_ms: float | None = None  # qemu's, from libvirt's completed job statistics
    enforced_before_resume: bool | None = None  # the taps were in the dispatch maps first
    events_ms: tuple[tuple[str, float], ...] = ()  # destination events, from the migration
    broken: bool | None = None  # TCP stream: the connection was reset or closed

    def to_json(self) -> dict[str, object]:
        return {
            **MigrationReport.to_json(self),
            "downtimeMs": self.downtime_ms,
            "enforcedBeforeResume": self.enforced_before_resume,
        }


# -- pure parts ----------------------------------------------------------------------------


def stream_path(catalog: Catalog, key: str) -> tuple[str, str, str, int] | None:
    """(outside source, VM address, proto, port) for the gap stream into the guest: the
    first port the VM's ingress allows from an outside address (UDP first, then TCP; the
    guest echoes every port). The sources: the first address of each external IPv4 CIDR the
    groups name, then `OUTSIDE_PEER`. None if the policy opens no such path."""
    w = catalog.workloads[key]
    targets = [(ip, i.name) for i in w.interfaces for ip in i.ips if ":" not in ip]
    sources: list[str] = []
    for group in catalog.config.groups.values():
        for cidr in group.cidrs:
            net = ipaddress.ip_network(cidr, strict=False)
            if net.version == 4 and net.num_addresses > 8:
                sources.append(str(net.network_address + 7))
    sources.append(OUTSIDE_PEER)
    ports: dict[str, set[int]] = {"udp": {7}, "tcp": {7}}
    specs = [p for s in catalog.config.services.values() for p in s.ports]
    specs += [
        p for pol in catalog.config.policies.values() for r in pol.rules for p in r.services or ()
    ]
    for p in specs:
        if p.proto in ports and not p.any_value:
            ports[p.proto].add(p.low)
    program = FleetCompiler(catalog.config, catalog.workloads.values()).host_program(w.host)
    for proto in ("udp", "tcp"):
        for port in sorted(ports[proto]):
            for dst, iface in targets:
                for src in sources:
                    packet = service_packet(src, dst, proto, port)
                    if evaluate(program, f"{key}/{iface}", "in", packet).verdict == "allow":
                        return src, dst, proto, port
    return None


def destination_xml(xml: str, channel: str, console: str) -> str:
    """The migratable XML with the control channel and the console at the destination's
    paths (QEMU binds the channel's socket: the source's still holds the old one)."""
    root = ET.fromstring(xml)
    for chan in root.iter("channel"):
        source = chan.find("source")
        if source is not None and source.get("mode") == "bind":
            source.set("path", channel)
    for serial in root.iter("serial"):
        source = serial.find("source")
        if serial.get("type") == "file" and source is not None:
            source.set("path", console)
    return ET.tostring(root, encoding="unicode")


def route_lines(lines: tuple[str, ...], suffix: str = "") -> list[str]:
    """The `route ...` lines of an `ip -batch` (each with `suffix`)."""
    return [f"{line}{suffix}" for line in lines if line.startswith("route ")]


def tap_lines(vm: LabVm, taps: dict[str, str], routes: bool) -> list[str]:
    """`guests.host_tap_lines`: without the routes (`routes=False`), or the routes only."""
    lines = guests.host_tap_lines(vm, taps)
    return [line for line in lines if line.startswith("route ") == routes]


# -- the destination, watched during the migration -----------------------------------------


class Destination:
    """Watches the incoming domain on the destination's daemon (its own connection and
    thread): wires its taps while it is paused, routes into them once it runs, and records
    when the agent there had the taps in its dispatch maps."""

    def __init__(
        self,
        paths: LabPaths,
        plan: LabPlan,
        vm: LabVm,
        dest: str,
        domain: str,
        reroute: list[nsexec.Job],
    ) -> None:
        self.reroute = reroute  # every other namespace: the VM's addresses via `dest`
        self.paths, self.vm, self.domain = paths, vm.key, domain
        self.lab_vm = replace(vm, host=dest)
        self.ns = plan.host(dest).ns
        self.uri = libvirtd.uri(paths, dest)
        self.taps: dict[str, str] = {}
        self.times: dict[str, float] = {}  # event -> monotonic
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.routed = threading.Lock()
        self.threads = [
            threading.Thread(target=self._watch, daemon=True),
            threading.Thread(target=self._enforced, daemon=True),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _mark(self, event: str) -> None:
        self.times.setdefault(event, time.monotonic())

    def _watch(self) -> None:
        import libvirt

        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            self.errors.append(f"destination: {exc}")
            return
        try:
            while not self.stop.is_set():
                try:
                    dom = conn.lookupByName(self.domain)
                    state, _ = dom.state()
                    xml = dom.XMLDesc(0) if not self.taps else ""
                except libvirt.libvirtError:
                    time.sleep(POLL)
                    continue
                if not self.taps:
                    taps = guests.taps_of(xml)
                    if taps:
                        self._mark("appeared")
                        self.taps = taps
                        self._wire()
                if state == libvirt.VIR_DOMAIN_RUNNING and self.taps:
                    self._mark("resumed")
                    self.route()
                    return
                time.sleep(POLL)
        except Exception as exc:  # reported; the lab routes after the migration anyway
            self.errors.append(f"destination watcher: {exc}")
        finally:
            conn.close()

    def _wire(self) -> None:
        """The paused guest's taps: gateway addresses, neighbours, sysctls; no routes."""
        nsexec.run(nsexec.batch_job(tap_lines(self.lab_vm, self.taps, routes=False), self.ns))
        sysctls = [f"net/ipv4/conf/{t}/rp_filter=0" for t in self.taps.values()]
        sysctls += [f"net/ipv6/conf/{t}/accept_ra=0" for t in self.taps.values()]
        nsexec.run(nsexec.Job(("sysctl", "-q", "-w", *sysctls), ns=self.ns))

    def route(self) -> None:
        """The VM's addresses into its taps here, and via here everywhere else (once). At
        the resume, not after libvirt's migration call returns (~1 s later): the source's
        tap lives until its QEMU exits, and routes into it meanwhile would lose the traffic
        long enough for TCP's retransmission timer to back off (measured: gap 2.5 s)."""
        with self.routed:
            if "routed" in self.times or not self.taps:
                return
            lines = tap_lines(self.lab_vm, self.taps, routes=True)
            nsexec.run_jobs([nsexec.batch_job(lines, self.ns), *self.reroute])
            self._mark("routed")

    def _enforced(self) -> None:
        argv = ["nft", "-j", "list", "map", "inet", "hyperwall", "to4"]
        while not self.stop.is_set():
            if self.taps:
                out = subprocess.run(
                    ["ip", "netns", "exec", self.ns, *argv], capture_output=True, text=True
                ).stdout
                if all(f'"{tap}"' in out for tap in self.taps.values()):
                    self._mark("enforced")
                    return
            time.sleep(POLL)

    def finish(self, timeout: float = 5.0) -> None:
        """After the migration: wire whatever the watcher missed, stop it."""
        deadline = time.monotonic() + timeout
        while not self.taps and not self.errors and time.monotonic() < deadline:
            time.sleep(POLL)
        if self.taps and "routed" not in self.times:
            self.route()
        self.threads[0].join(max(0.0, deadline - time.monotonic()))
        self.threads[1].join(max(0.0, deadline - time.monotonic()))
        self.stop.set()


# -- the gap, from the outside -------------------------------------------------------------


class StreamMeter(GapMeter):
    """`lab.gapmeter` in the external namespace, into the guest (`--proto tcp|udp`)."""

    def __init__(self, ns: str, src: str, dst: str, proto: str, port: int) -> None:
        argv = [sys.executable, "-m", "hyperwall.lab.gapmeter", "--proto", proto]
        argv += ["--src", src, "--dst", dst, "--port", str(port), "--interval", "0.002"]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.ready = self.proc.stdout.readline().strip() == "ready"
        self.result: dict[str, Any] = {}

    def stop(self) -> float | None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            line = self.proc.stdout.read()
            self.proc.wait(timeout=15)
            self.result = json.loads(line.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            self.kill()
            return None
        gap = self.result.get("gapMs")
        return float(gap) if gap is not None and self.ready else None


# -- the whole move ------------------------------------------------------------------------


def running_host(paths: LabPaths, hosts: list[str], domain: str) -> str | None:
    """The host whose daemon runs `domain` (libvirt knows where a VM runs)."""
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    for host in hosts:
        try:
            conn = libvirt.open(libvirtd.uri(paths, host))
        except libvirt.libvirtError:
            continue
        try:
            with contextlib.suppress(libvirt.libvirtError):
                if conn.lookupByName(domain).isActive():
                    return host
        finally:
            conn.close()
    return None


def _job_downtime(dom: Any) -> float | None:
    import libvirt

    try:
        stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        return None
    value = stats.get("downtime")
    return float(value) if value is not None else None


def follow_proxy(
    lab: Lab, key: str, guest: guests.Guest, dest: str, channel: str, taps: dict[str, str]
) -> None:
    """The guest's control proxy, on the destination's channel; guests.json (host, taps)
    and the state."""
    paths, plan = lab.paths, lab.plan()
    state = lab.state()
    old = state.vms.get(key)
    if old is not None and old.pid is not None:
        nsexec.terminate([old.pid])
    moved = replace(
        guest,
        host=dest,
        uri=libvirtd.uri(paths, dest),
        channel=channel,
        taps=tuple(sorted(taps.items())),
    )
    dest_ns = plan.host(dest).ns
    log = paths.logs / f"{guest.socket.rsplit('.', 1)[0]}.log"
    pid = nsexec.spawn(dest_ns, guests.proxy_argv(paths, moved), log)
    responder = Responder(dest_ns, guest.socket, pid, plan.vm(key).addresses)
    state = lab.state()
    write_state(paths, replace(state, vms={**state.vms, key: responder}))
    all_guests = guests.read_guests(paths)
    all_guests[key] = moved
    guests.write_guests(paths, all_guests)
    guests.wait_booted(paths, {key: responder}, timeout=30.0)


def migrate_guest(
    lab: Lab, vm: str, to: str, state: bool = True, timeout: float = 60.0, token: str | None = None
) -> GuestMigrationReport:
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    catalog = lab.catalog()
    w = find_vm(catalog, vm, lab.name)
    mode = lab.plan().mode
    if mode != "routed":
        raise LabInputError("VM: lab migrate of guests needs a routed lab (not --mode bridge)")
    full = build_plan(lab.name, catalog, mode)
    hosts = [h.name for h in full.hosts]
    if to not in hosts:
        raise LabInputError(f"--to: {to!r} is not a host of lab {lab.name!r} ({', '.join(hosts)})")
    guest = guests.read_guests(lab.paths).get(w.key)
    if guest is None:
        raise LabInputError(f"VM: {w.key} is not a guest of lab {lab.name!r}")
    source = running_host(lab.paths, hosts, guest.domain)
    if source is None:
        raise LabError(f"{w.key}: libvirt runs domain {guest.domain!r} on no host of the lab")
    if source == to:
        raise LabInputError(f"--to: {w.key} already runs on {to}")
    if not any(o.host == w.host for o in catalog.workloads.values() if o.key != w.key):
        raise LabInputError(
            f"VM: {w.key} is the last VM of {w.host}; the lab's hosts are those of its VMs"
        )
    old_plan = build_plan(lab.name, placed(catalog, w.key, source), mode)
    new_plan = build_plan(lab.name, placed(catalog, w.key, to), mode)
    sw = plan_switchover(old_plan, new_plan, w.key)
    source_ns, dest_ip = full.host(source).ns, full.host(to).ipv4
    fallback = route_lines(sw.reroute.get(source_ns, ()), f" metric {FALLBACK_METRIC}")
    addresses = new_plan.vm(w.key).addresses
    hooks = handover_hooks(lab, w.key, source, to)
    path = stream_path(catalog, w.key)
    meter = StreamMeter(full.external.ns, *path) if path else None
    channel = str(lab.paths.dir / "guests" / f"v{full.vm(w.key).index}.{to}.chan")
    console = str(libvirtd.console_log(lab.paths, to, guest.domain))
    reroute = [nsexec.batch_job(list(lines), ns) for ns, lines in sw.reroute.items()]
    watcher = Destination(lab.paths, full, full.vm(w.key), to, guest.domain, reroute)
    connections, errors = 0, list[str]()
    steps = Steps()
    step = steps.step
    downtime: float | None = None
    migrated_at = steps.clock

    conn = libvirt.open(libvirtd.uri(lab.paths, source))
    try:
        if isinstance(hooks, Hooks):
            hooks.before_move(state, errors, steps)  # (a), (b)
        nsexec.run(nsexec.batch_job(fallback, source_ns))  # (c)
        dom = conn.lookupByName(guest.domain)
        xml = destination_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE), channel, console)
        params = {
            libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{dest_ip}",
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: xml,
        }
        flags = (
            libvirt.VIR_MIGRATE_LIVE
            | libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        )
        watcher.start()
        migrated_at = time.monotonic()
        try:
            dom.migrateToURI3(f"qemu+tcp://{dest_ip}/system", params, flags)  # (d)
        except libvirt.libvirtError as exc:
            _undo(lab, hooks, w.key, addresses, fallback, source_ns)
            raise LabError(f"libvirt refused or failed the migration: {exc}") from None
        finally:
            watcher.finish()
        step("migration")
        nsexec.run_jobs(reroute)  # (e): done at the resume already; again, idempotent
        deletes = [line.replace("route replace", "route del", 1) for line in fallback]
        nsexec.run(nsexec.batch_job(deletes, source_ns, force=True), check=False)
        step("reroute")
        if agents.agent_source_file(lab.paths).exists():  # (f)
            ManagerMove(lab, w, to, token).apply()
        write_documents(lab, w, to)
        step("documents")
        if isinstance(hooks, Hooks):  # (g): the domain may be gone here: its addresses given
            connections = hooks.after_move(state, errors, steps, addresses)
        dconn = libvirt.open(libvirtd.uri(lab.paths, to))
        try:
            downtime = _job_downtime(dconn.lookupByName(guest.domain))
        finally:
            dconn.close()
        follow_proxy(lab, w.key, guest, to, channel, watcher.taps)  # (h)
        step("proxy")
        if lab.state().agents:
            lab.wait(timeout)
            step("converged")
        if isinstance(hooks, Hooks):
            hooks.done()
            step("done")
        gap = meter.stop() if meter is not None else None
    finally:
        conn.close()
        watcher.stop.set()
        if meter is not None:
            meter.kill()
    events = tuple(
        (name, round((t - migrated_at) * 1000, 1))
        for name, t in sorted(watcher.times.items(), key=lambda kv: kv[1])
    )
    enforced, resumed = watcher.times.get("enforced"), watcher.times.get("resumed")
    handover = tuple(hooks.answers) if isinstance(hooks, Hooks) else (hooks,)
    return GuestMigrationReport(
        vm=vm,
        key=w.key,
        source=source,
        dest=to,
        state=state,
        connections=connections,
        gap_ms=gap,
        echo=f"{path[0]} -> {path[1]} {path[2]}/{path[3]}" if path else None,
        handover=handover,
        errors=tuple(errors + watcher.errors),
        steps_ms=tuple(steps.done),
        downtime_ms=downtime,
        enforced_before_resume=(
            enforced is not None and resumed is not None and enforced <= resumed
            if lab.state().agents
            else None
        ),
        events_ms=events,
        broken=meter.result.get("broken") if meter is not None else None,
    )


def _undo(
    lab: Lab,
    hooks: Hooks | str,
    key: str,
    addresses: tuple[str, ...],
    fallback: list[str],
    source_ns: str,
) -> None:
    """A failed migration: the VM runs on the source (libvirt resumes it there). The
    fallback routes go; the destination forgets the key and any entries it was sent."""
    deletes = [line.replace("route replace", "route del", 1) for line in fallback]
    nsexec.run(nsexec.batch_job(deletes, source_ns, force=True), check=False)
    if isinstance(hooks, Hooks):
        with contextlib.suppress(Exception):
            hooks.dest.release(key, addresses)
            hooks.dest.done(key)
