"""CPU used during a benchmark's timed window: by the benchmark client (this process), by the
server (the node processes a fresh run started), and by the whole machine.

WORKLOAD.md asks for the client's and the machine's share: a client near 1.0 core means the
figure is bound by the (Python) client, a machine near 2.0 cores that nothing was left. The
server's CPU per event is the figure the 3-node path has to cut (docs/performance.md): with
it, a run says what one replicated append costs without a profiler attached. Linux only
(``/proc``); elsewhere the server and machine figures are None.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name (field 3 onwards), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [root]
    for entry in entries:
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def processes_cpu(pids: Iterable[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (a process that is gone counts 0)."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / _TICK


def machine_busy() -> float | None:
    """CPU seconds every core spent not idle since boot (``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / _TICK


@dataclass
class CpuFigures:
    wall_s: float
    client_s: float
    server_s: float | None
    machine_s: float | None

    def summary(self, events: int) -> dict:
        """Cores busy on average (client, machine) and the server's CPU per event."""
        wall = max(self.wall_s, 1e-9)
        return {
            "client_cores": self.client_s / wall,
            "machine_cores": None if self.machine_s is None else self.machine_s / wall,
            "server_us_per_event": (None if self.server_s is None or not events
                                    else self.server_s / events * 1e6),
        }


class CpuWindow:
    """``with CpuWindow(pids) as w: ...`` then ``w.figures``; ``server_pids`` lists the
    server's processes (None: not known, e.g. a cluster given with ``--connect``)."""

    def __init__(self, server_pids: Callable[[], list[int]] | None = None) -> None:
        self._server_pids = server_pids
        self.figures: CpuFigures | None = None

    def __enter__(self) -> CpuWindow:
        self._pids = self._server_pids() if self._server_pids is not None else None
        self._wall = time.perf_counter()
        self._client = time.process_time()
        self._server = processes_cpu(self._pids) if self._pids is not None else None
        self._machine = machine_busy()
        return self

    def __exit__(self, *exc: object) -> None:
        machine = machine_busy()
        server = processes_cpu(self._pids) if self._pids is not None else None
        self.figures = CpuFigures(
            time.perf_counter() - self._wall, time.process_time() - self._client,
            None if server is None else server - self._server,
            None if machine is None or self._machine is None else machine - self._machine)
