"""`lab up --vm libvirt`: what `Lab` does differently when its VMs are real guests.

The composition of `guest_image`, `libvirtd`, `guests` and `guest_proxy` that `Lab` calls at
its few branch points: the plan (no VM namespaces), bringing up daemons, guests and proxies
instead of VM responders, the agents' extra arguments, the hashes they converge to, `exec`
through the control channel, and the guests' part of `down`. The lab's kind of VM is
recorded in `STATE/vm` (`guests.read_vm_kind`), so every later `Lab` of the same name knows.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from hyperwall.lab import build, guests, libvirtd, nsexec, responder_client
from hyperwall.lab.errors import LabError, LabInputError
from hyperwall.lab.guest_image import DEFAULT_CACHE, ensure_image
from hyperwall.lab.state import LabPaths, Responder
from hyperwall.lab.topology import LabPlan

VmKind = Literal["netns", "libvirt"]
VM_KINDS: tuple[str, ...] = ("netns", "libvirt")
EXEC_TIMEOUT = 60.0


def check_available() -> None:
    """LabInputError (exit 2) if this machine cannot run guests."""
    why = libvirtd.missing()
    if why is not None:
        raise LabInputError(why)


def plan_for(plan: LabPlan) -> LabPlan:
    """The namespaces and links to build when the VMs are guests (LabInputError if not fit).

    Both attachments: routed (`<interface type='ethernet'>` taps) and bridge (`<interface
    type='bridge'>` on the host's `hwbr0`, which the plan builds with only its VXLAN port)."""
    guests.check_guests(plan)
    return guests.vm_free_plan(plan)


def mark(paths: LabPaths) -> None:
    """Record that the lab's VMs are guests (before anything is built)."""
    guests.write_vm_kind(paths, "libvirt")


def is_guest_lab(paths: LabPaths) -> bool:
    return guests.read_vm_kind(paths) == "libvirt"


def bring_up(
    paths: LabPaths, plan: LabPlan, sources: Sequence[Path], cache: Path = DEFAULT_CACHE
) -> tuple[dict[str, Responder], Responder, dict[str, float]]:
    """Daemons, image, guests, proxies and the external responder, on a built plan.

    Returns the VM "responders" (each guest's proxy: socket, pid), the external responder
    and each guest's seconds from `create` to answering on its channel.
    """
    pids = {h.name: libvirtd.start(paths, h, cache) for h in plan.hosts}
    image = ensure_image(cache)  # while the daemons start
    libvirtd.wait_ready(paths, pids)
    started = time.monotonic()
    running = guests.start_guests(paths, plan, image, sources)
    created = time.monotonic() - started
    guests.write_guests(paths, running)
    proxies = guests.start_proxies(paths, plan, running)
    socket = paths.sockets / "x.sock"
    log = paths.logs / "x.log"
    pid = nsexec.spawn(plan.external.ns, build.responder_argv(socket, ()), log)
    external = Responder(plan.external.ns, "x.sock", pid)
    build.wait_ready(paths, [external])
    booted = guests.wait_booted(paths, proxies)
    times = {k: round(v, 2) for k, v in sorted(booted.items())}
    times["_create"] = round(created, 2)  # define + start of every domain, taps set up
    times["_all"] = round(time.monotonic() - started, 2)
    (paths.dir / "boot-times.json").write_text(json.dumps(times) + "\n")
    return proxies, external, booted


def agent_args(paths: LabPaths, host: str) -> list[str]:
    """What an agent gets on top of the usual command line in a guest lab."""
    if not is_guest_lab(paths):
        return []
    return ["--libvirt", libvirtd.uri(paths, host), "--vm-prefix", "vnet"]


def expected_hashes(paths: LabPaths, catalog: Any, hosts: Sequence[str]) -> dict[str, str]:
    return guests.expected_hashes(catalog, guests.read_guests(paths), hosts)


def exec_in_guest(
    paths: LabPaths,
    responder: Responder,
    argv: Sequence[str],
    check: bool = False,
    stdin: str | None = None,
    timeout: float = EXEC_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    message = {"op": "exec", "argv": list(argv), "stdin": stdin or "", "timeout": timeout}
    try:
        reply = responder_client.request(paths.sockets / responder.socket, message, timeout + 10)
    except responder_client.ResponderError as exc:
        raise LabError(str(exc)) from None
    if not reply.get("ok"):
        raise LabError(f"exec in guest: {reply.get('error')}")
    done = subprocess.CompletedProcess(
        list(argv), int(reply["returncode"]), str(reply["stdout"]), str(reply["stderr"])
    )
    if check:
        done.check_returncode()
    return done


def guest_status(paths: LabPaths) -> dict[str, dict[str, Any]]:
    """Workload key -> domain, host, taps and whether libvirt reports it running."""
    out: dict[str, dict[str, Any]] = {}
    running = guests.guests_file(paths).exists()
    for key, g in guests.read_guests(paths).items():
        out[key] = {"domain": g.domain, "host": g.host, "uri": g.uri, "taps": dict(g.taps)}
    if not running:
        return out
    try:
        import libvirt
    except ImportError:
        return out
    libvirt.registerErrorHandler(lambda *_: None, None)
    for host in sorted({v["host"] for v in out.values()}):
        try:
            conn = libvirt.open(libvirtd.uri(paths, host))
        except libvirt.libvirtError:
            continue
        try:
            active = {dom.name() for dom in conn.listAllDomains() if dom.isActive()}
        finally:
            conn.close()
        for v in out.values():
            if v["host"] == host:
                v["running"] = v["domain"] in active
    return out


def lab_processes(paths: LabPaths) -> list[int]:
    """Processes whose command line or working directory points into the lab's folder."""
    marker = f"{paths.dir}/"
    mine = {os.getpid(), os.getppid()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        pid = int(entry.name)
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            cwd = ""
        if marker in nsexec.cmdline(pid) or f"{cwd}/".startswith(marker):
            found.append(pid)
    return found


def before_teardown(paths: LabPaths) -> None:
    """Destroy the guests while their daemons still answer; stop leftovers outside the
    lab's namespaces (a crashed `up`). `build.teardown` then stops everything inside them."""
    hosts_dir = paths.dir / "libvirt"
    if hosts_dir.is_dir():
        guests.destroy_guests(paths, sorted(p.name for p in hosts_dir.iterdir()))
    nsexec.terminate(lab_processes(paths))


def boot_times(paths: LabPaths) -> Mapping[str, float]:
    """Seconds from the guests' start to each one answering on its channel; "_create": to
    every domain started (defined, QEMU running, taps set up); "_all": the whole boot."""
    try:
        return dict(json.loads((paths.dir / "boot-times.json").read_text()))
    except (OSError, ValueError):
        return {}
