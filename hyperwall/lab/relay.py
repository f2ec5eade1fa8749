"""Makes a loopback service of the root namespace reachable on loopback inside namespaces.

The demo's manager listens on 127.0.0.1 of the machine; the lab's agents run in host
namespaces, whose loopback is their own. A relay listens on 127.0.0.1:PORT inside each
namespace (a socket stays bound to the namespace it was created in) and forwards every
connection to 127.0.0.1:PORT of the namespace the relay runs in. Traffic never leaves
loopback, and no route or link is added anywhere.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable

from hyperwall.dataplane.netns import inside


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class LoopbackRelay:
    def __init__(self, namespaces: Iterable[str], port: int) -> None:
        self.port = port
        self._listeners: list[socket.socket] = []
        for ns in namespaces:
            with inside(ns):
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen(64)
            self._listeners.append(listener)
            threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        for listener in self._listeners:
            listener.close()
