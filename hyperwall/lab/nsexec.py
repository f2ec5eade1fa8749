"""Network namespace I/O for the lab: iproute2 batches, commands inside namespaces, detached
processes, and finding what is left of a lab. Counterpart of `lab.iproute` (pure scripts).

Everything goes through the `ip` command (iproute2): one process per batch, batches of
different namespaces run in parallel.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")


class NetnsError(RuntimeError):
    """An iproute2 (or other) command failed; the message holds its output."""


@dataclass(frozen=True, slots=True)
class Job:
    """A command to run (optionally inside namespace `ns`), with text for its stdin."""

    argv: tuple[str, ...]
    stdin: str = ""
    ns: str | None = None
    what: str = ""

    def command(self) -> list[str]:
        if self.ns is None:
            return list(self.argv)
        return ["ip", "netns", "exec", self.ns, *self.argv]


def batch_job(
    lines: Sequence[str], ns: str | None = None, force: bool = False, family: int | None = None
) -> Job:
    argv = ["ip"]
    if family is not None:
        argv.append(f"-{family}")
    if ns is not None:
        argv += ["-n", ns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    return Job(tuple(argv), "\n".join(lines) + "\n", what=f"ip batch in {ns or 'root'}")


def run_jobs(jobs: Iterable[Job], check: bool = True) -> list[str]:
    """Run `jobs` in parallel; raise NetnsError naming every failure (if `check`)."""
    running = []
    for job in jobs:
        proc = subprocess.Popen(
            job.command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        running.append((job, proc))
    failures: list[str] = []
    outputs: list[str] = []
    for job, proc in running:
        out, _ = proc.communicate(job.stdin)
        outputs.append(out)
        if proc.returncode != 0:
            failures.append(f"{job.what or ' '.join(job.command())}: {out.strip()}")
    if failures and check:
        raise NetnsError("; ".join(failures))
    return outputs


def run(job: Job, check: bool = True) -> str:
    return run_jobs([job], check)[0]


def list_namespaces() -> list[str]:
    """Names of the named network namespaces (`ip netns list`)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def delete_namespaces(names: Iterable[str]) -> None:
    lines = [f"netns delete {n}" for n in names]
    if lines:
        run(batch_job(lines, force=True), check=False)


def root_links() -> list[str]:
    """Names of the links in the root namespace."""
    out = run(Job(("ip", "-o", "link", "show")))
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def delete_root_links(names: Iterable[str]) -> None:
    lines = [f"link delete {n}" for n in names]
    if lines:
        run(batch_job(lines, force=True), check=False)


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def namespace_pids(names: Iterable[str]) -> dict[str, list[int]]:
    """The processes living in each named namespace (what `ip netns pids` reports)."""
    wanted = {}
    for name in names:
        ident = _ns_id(str(NETNS_DIR / name))
        if ident is not None:
            wanted[ident] = name
    found: dict[str, list[int]] = {n: [] for n in wanted.values()}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        ident = _ns_id(f"/proc/{entry}/ns/net")
        if ident in wanted:
            found[wanted[ident]].append(int(entry))
    return found


def spawn(ns: str, argv: Sequence[str], log: Path) -> int:
    """Start `argv` inside `ns`, detached (own session, output to `log`); its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    return proc.pid


def alive(pid: int) -> bool:
    """Is `pid` a running process? A zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def terminate(pids: Iterable[int], grace: float = 3.0) -> None:
    """SIGTERM `pids`, then SIGKILL whatever is still alive after `grace` seconds."""
    targets = [p for p in set(pids) if p > 1 and alive(p)]
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while targets and time.monotonic() < deadline:
        targets = [p for p in targets if alive(p)]
        if targets:
            time.sleep(0.02)
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in targets:
        for _ in range(100):
            if not alive(pid):
                break
            time.sleep(0.01)
