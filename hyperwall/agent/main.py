"""`hyperwall agent`: the per-host process, and its composition root.

Wires the inputs (policy folder poller, resync timer) to the work queue and runs the one
worker. Runs inside the host's network namespace (its nftables context binds there). On
SIGTERM/SIGINT it stops and leaves the kernel table as it is: enforcement goes on.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from hyperwall.agent.policydir import PolicyDir
from hyperwall.agent.reconciler import Reconciler
from hyperwall.agent.workqueue import WorkQueue
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.render import Options


@dataclass(frozen=True, slots=True)
class AgentConfig:
    host: str
    policy_dir: Path
    state_dir: Path
    vm_prefix: str = "hwt"
    poll_seconds: float = 0.2
    resync_seconds: float = 30.0
    max_backoff: float = 10.0
    mode: str = "routed"  # VM attachment: "routed" or "bridge" (render.Options.mode)


def _poll(queue: WorkQueue, source: PolicyDir, stop: threading.Event, every: float) -> None:
    last = None
    while not stop.wait(every):
        current = source.fingerprint()
        if current != last:
            last = current
            queue.add("policy")


def _tick(queue: WorkQueue, stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        queue.add("resync")


def run_agent(config: AgentConfig) -> None:
    source = PolicyDir(config.policy_dir)
    backend = NftBackend(options=Options(vm_prefix=config.vm_prefix, mode=config.mode))
    reconciler = Reconciler(config.host, source.load, backend, config.state_dir / "status.json")
    queue = WorkQueue()
    stop = threading.Event()

    def shutdown(signum: int, frame: FrameType | None) -> None:
        stop.set()
        queue.close()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    threads = [
        threading.Thread(
            target=_poll, args=(queue, source, stop, config.poll_seconds), daemon=True
        ),
        threading.Thread(target=_tick, args=(queue, stop, config.resync_seconds), daemon=True),
    ]
    for t in threads:
        t.start()
    queue.add("policy")
    failures: dict[str, int] = {}
    while not stop.is_set():
        key = queue.get(timeout=1.0)
        if key is None:
            continue
        try:
            ok = reconciler.reconcile(key)
        finally:
            queue.done(key)
        if ok:
            failures.pop(key, None)
        else:
            failures[key] = failures.get(key, 0) + 1
            queue.add_after(key, min(config.max_backoff, 0.2 * 2 ** failures[key]))
