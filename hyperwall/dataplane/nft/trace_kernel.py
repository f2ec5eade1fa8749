"""The live trace in one host's kernel: the trace rule, the probe's injection, the events.

- `TraceTable`: the agent's trace table `inet hyperwall_trace`, one base chain `lt_<id>`
  per armed trace (hook forward, priority -10, before `inet hyperwall`'s forward chain) whose
  one rule matches the probe's tuple (`trace_frame.trace_rule`) and sets `meta nftrace`.
  A table of its own, not chains in `inet hyperwall`: the agent's resync reads that table
  back and deletes what it does not want, and a rebuild replaces it whole, either of which
  would remove a trace rule in the middle of a trace. Everything here is recognisable by
  name: `remove_all` deletes the table (agent start, and after a crash).
- `Injector`: the probe enters at the source VM's interface as if the VM sent it. A veth
  pair of the agent's own (`hwfprobe`, peer `hwfprobe-p`) carries a `clsact` qdisc; per
  probe one u32 filter on its egress matches the probe's skb mark and redirects it to the
  *ingress* of the VM's host-side interface (`mirred ingress redirect`). The frame is sent
  with an AF_PACKET socket on `hwfprobe` (SO_MARK = the filter's mark). The VM interface
  itself is not touched, and the same works for a tap (libvirt's vnetN) and a veth.
- `TraceListener`: a netlink socket subscribed to `NFNLGRP_NFTRACE` in this namespace;
  `events` reads parsed events (`trace_netlink`) until a deadline or a stop condition.

Everything binds to the network namespace current when it is created: the host's.
"""

from __future__ import annotations

import fcntl
import json
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from hyperwall.dataplane.nft.kernel import NftError, NftKernel
from hyperwall.dataplane.nft.trace_frame import Probe, frame, trace_rule
from hyperwall.dataplane.nft.trace_netlink import NFNLGRP_NFTRACE, TraceEvent, parse_messages

TRACE_TABLE = "hyperwall_trace"
TRACE_PRIORITY = -10
PROBE_DEV = "hwfprobe"
PROBE_PEER = "hwfprobe-p"
_SOL_NETLINK = 270
_NETLINK_ADD_MEMBERSHIP = 1


class TraceKernelError(RuntimeError):
    """The kernel refused to arm a trace or to inject its probe."""


def _table() -> dict[str, Any]:
    return {"family": "inet", "name": TRACE_TABLE}


def chain_name(trace_id: str) -> str:
    return f"lt_{trace_id[:12]}"


class TraceTable:
    """The trace rules of this host, in their own table (libnftables context of its own,
    used by one thread at a time: a context is not thread-safe, and concurrent traces
    arm and disarm from their own threads)."""

    def __init__(self) -> None:
        self.kernel = NftKernel()
        self.lock = threading.Lock()

    def arm(self, trace_id: str, probe: Probe) -> None:
        chain = {"family": "inet", "table": TRACE_TABLE, "name": chain_name(trace_id)}
        hooked = {**chain, "type": "filter", "hook": "forward", "prio": TRACE_PRIORITY}
        rule = {"family": "inet", "table": TRACE_TABLE, "chain": chain_name(trace_id)}
        with self.lock:
            self.kernel.run(
                [
                    {"add": {"table": _table()}},
                    {"add": {"chain": {**hooked, "policy": "accept"}}},
                    {"add": {"rule": {**rule, "expr": trace_rule(probe)}}},
                ]
            )

    def disarm(self, trace_id: str) -> None:
        """Remove the trace's chain (no error if it is gone)."""
        chain = {"family": "inet", "table": TRACE_TABLE, "name": chain_name(trace_id)}
        try:
            with self.lock:
                self.kernel.run([{"delete": {"chain": chain}}])
        except NftError as exc:
            if "No such file" not in str(exc):
                raise

    def _exists(self) -> bool:
        with self.lock:
            return TRACE_TABLE in self.kernel.command("list tables inet")

    def remove_all(self) -> None:
        """Delete the trace table and everything in it (agent start)."""
        if self._exists():
            with self.lock:
                self.kernel.run([{"delete": {"table": _table()}}])

    def chain_handles(self, table: str, chain: str) -> list[int]:
        """The handles of `chain`'s rules in `inet table`, in order."""
        with self.lock:
            listing = self.kernel.command(f"list chain inet {table} {chain}")
        return [e["rule"]["handle"] for e in json.loads(listing)["nftables"] if "rule" in e]


