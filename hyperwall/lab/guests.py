"""Real guests for the lab's workloads (`lab up --vm libvirt`): one QEMU domain per Workload.

- `vm_free_plan` (pure): the namespace plan without the VM namespaces and VM links; hosts,
  underlay and external namespace stay as they are.
- `guest_domain_xml` (pure): the domain for one Workload document: `hypervisor.domain_xml`
  (name, `hw:workload` metadata, one `<interface>` per declared interface with its MAC) plus
  direct kernel boot of the lab image (`guest_image`), 128 MiB, virtio-net without vhost
  (`<driver name='qemu'/>`) and without option ROM, a virtio-serial `<channel type='unix'>`
  named `hyperwall.control` (QEMU listens; `guest_proxy` connects), and the serial console
  to a file. Routed: `<interface type='ethernet'>`; bridge mode: `<interface type='bridge'>`
  on the host's `hwbr0` (libvirt enslaves the tap). Taps named by libvirt (`vnet0`...).
- `start_guests`: defines and starts every guest, all at once (TCG boots take seconds; the
  daemons and QEMUs work in parallel), then, acting as the hypervisor's network setup (not
  the firewall), reads each live XML for its taps and gives every tap the gateway addresses
  and a `/32` / `/128` route and a permanent neighbour per guest address, in the host's
  namespace, as `build` does for the namespace VMs' veths (bridge mode: nothing, the bridge
  is the network). Then a `guest_proxy` per guest.
- `expected_hashes`: what each host's agent reports once it enforces the documents on
  these taps (the compiled program bound to the taps, `hypervisor.localize`).

The domain type is chosen at run time: `kvm` where `/dev/kvm` can run a stock kernel
(hardware virtualisation, not the PVM device of some cloud machines), else `qemu` (TCG).
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hyperwall.attachment import Attachment
from hyperwall.hypervisor.domain_xml import domain_xml
from hyperwall.io.files import read_documents
from hyperwall.lab import libvirtd, nsexec, responder_client
from hyperwall.lab.errors import LabError, LabInputError
from hyperwall.lab.guest_image import GuestImage
from hyperwall.lab.state import LabPaths, Responder
from hyperwall.lab.topology import GATEWAY4, GATEWAY6, HOST_BRIDGE, LabPlan, LabVm
from hyperwall.policy import documents as d

CHANNEL = "hyperwall.control"
MEMORY_MIB = 128
BOOT_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class Guest:
    key: str  # workload key
    domain: str  # libvirt domain name (the workload's name)
    host: str
    uri: str
    channel: str  # QEMU's end of the control channel
    socket: str  # the proxy's control socket, file name under LabPaths.sockets
    taps: tuple[tuple[str, str], ...] = ()  # (MAC, tap) once running

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "host": self.host,
            "uri": self.uri,
            "channel": self.channel,
            "socket": self.socket,
            "taps": [list(t) for t in self.taps],
        }

    @staticmethod
    def from_json(key: str, data: Mapping[str, Any]) -> Guest:
        taps = tuple((str(m), str(t)) for m, t in data.get("taps", ()))
        return Guest(
            key,
            str(data["domain"]),
            str(data["host"]),
            str(data["uri"]),
            str(data["channel"]),
            str(data["socket"]),
            taps,
        )


# -- files next to the state file -----------------------------------------------------------


def vm_kind_file(paths: LabPaths) -> Path:
    return paths.dir / "vm"


def read_vm_kind(paths: LabPaths) -> str:
    """ "libvirt" if the lab's VMs are guests, else "netns" (also for labs without the file)."""
    try:
        return vm_kind_file(paths).read_text().strip() or "netns"
    except OSError:
        return "netns"


def write_vm_kind(paths: LabPaths, kind: str) -> None:
    paths.dir.mkdir(parents=True, exist_ok=True)
    vm_kind_file(paths).write_text(kind + "\n")


def guests_file(paths: LabPaths) -> Path:
    return paths.dir / "guests.json"


def write_guests(paths: LabPaths, guests: Mapping[str, Guest]) -> None:
    tmp = guests_file(paths).with_suffix(".tmp")
    tmp.write_text(json.dumps({k: g.to_json() for k, g in guests.items()}, indent=2) + "\n")
    tmp.replace(guests_file(paths))


def read_guests(paths: LabPaths) -> dict[str, Guest]:
    try:
        data = json.loads(guests_file(paths).read_text())
    except (OSError, ValueError):
        return {}
    return {k: Guest.from_json(k, v) for k, v in data.items()}


