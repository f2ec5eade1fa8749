"""Talks to the responders over their unix sockets: the probe client. Counterpart of
`lab.responder`. Many probes at once run in threads, one connection each, so a batch of
blocked probes costs one timeout, not one per probe.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hyperwall.agent.control import json_line_request
from hyperwall.lab.probe_messages import ProbeOutcome, ProbeRequest

MAX_PARALLEL = 256
CONNECT_RETRIES = 500
SLACK = 5.0  # seconds the control connection waits beyond the probe's own timeout


class ResponderError(RuntimeError):
    """A responder could not be reached or answered nonsense."""


def _connect(s: socket.socket, path: Path) -> None:
    """Connect, retrying while the responder's accept queue is full (EAGAIN)."""
    for _ in range(CONNECT_RETRIES):
        try:
            s.connect(str(path))
            return
        except BlockingIOError:
            time.sleep(0.01)
    s.connect(str(path))


def request(path: Path, message: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one JSON message to the responder at `path` and read its one-line reply."""
    try:
        reply = json_line_request(path, message, timeout, _connect)
    except OSError as exc:
        raise ResponderError(f"responder {path}: {exc}") from None
    except ValueError as exc:
        raise ResponderError(f"responder {path}: bad reply ({exc})") from None
    if not isinstance(reply, dict):
        raise ResponderError(f"responder {path}: bad reply {reply!r}")
    return reply


def ping(path: Path, timeout: float = 1.0) -> int:
    """The responder's pid if it answers."""
    reply = request(path, {"op": "ping"}, timeout)
    if not reply.get("ok"):
        raise ResponderError(f"responder {path}: {reply}")
    return int(reply["pid"])


def probe(path: Path, req: ProbeRequest) -> ProbeOutcome:
    return ProbeOutcome.from_json(request(path, req.to_json(), req.timeout + SLACK))


def probe_many(
    jobs: Sequence[tuple[Path, ProbeRequest]], parallel: int = MAX_PARALLEL
) -> list[ProbeOutcome]:
    """Run the probes, `parallel` at a time; results in the order given."""
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(jobs)))) as pool:
        return list(pool.map(lambda job: probe(*job), jobs))
