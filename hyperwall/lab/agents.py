"""The lab's host agents: the folder they read, how they are started, when they are done.

Each host namespace runs `hyperwall agent --host H --policy-dir STATE/policy ...`. The
documents live in `STATE/policy.N`; `STATE/policy` is a symlink swapped atomically (rename)
to the next generation on `lab apply`, so an agent never sees a half-written set. An agent
has converged when its status file says so with the program hash the lab computes itself
from the same documents (`FleetCompiler(...).host_program(H)`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hyperwall.agent.flowlog import read_flowlog_status
from hyperwall.agent.status import read_status
from hyperwall.attachment import Attachment
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.serialize import program_hash
from hyperwall.io.files import SUFFIXES
from hyperwall.lab import nsexec
from hyperwall.lab.errors import LabError
from hyperwall.lab.state import LabPaths, LabState
from hyperwall.lab.topology import LabPlan
from hyperwall.policy.model import Catalog

VM_PREFIX = "hwt"
HITS_SECONDS = 1.0  # the lab's agents read their hit counters this often (`lab stats`)
FLOW_SUMMARY_SECONDS = 1.0  # and summarize suppressed flow records this often (`lab logs`)
HANDOVER_PORT = 7471  # each agent takes migrating VMs' connection state here, on the underlay


def install_policy(paths: LabPaths, sources: Sequence[Path], generation: int) -> None:
    """Copy the documents to `policy.N` and point the `policy` symlink at it (atomically)."""
    target = paths.policy_generation(generation)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, source in enumerate(sources):
        if source.is_dir():
            for file in sorted(source.rglob("*")):
                if file.suffix in SUFFIXES and file.is_file():
                    dest = tmp / f"{i:02d}-{source.name}" / file.relative_to(source)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(file, dest)
        else:
            shutil.copyfile(source, tmp / f"{i:02d}-{source.name}")
    install_generation(paths, tmp, generation)


def install_generation(paths: LabPaths, folder: Path, generation: int) -> None:
    """Rename the complete `folder` to `policy.N` and point the `policy` symlink at it
    (atomically); generations older than N-1 are deleted."""
    target = paths.policy_generation(generation)
    shutil.rmtree(target, ignore_errors=True)
    os.rename(folder, target)
    link = paths.dir / "policy.link.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(target.name)
    os.replace(link, paths.policy)
    for old in paths.dir.glob("policy.*"):
        suffix = old.name.removeprefix("policy.")
        if suffix.isdigit() and int(suffix) < generation - 1:
            shutil.rmtree(old, ignore_errors=True)


def hyperwall_command() -> list[str]:
    """The `hyperwall` script next to this interpreter, or `python -m hyperwall`."""
    script = Path(sys.executable).parent / "hyperwall"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hyperwall"]


def agent_source_file(paths: LabPaths) -> Path:
    """Where `up(server=...)` records that agents follow a manager instead of the folder."""
    return paths.dir / "agent-source.json"


def write_agent_source(paths: LabPaths, server: str, token_files: Mapping[str, Path]) -> None:
    record = {"server": server, "tokens": {h: str(p) for h, p in token_files.items()}}
    agent_source_file(paths).write_text(json.dumps(record))


def _source_args(paths: LabPaths, host: str) -> list[str]:
    try:
        record = json.loads(agent_source_file(paths).read_text())
    except FileNotFoundError:
        return ["--policy-dir", str(paths.policy)]
    cache = paths.agent_dir(host) / "cache"
    token = record["tokens"][host]
    return ["--server", record["server"], "--token-file", token, "--cache-dir", str(cache)]


def agent_argv(
    paths: LabPaths, host: str, mode: Attachment = "routed", underlay: str | None = None
) -> list[str]:
    from hyperwall.lab.guest_lab import agent_args  # --vm libvirt: --libvirt URI --vm-prefix vnet

    mode_args = ["--mode", mode] if mode != "routed" else []
    guest_args = agent_args(paths, host)
    if underlay is not None:  # `lab migrate`
        mode_args += ["--handover-listen", f"{underlay}:{HANDOVER_PORT}"]
    return [
        *hyperwall_command(),
        "agent",
        "--host",
        host,
        *_source_args(paths, host),
        "--state-dir",
        str(paths.agent_dir(host)),
        *(guest_args or ["--vm-prefix", VM_PREFIX]),
        *mode_args,
        "--hits-seconds",
        str(HITS_SECONDS),
        "--flow-log",
        str(flow_log(paths, host)),
        "--flow-summary-seconds",
        str(FLOW_SUMMARY_SECONDS),
    ]


def flow_log(paths: LabPaths, host: str) -> Path:
    """The flow log of a lab host's agent (logged decisions, connection records)."""
    return paths.agent_dir(host) / "flows.jsonl"


