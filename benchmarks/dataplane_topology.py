"""Lab topology of the data-plane benchmark: hosts and VMs as network namespaces.

Counterpart of `benchmarks.dataplane` (which measures) and `benchmarks.dataplane_policy`
(the fleet the namespaces stand for). Everything it creates is named `hwb-...`: namespaces
`hwb-<case>-<role>`, and every link inside them. Nothing is created in the root namespace;
its firewall, routes and sysctls are never touched (every command runs with `ip -n NS` or
`ip netns exec NS`).

One instance per benchmark case, so a case's firewall is loaded once and the cases can be
interleaved without reloading (a 100,000-rule program takes tens of seconds to load):

    client VM (vc) 10.0.0.1 ─┐                         ┌─ server-b VM (vr) 10.0.0.3
    server-a VM (vs) 10.0.0.2 ┴─ host A (ha) ══ underlay ══ host B (hb) ┘
                                    │ (case d only)
                             appliance (fw): hairpin for every VM flow of host A

Attachment is routed, Calico-style: each VM has its address as /32 and a default route via
169.254.1.1 (onlink, permanent neighbour); the host has a /32 route and a permanent
neighbour entry per VM, `ip_forward=1`, `rp_filter=0`, no ICMP redirects. Host-side VM links
are `hwb-v` + the MAC's last five bytes (`dataplane_policy.vm_ifname`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from benchmarks.dataplane_policy import CLIENT, SERVER_A, SERVER_B, Vm

PREFIX = "hwb-"
HOST_MAC = "ee:ee:ee:ee:ee:ee"  # every host-side VM link (Calico-style)
GATEWAY = "169.254.1.1"
UNDERLAY = ("hwb-ab", "192.168.254.1", "hwb-ba", "192.168.254.2")
APPLIANCE = ("hwb-af", "192.168.253.1", "hwb-fa", "192.168.253.2")
HAIRPIN_TABLE = "100"
LOCK_FILE = Path("/run/lock/hwb-dataplane.lock")

HOST_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.default.accept_redirects": "0",
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}
VM_SYSCTLS = {
    "net.ipv4.tcp_tw_reuse": "1",  # the connection-rate client reuses TIME_WAIT ports
    "net.ipv4.ip_local_port_range": "1024 65535",
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}


class CommandFailed(RuntimeError):
    pass


def run(
    cmd: Sequence[str],
    *,
    ns: str | None = None,
    stdin: str | None = None,
    timeout: float = 120.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` (inside namespace `ns` if given); raise with its stderr if it fails."""
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    done = subprocess.run(
        full, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise CommandFailed(f"{' '.join(full)}: {done.stderr.strip() or done.returncode}")
    return done


def ip(ns: str, *args: str) -> None:
    run(["ip", "-n", ns, *args])


def veth(ns: str, name: str, peer_ns: str, peer: str) -> None:
    """A veth pair created in `ns` with its peer directly in `peer_ns` (never in the root)."""
    ip(ns, "link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_ns)


def neighbour(ns: str, address: str, mac: str, dev: str) -> None:
    ip(ns, "neigh", "add", address, "lladdr", mac, "dev", dev, "nud", "permanent")


def sysctl(ns: str, values: dict[str, str]) -> None:
    run(["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())], ns=ns)


# -- processes and cleanup ---------------------------------------------------------------

_started: list[subprocess.Popen[str]] = []


def spawn(cmd: Sequence[str], ns: str, cpu: int | None = None) -> subprocess.Popen[str]:
    """Start a long-running process in `ns` (pinned to `cpu`); stopped by `stop_all`."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, *pin, *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _started.append(proc)
    return proc


def _kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)


def stop_all() -> None:
    """Stop every process this run started (by its own process id), then reap them."""
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            _kill_pid(proc.pid)
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=3)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def namespaces(prefix: str = PREFIX) -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(prefix))


def remove_namespaces(prefix: str = PREFIX) -> list[str]:
    """Delete every namespace named `prefix*`, first stopping processes left inside them.

    Only benchmark namespaces carry the prefix, and the caller holds the benchmark lock,
    so whatever runs in them was started by an earlier benchmark run that died.
    """
    found = namespaces(prefix)
    for name in found:
        pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
        for pid in pids:
            _kill_pid(int(pid))
        deadline = time.monotonic() + 3
        while pids and time.monotonic() < deadline:
            pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
            if pids:
                time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), signal.SIGKILL)
        run(["ip", "netns", "del", name], check=False)
    return found


@contextlib.contextmanager
def benchmark_lock(timeout: float = 0.0) -> Iterator[None]:
    """Only one benchmark (or smoke test) at a time owns the `hwb-` namespaces."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("w") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"another data-plane benchmark holds {LOCK_FILE}") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def lab(prefix: str = PREFIX) -> Iterator[None]:
    """Lock, remove leftovers, and guarantee cleanup on exit, error, Ctrl-C or SIGTERM."""

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with benchmark_lock():
            remove_namespaces(prefix)
            try:
                yield
            finally:
                stop_all()
                remove_namespaces(prefix)
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the topology ------------------------------------------------------------------------


@dataclass
class Instance:
    """One copy of the topology, for one benchmark case."""

    case: str
    appliance: bool = False
    servers: list[subprocess.Popen[str]] = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"{PREFIX}{self.case}-{role}"

    @property
    def host_a(self) -> str:
        return self.ns("ha")

    @property
    def host_b(self) -> str:
        return self.ns("hb")

    @property
    def firewall(self) -> str:
        return self.ns("fw")

    def vm_ns(self, vm: Vm) -> str:
        return self.ns({CLIENT.name: "vc", SERVER_A.name: "vs", SERVER_B.name: "vr"}[vm.name])

    def host_ns(self, vm: Vm) -> str:
        return self.host_a if vm.host == CLIENT.host else self.host_b

    @property
    def hosts(self) -> list[str]:
        return [self.host_a, self.host_b] + ([self.firewall] if self.appliance else [])

    def all_ns(self) -> list[str]:
        return [*self.hosts, *(self.vm_ns(vm) for vm in (CLIENT, SERVER_A, SERVER_B))]

    # -- building ---------------------------------------------------------------------

    def build(self) -> None:
        for name in self.all_ns():
            run(["ip", "netns", "add", name])
            ip(name, "link", "set", "lo", "up")
        for name in self.hosts:
            sysctl(name, HOST_SYSCTLS)
        for vm in (CLIENT, SERVER_A, SERVER_B):
            sysctl(self.vm_ns(vm), VM_SYSCTLS)
            self._attach(vm)
        a_if, a_ip, b_if, b_ip = UNDERLAY
        veth(self.host_a, a_if, self.host_b, b_if)
        for ns, ifname, addr in ((self.host_a, a_if, a_ip), (self.host_b, b_if, b_ip)):
            ip(ns, "addr", "add", f"{addr}/30", "dev", ifname)
            ip(ns, "link", "set", ifname, "up")
        for vm in (CLIENT, SERVER_A):
            ip(self.host_b, "route", "add", f"{vm.ip}/32", "via", a_ip)
        ip(self.host_a, "route", "add", f"{SERVER_B.ip}/32", "via", b_ip)
        if self.appliance:
            self._attach_appliance()

    def _attach(self, vm: Vm) -> None:
        host, guest = self.host_ns(vm), self.vm_ns(vm)
        veth(host, vm.ifname, guest, "hwb-eth0")
        ip(host, "link", "set", vm.ifname, "address", HOST_MAC, "up")
        ip(guest, "link", "set", "hwb-eth0", "address", vm.mac, "up")
        ip(guest, "addr", "add", f"{vm.ip}/32", "dev", "hwb-eth0")
        ip(guest, "route", "add", GATEWAY, "dev", "hwb-eth0", "scope", "link")
        ip(guest, "route", "add", "default", "via", GATEWAY, "dev", "hwb-eth0", "onlink")
        neighbour(guest, GATEWAY, HOST_MAC, "hwb-eth0")
        ip(host, "route", "add", f"{vm.ip}/32", "dev", vm.ifname)
        neighbour(host, vm.ip, vm.mac, vm.ifname)

    def _attach_appliance(self) -> None:
        """Host A sends every flow of its VMs (and from host B) through the appliance."""
        a_if, a_ip, f_if, f_ip = APPLIANCE
        veth(self.host_a, a_if, self.firewall, f_if)
        for ns, ifname, addr in ((self.host_a, a_if, a_ip), (self.firewall, f_if, f_ip)):
            ip(ns, "addr", "add", f"{addr}/30", "dev", ifname)
            ip(ns, "link", "set", ifname, "up")
        ip(self.firewall, "route", "add", "10.0.0.0/24", "via", a_ip)
        ip(self.host_a, "route", "add", "default", "via", f_ip, "dev", a_if, "table", HAIRPIN_TABLE)
        for ifname in (CLIENT.ifname, SERVER_A.ifname, UNDERLAY[0]):
            ip(self.host_a, "rule", "add", "iif", ifname, "lookup", HAIRPIN_TABLE, "pref", "100")

    # -- servers ----------------------------------------------------------------------

    def start_servers(
        self, server_bin: str, ports: tuple[int, int, int], cpu: int | None, lifetime: int
    ) -> None:
        """iperf3 and two echo servers (connection rate, request/response) in each server VM."""
        iperf_port, crr_port, rr_port = ports
        for vm in (SERVER_A, SERVER_B):
            ns = self.vm_ns(vm)
            self.servers.append(spawn(["iperf3", "-s", "-p", str(iperf_port)], ns, cpu))
            for port in (crr_port, rr_port):
                self.servers.append(spawn([server_bin, str(port), str(lifetime)], ns, cpu))
        for proc in self.servers:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise CommandFailed(f"server {proc.args!r} exited: {err.strip()}")
        for vm in (SERVER_A, SERVER_B):
            wait_listening(self.vm_ns(vm), ports)

    def flush_conntrack(self) -> None:
        for ns in self.hosts:
            run(["conntrack", "-F"], ns=ns, check=False)


def wait_listening(ns: str, ports: Sequence[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    wanted = {f":{p}" for p in ports}
    while True:
        out = run(["ss", "-Hltn"], ns=ns).stdout
        local = {line.split()[3][line.split()[3].rfind(":") :] for line in out.splitlines() if line}
        if wanted <= local:
            return
        if time.monotonic() > deadline:
            raise CommandFailed(f"{ns}: ports {sorted(wanted - local)} not listening")
        time.sleep(0.05)


def nft_load(ns: str, ruleset: str, timeout: float = 600.0) -> None:
    run(["nft", "-f", "-"], ns=ns, stdin=ruleset, timeout=timeout)


def read_stream(stream: IO[str] | None) -> str:
    return stream.read() if stream is not None else ""
