"""The benchmark's CPU figures (bench/cpu.py): a server process tree's CPU is counted,
grandchildren included, and the per-event and per-core arithmetic is right."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from esnode.bench.cpu import CpuFigures, CpuWindow, process_tree

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

BUSY = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
# A grandchild that waits for "go", burns 0.4 s of CPU, says "done" and stays alive until its
# stdin closes; its parent only waits for it.
GRANDCHILD = ("import sys, time\nsys.stdin.readline()\n" + BUSY
              + "print('done', flush=True)\nsys.stdin.read()\n")
PARENT = (f"import subprocess, sys\n"
          f"subprocess.run([sys.executable, '-c', {GRANDCHILD!r}], check=True)\n")


def test_the_cpu_of_a_server_process_tree_is_counted_grandchildren_included():
    proc = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while len(process_tree(proc.pid)) < 2:  # the grandchild started
            assert time.monotonic() < deadline and proc.poll() is None, "no grandchild"
            time.sleep(0.01)
        with CpuWindow(lambda: process_tree(proc.pid)) as window:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "done"
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    assert window.figures.server_s >= 0.3, window.figures


def test_a_busy_process_is_measured_and_an_idle_one_is_not():
    """(A process must be alive when the window closes: its CPU is read from /proc.)"""
    busy = subprocess.Popen([sys.executable, "-c", GRANDCHILD], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    idle = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        with CpuWindow(lambda: [busy.pid]) as on_busy, CpuWindow(lambda: [idle.pid]) as on_idle:
            busy.stdin.write("go\n")
            busy.stdin.flush()
            assert busy.stdout.readline().strip() == "done"
        assert on_busy.figures.server_s >= 0.3, on_busy.figures
        assert on_idle.figures.server_s < 0.1, on_idle.figures
        assert on_busy.figures.machine_s is not None and on_busy.figures.machine_s >= 0.3
    finally:
        for proc in (busy, idle):
            proc.stdin.close()
            proc.wait(timeout=10)


def test_the_summary_is_cores_and_microseconds_per_event():
    row = CpuFigures(wall_s=2.0, client_s=1.0, server_s=0.5, machine_s=3.0).summary(1000)
    assert row == {"client_cores": 0.5, "machine_cores": 1.5, "server_us_per_event": 500.0}
    unknown = CpuFigures(wall_s=2.0, client_s=1.0, server_s=None, machine_s=None).summary(10)
    assert unknown["server_us_per_event"] is None and unknown["machine_cores"] is None