_SIOCGIFHWADDR = 0x8927


def _exists(ifname: str) -> bool:
    """Whether `ifname` exists in this thread's namespace (sysfs may show another's)."""
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def link_mac(ifname: str) -> str:
    """The MAC of `ifname` in this thread's namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        raw = fcntl.ioctl(sock, _SIOCGIFHWADDR, struct.pack("256s", ifname.encode()[:15]))
    return ":".join(f"{b:02x}" for b in raw[18:24])


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


class Injector:
    """Sends probes so that they are received on a VM's host-side interface."""

    def ensure(self) -> None:
        if not _exists(PROBE_DEV):
            made = _run("ip", "link", "add", PROBE_DEV, "type", "veth", "peer", "name", PROBE_PEER)
            if made.returncode != 0 and "File exists" not in made.stderr:
                raise TraceKernelError(f"cannot create {PROBE_DEV}: {made.stderr.strip()}")
        for dev in (PROBE_DEV, PROBE_PEER):
            _run("ip", "link", "set", dev, "up")
        qdisc = _run("tc", "qdisc", "add", "dev", PROBE_DEV, "clsact")
        there = "exists" in qdisc.stderr or "Exclusivity" in qdisc.stderr
        if qdisc.returncode != 0 and not there:
            raise TraceKernelError(f"cannot add clsact to {PROBE_DEV}: {qdisc.stderr.strip()}")

    @staticmethod
    def remove_all() -> None:
        """Delete the probe device (and with it every filter on it)."""
        if _exists(PROBE_DEV):
            _run("ip", "link", "del", PROBE_DEV)

    def inject(self, probe: Probe, ifname: str, src_mac: str, mark: int) -> None:
        """Send `probe` into `ifname` as received from the VM with `src_mac`."""
        self.ensure()
        pref = str(1 + mark % 49000)
        added = _run(
            *("tc", "filter", "add", "dev", PROBE_DEV, "egress", "protocol", "all"),
            *("pref", pref, "u32", "match", "mark", hex(mark), "0xffffffff"),
            *("action", "mirred", "ingress", "redirect", "dev", ifname),
        )
        if added.returncode != 0:
            raise TraceKernelError(f"cannot redirect probes to {ifname}: {added.stderr.strip()}")
        try:
            host_mac = link_mac(ifname)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            with sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
                sock.bind((PROBE_DEV, 0))
                sock.send(frame(probe, src_mac, host_mac))
        except OSError as exc:
            raise TraceKernelError(f"cannot send the probe into {ifname}: {exc}") from exc
        finally:
            _run("tc", "filter", "del", "dev", PROBE_DEV, "egress", "pref", pref)


class TraceListener:
    """The trace events of this namespace's kernel (subscribe before arming)."""

    def __init__(self, rcvbuf: int = 1 << 20) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 12)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((0, 0))
        self.sock.setsockopt(_SOL_NETLINK, _NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTRACE)

    def close(self) -> None:
        self.sock.close()

    def events(self, deadline: float, done: Callable[[TraceEvent], bool]) -> Iterator[TraceEvent]:
        """Events until `done(event)` is true for one (it is yielded too) or `deadline`
        (time.monotonic()) passes."""
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                continue
            for event in parse_messages(self.sock.recv(1 << 16)):
                yield event
                if done(event):
                    return