# -- pure ------------------------------------------------------------------------------------


def domain_type() -> str:
    """ "kvm" where /dev/kvm can boot a stock kernel, else "qemu" (TCG).

    A PVM `/dev/kvm` (module kvm_pvm, on CPUs without vmx/svm) emulates an unmodified guest
    kernel instruction by instruction and fails (HYPERVISOR_FACTS.md): not usable.
    """
    if not Path("/dev/kvm").exists() or Path("/sys/module/kvm_pvm").exists():
        return "qemu"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "qemu"
    return "kvm" if (" vmx" in flags or " svm" in flags) else "qemu"


def vm_free_plan(plan: LabPlan) -> LabPlan:
    """`plan` without the VM namespaces and the host ends of the VM links."""
    vm_ns = {v.ns for v in plan.vms}
    vm_links = {iface.host_ifname for v in plan.vms for iface in v.interfaces}

    def keep(ns: str, dev: str) -> bool:
        return ns not in vm_ns and dev not in vm_links

    return replace(
        plan,
        namespaces=tuple(n for n in plan.namespaces if n.name not in vm_ns),
        veths=tuple(v for v in plan.veths if v.ns not in vm_ns and v.peer_ns not in vm_ns),
        bridges=tuple(
            replace(b, ports=tuple(p for p in b.ports if p not in vm_links)) for b in plan.bridges
        ),
        addresses=tuple(a for a in plan.addresses if keep(a.ns, a.dev)),
        routes=tuple(r for r in plan.routes if keep(r.ns, r.dev)),
        rules=tuple(r for r in plan.rules if r.ns not in vm_ns),
        neighbours=tuple(n for n in plan.neighbours if keep(n.ns, n.dev)),
        sysctls=tuple(
            s
            for s in plan.sysctls
            if s.ns not in vm_ns and not any(f"/{link}/" in s.key for link in vm_links)
        ),
    )


def kernel_cmdline(vm: LabVm, mode: Attachment = "routed") -> str:
    """The guest's `/init` reads this: name, interfaces, and the gateways (`hwgw=onlink` in
    bridge mode: every destination on the segment, like the namespace VMs there)."""
    words = ["console=ttyS0", "quiet", "panic=-1", f"hwname={vm.name}"]
    for iface in vm.interfaces:
        words.append(
            f"hwif={iface.mac.lower()},{iface.name},{iface.table or 0},{'+'.join(iface.ips)}"
        )
    words.append("hwgw=onlink" if mode == "bridge" else f"hwgw={GATEWAY4},{GATEWAY6}")
    return " ".join(words)


def guest_domain_xml(
    doc: d.WorkloadDoc,
    vm: LabVm,
    image: GuestImage,
    channel: Path,
    console: Path,
    dtype: str = "qemu",
    mode: Attachment = "routed",
) -> str:
    os_el = ET.Element("os")
    ET.SubElement(os_el, "type", {"arch": "x86_64", "machine": "pc"}).text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(image.kernel)
    ET.SubElement(os_el, "initrd").text = str(image.initrd)
    ET.SubElement(os_el, "cmdline").text = kernel_cmdline(vm, mode)
    chan = ET.Element("channel", {"type": "unix"})
    ET.SubElement(chan, "source", {"mode": "bind", "path": str(channel)})
    ET.SubElement(chan, "target", {"type": "virtio", "name": CHANNEL})
    serial = ET.Element("serial", {"type": "file"})
    ET.SubElement(serial, "source", {"path": str(console)})
    ET.SubElement(serial, "target", {"port": "0"})
    extra = [
        chan,
        serial,
        ET.Element("controller", {"type": "usb", "model": "none"}),
        ET.Element("memballoon", {"model": "none"}),
    ]
    text = domain_xml(
        doc,
        domain_type=dtype,
        interface_type="bridge" if mode == "bridge" else "ethernet",
        extra_devices=extra,
        os_xml=os_el,
        memory_mib=MEMORY_MIB,
    )
    root = ET.fromstring(text)
    for iface in root.iter("interface"):
        if mode == "bridge":
            ET.SubElement(iface, "source", {"bridge": HOST_BRIDGE})
        ET.SubElement(iface, "model", {"type": "virtio"})
        ET.SubElement(iface, "driver", {"name": "qemu"})  # no vhost-net here
        ET.SubElement(iface, "rom", {"enabled": "no"})
    for tag in ("on_poweroff", "on_reboot", "on_crash"):
        ET.SubElement(root, tag).text = "destroy"
    return ET.tostring(root, encoding="unicode")


