"""A node stops on SIGTERM however many arrive at once (a supervisor, `timeout` and an
operator may all send one): the handler only sets a flag, it takes no lock."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.cluster.harness import NoReply, Raw, wait_until
from tests.conftest import free_port


def test_a_burst_of_sigterms_stops_the_node_gracefully(tmp_path):
    external = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "esnode.cli", "run", "--mem-db",
                             f"--ext-tcp-port={external}", f"--int-tcp-port={free_port()}"],
                            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    raw = Raw(f"tcp://127.0.0.1:{external}")
    try:
        wait_until(lambda: answers(raw, proc), 20, "the node to answer")
        for _ in range(20):
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        raw.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def answers(raw: Raw, proc: subprocess.Popen) -> bool:
    assert proc.poll() is None, proc.stderr.read()
    try:
        return raw.call("ping", timeout=0.5)[0] == "ok"
    except NoReply:
        raw.reset()
        return False
