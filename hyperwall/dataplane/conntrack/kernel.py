"""The kernel's conntrack table of one network namespace: dump, inject, delete. The only
conntrack module that talks to the kernel.

Counterpart of `conntrack.messages` and `conntrack.attrs`, which write and read the
messages. A raw `NETLINK_NETFILTER` socket, not pyroute2: pyroute2 0.9.7's `NFCTSocket`
sends one request per entry and waits for its answer (measured here: 913 us per entry, so
91 s for 100,000, against a 2 s target), and its tuple has no `CTA_TUPLE_ZONE` nor ICMP
type/code. Here a chunk of entries goes in one `send` and only the chunk's last message is
acknowledged (see `conntrack.messages`).

The socket is opened inside the target namespace (`netns.inside`/`netns.enter`) and stays
bound to it; the calling thread's namespace is never used unless asked for (`netns=None`).

Dumps of IPv4 addresses are filtered in the kernel (`CTA_FILTER` on the original source,
then destination, of each address: two walks of the table per address); deletes by IPv4
address are kernel flushes with the same filter. IPv6 is filtered here, from a dump of the
namespace's IPv6 entries, and deleted entry by entry: the kernel's IPv6 address filter is
inverted (`ctnetlink_filter_match_tuple` skips an entry when `!ipv6_addr_cmp(...)`, that is
when the addresses are *equal*; still so in 6.18), so a filtered IPv6 dump returns every
entry but the VM's, and a filtered IPv6 flush would delete every entry but the VM's.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Self

from hyperwall.dataplane.conntrack import attrs, messages, raw
from hyperwall.dataplane.conntrack.entry import Address, Entry, touches
from hyperwall.dataplane.conntrack.raw import RawEntry
from hyperwall.dataplane.conntrack.transfer import Delta
from hyperwall.dataplane.netns import enter, inside

NETLINK_NETFILTER = 12
_SOL_NETLINK = 270
_NETLINK_CAP_ACK = 10
_SO_SNDBUFFORCE = 32
_SO_RCVBUFFORCE = 33
_CHUNK = 2048  # entries per send: their errors must fit the receive buffer
_TIMEOUT = 30.0

OnExists = Literal["update", "skip", "fail"]


class ConntrackError(Exception):
    """ctnetlink refused a request, or the socket failed."""


@dataclass(frozen=True)
class Failure:
    entry: Entry
    errno: int

    def __str__(self) -> str:
        o = self.entry.orig
        return (
            f"{o.src}:{o.sport} -> {o.dst}:{o.dport} proto {o.proto} zone {self.entry.zone}: "
            f"{errno.errorcode.get(self.errno, str(self.errno))} ({os.strerror(self.errno)})"
        )


class InjectError(ConntrackError):
    """Some entries were not injected. ctnetlink has no transactions: the others are in."""

    def __init__(self, failed: Sequence[Failure], applied: int) -> None:
        self.failed = tuple(failed)
        self.applied = applied
        shown = "; ".join(str(f) for f in self.failed[:5])
        more = f" (and {len(self.failed) - 5} more)" if len(self.failed) > 5 else ""
        super().__init__(
            f"conntrack: {len(self.failed)} entries refused, {applied} applied: {shown}{more}"
        )


class Conntrack:
    """A ctnetlink socket bound to one network namespace (`netns` as named by
    `ip netns add`, or `netns_fd` open on /proc/.../ns/net, or the current one)."""

    def __init__(self, netns: str | None = None, *, netns_fd: int | None = None) -> None:
        if netns is not None:
            with inside(netns):
                self._sock = _open()
        elif netns_fd is not None:
            with enter(netns_fd):
                self._sock = _open()
        else:
            self._sock = _open()
        self._seq = 1

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _next(self, count: int) -> int:
        seq = self._seq
        self._seq = (self._seq + count) & 0x7FFFFFFF or 1
        return seq

    # Dump ------------------------------------------------------------------------------

    def dump(self, addresses: Iterable[Address] | None = None) -> list[Entry]:
        """The entries whose original source or destination is one of `addresses` (all
        entries if None), each once."""
        if addresses is None:
            return self._dump(messages.dump_request(self._next(1)))
        wanted = set(addresses)
        v4 = sorted(a for a in wanted if a.version == 4)
        seq = self._next(2 * len(v4))
        seen: dict[tuple[int, object], Entry] = {}
        for request in messages.address_requests(v4, messages.IPCTNL_MSG_CT_GET, seq):
            for entry in self._dump(request):
                seen.setdefault(entry.key, entry)
        v6 = frozenset(a for a in wanted if a.version == 6)
        if v6:
            request = messages.dump_request(self._next(1), messages.AF_INET6)
            for entry in self._dump(request):
                if touches(entry, v6):
                    seen.setdefault(entry.key, entry)
        return list(seen.values())

    def _dump(self, request: bytes) -> list[Entry]:
        self._sock.send(request)
        out: list[Entry] = []
        cache: attrs.AddressCache = {}  # a VM's address is in every one of its entries
        while True:
            data = self._recv()
            for reply in messages.replies(data):
                if reply.error:
                    raise ConntrackError(f"conntrack dump failed: {os.strerror(-reply.error)}")
                if reply.done:
                    return out
                if reply.kind == messages.NLMSG_ERROR:
                    continue
                out.append(attrs.decode(data, reply.start, reply.end, cache))

    def dump_raw(self, addresses: Iterable[Address]) -> list[RawEntry]:
        """`dump`, the entries as copies for another kernel (`raw.copy`): no `Entry` is
        built, but for the IPv6 filter."""
        return [e for chunk in self.dump_raw_chunks(addresses) for e in chunk]

    def dump_raw_chunks(
        self, addresses: Iterable[Address], size: int = 4096
    ) -> Iterator[list[RawEntry]]:
        """`dump_raw` in chunks of about `size` entries, each as soon as the kernel has
        given it (the kernel fills the next buffers only as they are read)."""
        wanted = set(addresses)
        v4 = sorted(a for a in wanted if a.version == 4)
        seq = self._next(2 * len(v4))
        seen: set[bytes] = set()
        chunk: list[RawEntry] = []
        requests = [
            (r, False) for r in messages.address_requests(v4, messages.IPCTNL_MSG_CT_GET, seq)
        ]
        v6 = frozenset(a for a in wanted if a.version == 6)
        if v6:  # every IPv6 entry, filtered here (see the module docstring)
            requests.append((messages.dump_request(self._next(1), messages.AF_INET6), True))
        for request, ipv6 in requests:
            for entries in self._dump_raw(request):
                for entry in entries:
                    if entry.key in seen:
                        continue
                    if ipv6 and not touches(raw.key_entry(entry.key), v6):
                        continue
                    seen.add(entry.key)
                    chunk.append(entry)
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    def _dump_raw(self, request: bytes) -> Iterator[list[RawEntry]]:
        """The entries of a dump, one list per buffer read."""
        self._sock.send(request)
        copy = raw.copy
        while True:
            data = self._recv()
            out: list[RawEntry] = []
            for reply in messages.replies(data):
                if reply.error:
                    raise ConntrackError(f"conntrack dump failed: {os.strerror(-reply.error)}")
                if reply.done:
                    yield out
                    return
                if reply.kind != messages.NLMSG_ERROR:
                    out.append(copy(data, reply.start, reply.end))
            yield out

    def _recv(self) -> bytes:
        try:
            return self._sock.recv(1 << 16)
        except OSError as exc:  # ENOBUFS: the kernel dropped answers; a timeout: none came
            raise ConntrackError(f"conntrack: netlink receive failed: {exc}") from exc

    # Inject and delete ---------------------------------------------------------------

    def inject(self, entries: Sequence[Entry], on_exists: OnExists = "update") -> int:
        """Create `entries`; return how many were created or updated. An entry that already
        exists is updated (`update`: status bits can only be added, timeout, mark, labels and
        TCP state replaced), left alone (`skip`), or an error (`fail`). Raises
        `InjectError` listing the refused entries after trying all of them."""
        items = [(messages.family_of(e.family), attrs.encode(e)) for e in entries]
        return self._create(items, on_exists, lambda i: entries[i])

    def inject_raw(self, entries: Sequence[RawEntry], on_exists: OnExists = "update") -> int:
        """`inject` for entries copied from another kernel (`raw.copy`: confirmed, TCP
        entries liberal)."""
        items = [(e.family, e.body) for e in entries]
        return self._create(items, on_exists, lambda i: attrs.decode(entries[i].body))

    def _create(
        self, items: Sequence[tuple[int, bytes]], on_exists: OnExists, entry: Callable[[int], Entry]
    ) -> int:
        failed: list[Failure] = []
        skipped = 0
        flags = messages.new_flags(on_exists == "update")
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            seq = self._next(len(chunk))
            batch = messages.batch(messages.IPCTNL_MSG_CT_NEW, flags, chunk, seq)
            for index, error in self._exchange(batch, seq, len(chunk)):
                if on_exists == "skip" and error == errno.EEXIST:
                    skipped += 1
                else:
                    failed.append(Failure(entry(start + index), error))
        applied = len(items) - len(failed) - skipped
        if failed:
            raise InjectError(failed, applied)
        return applied

    def delete(self, entries: Sequence[Entry]) -> int:
        """Delete `entries` by key; return how many were there (ENOENT is not an error)."""
        items = [(messages.family_of(e.family), attrs.encode_key(e)) for e in entries]
        return self._delete(items, lambda i: entries[i])

    def delete_raw(self, keys: Sequence[bytes]) -> int:
        """`delete` by raw keys (`raw.RawEntry.key`)."""
        items = [(raw.family_of(k), k) for k in keys]
        return self._delete(items, lambda i: raw.key_entry(keys[i]))

    def _delete(self, items: Sequence[tuple[int, bytes]], entry: Callable[[int], Entry]) -> int:
        failed: list[Failure] = []
        gone = 0
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            seq = self._next(len(chunk))
            batch = messages.batch(
                messages.IPCTNL_MSG_CT_DELETE, messages.NLM_F_REQUEST, chunk, seq
            )
            for index, error in self._exchange(batch, seq, len(chunk)):
                if error == errno.ENOENT:
                    gone += 1
                else:
                    failed.append(Failure(entry(start + index), error))
        if failed:
            raise InjectError(failed, len(items) - len(failed) - gone)
        return len(items) - gone

    def get_raw(self, keys: Sequence[bytes]) -> tuple[list[RawEntry], list[bytes]]:
        """The entries with these keys as they are now, and the keys of those that are
        gone. `CT_GET` by key, many in one `send` (one table lookup each)."""
        found: list[RawEntry] = []
        gone: list[bytes] = []
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            seq = self._next(len(chunk))
            items = [(raw.family_of(k), k) for k in chunk]
            batch = messages.batch(messages.IPCTNL_MSG_CT_GET, messages.NLM_F_REQUEST, items, seq)
            try:
                self._sock.send(batch)
            except OSError as exc:
                raise ConntrackError(f"conntrack: netlink send failed: {exc}") from exc
            last = seq + len(chunk) - 1
            acked = False
            while not acked:
                data = self._recv()
                for reply in messages.replies(data):
                    if not seq <= reply.seq <= last:
                        continue
                    if reply.error is None:
                        found.append(raw.copy(data, reply.start, reply.end))
                    elif reply.error == -errno.ENOENT:
                        gone.append(chunk[reply.seq - seq])
                    elif reply.error:
                        raise ConntrackError(f"conntrack get failed: {os.strerror(-reply.error)}")
                    acked = acked or (reply.seq == last and reply.kind == messages.NLMSG_ERROR)
        return found, gone

    def flush(self, addresses: Iterable[Address]) -> None:
        """Delete, in the kernel, every entry whose original source or destination is one
        of `addresses`."""
        wanted = set(addresses)
        v4 = sorted(a for a in wanted if a.version == 4)
        seq = self._next(2 * len(v4))
        requests = messages.address_requests(v4, messages.IPCTNL_MSG_CT_DELETE, seq)
        for i, request in enumerate(requests):
            for _, error in self._exchange(request, seq + i, 1):
                raise ConntrackError(f"conntrack flush failed: {os.strerror(error)}")
        v6 = [a for a in wanted if a.version == 6]
        if v6:
            self.delete(self.dump(v6))

    def count(self) -> int:
        """How many entries the namespace holds (a full dump, counted, not decoded)."""
        self._sock.send(messages.dump_request(self._next(1)))
        total = 0
        while True:
            for reply in messages.replies(self._recv()):
                if reply.done:
                    return total
                total += reply.kind != messages.NLMSG_ERROR

    def _exchange(self, batch: bytes, seq: int, count: int) -> list[tuple[int, int]]:
        """Send `count` messages numbered from `seq` whose last asks for an ack; return
        (index, errno) of each that failed."""
        try:
            sent = self._sock.send(batch)
        except OSError as exc:
            raise ConntrackError(f"conntrack: netlink send failed: {exc}") from exc
        if sent != len(batch):
            raise ConntrackError("conntrack: the batch was sent in part")
        last = seq + count - 1
        failed: list[tuple[int, int]] = []
        while True:
            for reply in messages.replies(self._recv()):
                if reply.error is None or not seq <= reply.seq <= last:
                    continue
                if reply.error:
                    failed.append((reply.seq - seq, -reply.error))
                if reply.seq == last:
                    return failed


def _open() -> socket.socket:
    sock = netlink_socket(16 << 20)
    try:
        sock.settimeout(_TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, 8 << 20)
        sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)  # errors without the request echoed
    except BaseException:
        sock.close()
        raise
    return sock


def netlink_socket(rcvbuf: int, groups: int = 0) -> socket.socket:
    """A `NETLINK_NETFILTER` socket in the calling thread's namespace with a receive buffer
    of `rcvbuf` bytes, bound to the multicast `groups` (a bit mask; 0: requests only)."""
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
    )
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, rcvbuf)
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    return sock


def apply(conntrack: Conntrack, change: Delta) -> None:
    """Carry out a switchover delta on the destination: delete the removed entries, then
    create or update the changed ones."""
    if change.removed:
        conntrack.delete(list(change.removed))
    if change.changed:
        conntrack.inject(list(change.changed), on_exists="update")
