"""Free TCP ports for tests, benchmarks and tools that start servers on the fly."""

from __future__ import annotations

import socket
import threading

_handed_out: set[tuple[str, int]] = set()
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now and never handed out before by this process: the
    kernel may give the same port to two probes in a row, and endpoints picked one at a time
    would then collide."""
    with _lock:
        while True:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if (host, port) not in _handed_out:
                _handed_out.add((host, port))
                return port
