"""Builds a `LabPlan` in the kernel, starts the responders, and tears a lab down.

Construction, fast because every step is one iproute2 batch and the per-namespace steps run
in parallel: (1) all namespaces, (2) all veth pairs, born in their namespaces, (3) per
namespace its sysctls and nft table, (4) per namespace links up, addresses, neighbours,
routes, rules, (4b, bridge mode) the VXLAN flood entries, (5) responders. Teardown needs no
state: it finds the lab by its prefix.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hyperwall.attachment import Attachment, parse_attachment
from hyperwall.lab import iproute, nsexec, responder_client
from hyperwall.lab.errors import LabError
from hyperwall.lab.state import LabPaths, LabState, Responder
from hyperwall.lab.topology import LabNames, LabPlan

READY_TIMEOUT = 20.0


def build(plan: LabPlan) -> None:
    """Create every namespace, link, address, route... of `plan` (raise NetnsError)."""
    nsexec.run(nsexec.batch_job(iproute.netns_lines(plan)))
    nsexec.run(nsexec.batch_job(iproute.veth_lines(plan)))
    setup: list[nsexec.Job] = []
    for ns in plan.namespaces:
        sysctls = iproute.sysctl_assignments(plan, ns.name)
        if ns.role in ("vm", "external"):
            script = 'sysctl -q -w "$@" >/dev/null; exec nft -f -'
            argv = ("sh", "-ec", script, "sh", *sysctls)
            ruleset = iproute.namespace_ruleset(plan, ns.name)
            setup.append(nsexec.Job(argv, ruleset, ns.name, f"setup {ns.name}"))
        elif sysctls:
            argv = ("sysctl", "-q", "-w", *sysctls)
            setup.append(nsexec.Job(argv, ns=ns.name, what=f"sysctls in {ns.name}"))
        for family in (4, 6):
            rules = iproute.rule_lines(plan, ns.name, family)
            if rules:
                setup.append(nsexec.batch_job(rules, ns.name, family=family))
    nsexec.run_jobs(setup)
    nsexec.run_jobs(
        nsexec.batch_job(iproute.namespace_lines(plan, ns.name), ns.name) for ns in plan.namespaces
    )
    flood = [(ns.name, iproute.flood_lines(plan, ns.name)) for ns in plan.namespaces]
    nsexec.run_jobs(
        nsexec.Job(
            ("bridge", "-n", ns, "-batch", "-"), "\n".join(lines) + "\n", what=f"fdb in {ns}"
        )
        for ns, lines in flood
        if lines
    )


def _mode_file(paths: LabPaths) -> Path:
    return paths.dir / "mode"


def write_mode(paths: LabPaths, mode: Attachment) -> None:
    """Record the lab's attachment mode next to its state file (read back by `read_mode`)."""
    paths.dir.mkdir(parents=True, exist_ok=True)
    tmp = _mode_file(paths).with_suffix(".tmp")
    tmp.write_text(mode + "\n")
    tmp.replace(_mode_file(paths))


def read_mode(paths: LabPaths) -> Attachment:
    """The mode `up` recorded; "routed" if none was (labs made before bridge mode existed)."""
    try:
        text = _mode_file(paths).read_text().strip()
    except OSError:
        return "routed"
    return parse_attachment(text) or "routed"


def responder_argv(socket: Path, addresses: tuple[str, ...]) -> list[str]:
    argv = [sys.executable, "-m", "hyperwall.lab.responder", "--socket", str(socket)]
    for address in addresses:
        argv += ["--listen", address]
    return argv


def start_responders(paths: LabPaths, plan: LabPlan) -> tuple[dict[str, Responder], Responder]:
    """Start a responder in every VM namespace and the external one; wait until they answer."""
    paths.sockets.mkdir(parents=True, exist_ok=True)
    vms: dict[str, Responder] = {}
    for vm in plan.vms:
        socket = paths.sockets / vm.socket
        pid = nsexec.spawn(vm.ns, responder_argv(socket, vm.addresses), _log(paths, vm.socket))
        vms[vm.key] = Responder(vm.ns, vm.socket, pid, vm.addresses)
    socket = paths.sockets / "x.sock"
    pid = nsexec.spawn(plan.external.ns, responder_argv(socket, ()), _log(paths, "x.sock"))
    external = Responder(plan.external.ns, "x.sock", pid)
    wait_ready(paths, [*vms.values(), external])
    return vms, external


def _log(paths: LabPaths, socket: str) -> Path:
    return paths.logs / f"{Path(socket).stem}.log"


def wait_ready(paths: LabPaths, responders: list[Responder]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    waiting = list(responders)
    while waiting:
        still = []
        for r in waiting:
            try:
                responder_client.ping(paths.sockets / r.socket, timeout=1.0)
            except responder_client.ResponderError:
                if r.pid is not None and not nsexec.alive(r.pid):
                    log = _log(paths, r.socket).read_text(errors="replace")
                    raise LabError(f"responder in {r.ns} exited: {log.strip()[-500:]}") from None
                still.append(r)
        waiting = still
        if waiting and time.monotonic() > deadline:
            names = ", ".join(r.ns for r in waiting)
            raise LabError(f"responders did not start within {READY_TIMEOUT:g} s: {names}")
        if waiting:
            time.sleep(0.02)


def teardown(names: LabNames, paths: LabPaths, state: LabState | None) -> list[str]:
    """Stop the lab's processes and delete its namespaces and links; the names removed.

    Works from the state file if there is one and always from a scan for the prefix, so a
    missing or stale state file still leaves nothing behind. Only processes inside the lab's
    namespaces, or recorded in the state with the lab's folder on their command line, are
    signalled.
    """
    found = [n for n in nsexec.list_namespaces() if names.owns(n)]
    recorded = [n for n in (state.namespaces if state else ()) if names.owns(n)]
    namespaces = sorted(set(found) | set(recorded))
    pids = {p for ps in nsexec.namespace_pids(namespaces).values() for p in ps}
    if state is not None:
        marker = f"{paths.dir}/"
        pids |= {p for p in state.pids() if marker in nsexec.cmdline(p)}
    nsexec.terminate(pids)
    nsexec.delete_namespaces(namespaces)
    links = [link for link in nsexec.root_links() if names.owns(link)]
    nsexec.delete_root_links(links)
    left = [n for n in nsexec.list_namespaces() if names.owns(n)]
    if left:
        raise LabError(f"could not delete namespaces: {', '.join(left)}")
    return namespaces + links
