"""A coalescing work queue of keys, as client-go's: a key queued twice is processed once.

Inputs (file watcher, timers, hypervisor events) only `add` keys; one worker `get`s them,
reconciles, and `done`s them. A key added while it is being processed is processed again
afterwards. `add_after` requeues with a delay (backoff after errors).
"""

from __future__ import annotations

import threading
import time
from collections import deque


class WorkQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._dirty: set[str] = set()
        self._timers: list[threading.Timer] = []
        self._closed = False

    def add(self, key: str) -> None:
        with self._cond:
            if self._closed:
                return
            if key in self._active:
                self._dirty.add(key)
                return
            if key not in self._queued:
                self._queued.add(key)
                self._queue.append(key)
                self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        timer = threading.Timer(delay, self.add, args=(key,))
        timer.daemon = True
        with self._cond:
            self._timers = [t for t in self._timers if t.is_alive()]
            self._timers.append(timer)
        timer.start()

    def get(self, timeout: float | None = None) -> str | None:
        """The next key, or None when closed or after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._closed:
                return None
            key = self._queue.popleft()
            self._queued.discard(key)
            self._active.add(key)
            return key

    def done(self, key: str) -> None:
        with self._cond:
            self._active.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._queued.add(key)
                self._queue.append(key)
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for t in self._timers:
                t.cancel()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)