def start_agents(paths: LabPaths, plan: LabPlan) -> dict[str, int]:
    """Start one agent per host (detached, in the host's namespace); host -> pid."""
    pids = {}
    for host in plan.hosts:
        paths.agent_dir(host.name).mkdir(parents=True, exist_ok=True)
        pids[host.name] = nsexec.spawn(
            host.ns,
            agent_argv(paths, host.name, plan.mode, host.ipv4),
            paths.agent_log(host.name),
        )
    return pids


def expected_hashes(catalog: Catalog, hosts: Sequence[str]) -> dict[str, str]:
    """The program hash each host's agent must report, computed like the agent does."""
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    return {h: program_hash(compiler.host_program(h)) for h in hosts}


@dataclass(frozen=True, slots=True)
class AgentReport:
    host: str
    pid: int | None
    alive: bool
    converged: bool
    program_hash: str | None
    expected_hash: str | None
    error: str | None
    flowlog: Mapping[str, Any] | None = None  # the agent's flow log counts (`agent.flowlog`)

    @property
    def ok(self) -> bool:
        return (
            self.alive
            and self.converged
            and self.program_hash is not None
            and self.program_hash == self.expected_hash
        )

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "pid": self.pid,
            "alive": self.alive,
            "converged": self.converged,
            "program_hash": self.program_hash,
            "expected_hash": self.expected_hash,
            "in_sync": self.ok,
            "error": self.error,
            "flowlog": self.flowlog,
        }


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def agent_reports(
    paths: LabPaths, state: LabState, expected: Mapping[str, str]
) -> list[AgentReport]:
    reports = []
    for host, agent in sorted(state.agents.items()):
        status = read_status(paths.agent_status(host))
        alive = agent.pid is not None and nsexec.alive(agent.pid)
        error = status.error if status else None
        if not alive:
            error = f"agent exited: {_log_tail(paths.agent_log(host))}" if agent.pid else error
        reports.append(
            AgentReport(
                host=host,
                pid=agent.pid,
                alive=alive,
                converged=bool(status and status.converged),
                program_hash=status.program_hash if status else None,
                expected_hash=expected.get(host),
                error=error,
                flowlog=read_flowlog_status(paths.agent_dir(host) / "flowlog.json"),
            )
        )
    return reports


def wait_converged(
    paths: LabPaths, state: LabState, expected: Mapping[str, str], timeout: float
) -> list[AgentReport]:
    """Poll the status files until every agent runs the expected program; else LabError."""
    deadline = time.monotonic() + timeout
    while True:
        reports = agent_reports(paths, state, expected)
        if all(r.ok for r in reports):
            return reports
        dead = [r for r in reports if not r.alive]
        if dead or time.monotonic() > deadline:
            why = "; ".join(
                f"{r.host}: "
                + (r.error or ("converged to another program" if r.converged else "not converged"))
                for r in reports
                if not r.ok
            )
            raise LabError(f"agents did not converge within {timeout:g} s: {why}")
        time.sleep(0.05)


# -- one agent at a time (restarting an agent, e.g. in the restart-safety tests) -----------


def is_agent(paths: LabPaths, pid: int) -> bool:
    """Is `pid` a running process of this lab (its command line names the lab's folder)?

    Guards against pid reuse: a recorded pid is only ever signalled if it still is ours.
    While a process is in execve (`ip netns exec` becoming the agent, just after a start)
    its command line reads as empty for a moment: read again then.
    """
    for _ in range(200):
        if not nsexec.alive(pid):
            return False
        command = nsexec.cmdline(pid)
        if command:
            return f"{paths.dir}/" in command
        time.sleep(0.005)
    return False


def stop_agent(paths: LabPaths, pid: int, sig: int | None = None, timeout: float = 10.0) -> None:
    """Send `sig` (default SIGKILL) to the lab's agent `pid`; return once it is gone."""
    if not is_agent(paths, pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL if sig is None else sig)
    deadline = time.monotonic() + timeout
    while nsexec.alive(pid):
        if time.monotonic() > deadline:
            raise LabError(f"agent {pid} still runs {timeout:g} s after signal {sig}")
        time.sleep(0.01)


def start_agent(paths: LabPaths, plan: LabPlan, host: str) -> int:
    """Start the agent of one host exactly like `start_agents` does; its pid.

    The status file of an earlier agent of the host is removed first, so that waiting for
    convergence waits for the new agent's own report, not the one its predecessor left.
    """
    hosts = tuple(h for h in plan.hosts if h.name == host)
    if not hosts:
        raise LabError(f"{host!r} is not a host of the lab")
    paths.agent_status(host).unlink(missing_ok=True)
    return start_agents(paths, replace(plan, hosts=hosts))[host]