def taps_of(xml: str) -> dict[str, str]:
    """MAC (lower case) -> tap device, from a running domain's XML."""
    out = {}
    for iface in ET.fromstring(xml).iter("interface"):
        mac, target = iface.find("mac"), iface.find("target")
        if mac is not None and target is not None and target.get("dev"):
            out[mac.get("address", "").lower()] = str(target.get("dev"))
    return out


def host_tap_lines(vm: LabVm, taps: Mapping[str, str]) -> list[str]:
    """`ip -batch` lines in the host namespace for a running guest's taps (routed)."""
    lines = []
    for iface in vm.interfaces:
        tap = taps[iface.mac.lower()]
        lines += [
            f"link set dev {tap} up",
            f"address add {GATEWAY4}/32 dev {tap}",
            f"address add {GATEWAY6}/64 dev {tap} nodad",
        ]
        for ip in iface.ips:
            prefix = f"{ip}/128" if ":" in ip else f"{ip}/32"
            lines.append(f"route replace {prefix} dev {tap}")
            lines.append(f"neigh replace {ip} lladdr {iface.mac.lower()} dev {tap} nud permanent")
    return lines


def wire_taps(plan: LabPlan, vm: LabVm, live_xml: str) -> dict[str, str]:
    """The hypervisor's network setup for a guest that just started: its taps (MAC -> tap,
    from the live XML). Routed: they get the gateway addresses, routes and neighbours in the
    host namespace; bridge mode: nothing (libvirt made them ports of `hwbr0`). Not the
    firewall: the agent does that. LabError if a tap is missing."""
    taps = taps_of(live_xml)
    missing = [i.mac for i in vm.interfaces if i.mac.lower() not in taps]
    if missing:
        raise LabError(f"guest {vm.key}: no tap for {', '.join(missing)}")
    if plan.mode == "bridge":
        return taps
    host_ns = plan.host(vm.host).ns
    nsexec.run(nsexec.batch_job(host_tap_lines(vm, taps), host_ns))
    sysctls = [f"net/ipv4/conf/{t}/rp_filter=0" for t in taps.values()]
    sysctls += [f"net/ipv6/conf/{t}/accept_ra=0" for t in taps.values()]
    nsexec.run(nsexec.Job(("sysctl", "-q", "-w", *sysctls), ns=host_ns, what="tap sysctls"))
    return taps


def workload_documents(sources: Sequence[Path]) -> dict[str, d.WorkloadDoc]:
    """Workload key -> its document, from the (already validated) sources."""
    docs, _ = read_documents(sources)
    out = {}
    for raw, _source in docs:
        if isinstance(raw, dict) and raw.get("kind") == "Workload":
            doc = d.WorkloadDoc.model_validate(raw)
            tenant = doc.metadata.tenant
            out[f"{tenant}/{doc.metadata.name}" if tenant else doc.metadata.name] = doc
    return out


def check_guests(plan: LabPlan) -> None:
    """libvirt domain names are workload names: unique per host."""
    seen: dict[tuple[str, str], str] = {}
    for vm in plan.vms:
        other = seen.setdefault((vm.host, vm.name), vm.key)
        if other != vm.key:
            raise LabInputError(
                f"--vm libvirt: workloads {other} and {vm.key} on host {vm.host} would be two"
                f" libvirt domains named {vm.name!r}"
            )


# -- I/O -------------------------------------------------------------------------------------


def _connections(paths: LabPaths, hosts: Sequence[str]) -> dict[str, Any]:
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    return {h: libvirt.open(libvirtd.uri(paths, h)) for h in hosts}


def start_guests(
    paths: LabPaths, plan: LabPlan, image: GuestImage, sources: Sequence[Path]
) -> dict[str, Guest]:
    """Define and start every guest in parallel, set up their taps; key -> Guest."""
    import libvirt

    docs = workload_documents(sources)
    conns = _connections(paths, [h.name for h in plan.hosts])
    dtype = domain_type()
    guests_dir = paths.dir / "guests"
    guests_dir.mkdir(parents=True, exist_ok=True)

    def boot(vm: LabVm) -> Guest:
        channel = guests_dir / f"v{vm.index}.chan"
        console = libvirtd.console_log(paths, vm.host, vm.name)
        xml = guest_domain_xml(docs[vm.key], vm, image, channel, console, dtype, plan.mode)
        conn = conns[vm.host]
        try:
            dom = conn.defineXML(xml)
            dom.create()
        except libvirt.libvirtError as exc:
            raise LabError(f"guest {vm.key} on {vm.host}: {exc}") from None
        taps = wire_taps(plan, vm, dom.XMLDesc(0))
        return Guest(
            vm.key,
            vm.name,
            vm.host,
            libvirtd.uri(paths, vm.host),
            str(channel),
            vm.socket,
            tuple(sorted(taps.items())),
        )

    try:
        with ThreadPoolExecutor(max_workers=max(1, len(plan.vms))) as pool:
            guests = {g.key: g for g in pool.map(boot, plan.vms)}
    finally:
        for conn in conns.values():
            conn.close()
    return guests


def proxy_argv(paths: LabPaths, guest: Guest) -> list[str]:
    import sys

    socket = paths.sockets / guest.socket
    argv = [sys.executable, "-m", "hyperwall.lab.guest_proxy", "--socket", str(socket)]
    return [*argv, "--channel", guest.channel]


def start_proxies(
    paths: LabPaths, plan: LabPlan, guests: Mapping[str, Guest]
) -> dict[str, Responder]:
    """A `guest_proxy` per guest (in its host's namespace, so `down` finds it); key -> it."""
    paths.sockets.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, guest in guests.items():
        vm = plan.vm(key)
        host_ns = plan.host(guest.host).ns
        log = paths.logs / f"{Path(guest.socket).stem}.log"
        pid = nsexec.spawn(host_ns, proxy_argv(paths, guest), log)
        out[key] = Responder(host_ns, guest.socket, pid, vm.addresses)
    return out


def wait_booted(
    paths: LabPaths, proxies: Mapping[str, Responder], timeout: float = BOOT_TIMEOUT
) -> dict[str, float]:
    """Until every guest answers a ping through its proxy; key -> seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    waiting = dict(proxies)
    booted: dict[str, float] = {}
    while waiting:
        for key, r in list(waiting.items()):
            try:
                responder_client.ping(paths.sockets / r.socket, timeout=2.0)
            except responder_client.ResponderError:
                if r.pid is not None and not nsexec.alive(r.pid):
                    raise LabError(f"the control proxy of guest {key} exited") from None
                continue
            booted[key] = time.monotonic() - started
            del waiting[key]
        if waiting and time.monotonic() > deadline:
            raise LabError(
                f"guests did not answer within {timeout:g} s: {', '.join(sorted(waiting))}"
                f" (consoles in {paths.dir}/libvirt/*/console/)"
            )
        if waiting:
            time.sleep(0.1)
    return booted


def destroy_guests(paths: LabPaths, hosts: Sequence[str]) -> None:
    """Destroy and undefine every domain of the lab's daemons that still answer, all at once
    (libvirt's destroy of a TCG guest takes about 2 s)."""
    try:
        import libvirt
    except ImportError:
        return
    libvirt.registerErrorHandler(lambda *_: None, None)
    conns = []
    for host in hosts:
        if libvirtd.socket_path(paths, host).exists():
            try:
                conns.append(libvirt.open(libvirtd.uri(paths, host)))
            except libvirt.libvirtError:
                continue

    def destroy(dom: Any) -> None:
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError:
            pass

    try:
        domains = []
        for conn in conns:
            try:
                domains += conn.listAllDomains()
            except libvirt.libvirtError:
                continue
        with ThreadPoolExecutor(max_workers=max(1, len(domains))) as pool:
            list(pool.map(destroy, domains))
    finally:
        for conn in conns:
            conn.close()


def expected_hashes(
    catalog: Any, guests: Mapping[str, Guest], hosts: Sequence[str]
) -> dict[str, str]:
    """The program hash each host's agent reports once it enforces `catalog` on the taps."""
    from hyperwall.compiler.fleet import FleetCompiler
    from hyperwall.compiler.serialize import program_hash
    from hyperwall.hypervisor.localize import localize

    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    out = {}
    for host in hosts:
        taps = {
            mac: (g.domain, tap) for g in guests.values() if g.host == host for mac, tap in g.taps
        }
        out[host] = program_hash(localize(compiler.host_program(host), taps))
    return out
