"""A new user's supervised cluster: a killed node is restarted by default (its new PID
printed), `esnode status` shows the PIDs, and `esnode stop/restart --node` act on one node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.cluster.harness import Cluster, wait_until
from tests.cluster.test_supervisor import children_of, end_supervisor, shipped_topology_copy


def esnode(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esnode.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def status_pids(cwd) -> dict[str, int | None]:
    result = esnode("status", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return {m["name"]: m["pid"] for m in map(json.loads, result.stdout.splitlines())}


def test_restart_by_default_pids_in_status_and_stop_restart_one_node(tmp_path):
    config = shipped_topology_copy(tmp_path)
    cluster = Cluster.adopt(config)
    log_path = tmp_path / "supervisor.stderr"
    log = open(log_path, "wb")
    supervisor = subprocess.Popen([sys.executable, "-m", "esnode.cli", "run", "--config",
                                   str(config)], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=log)
    seen: set[int] = set()
    try:
        first = wait_until(lambda: len(children_of(supervisor.pid)) == 3 and
                           set(children_of(supervisor.pid)), 10, "three node processes")
        seen |= first
        cluster.wait_for_leader(timeout=20, among=cluster.names)
        pids = status_pids(tmp_path)
        assert set(pids.values()) == first

        # kill -9: restarted without any flag, with its new PID said.
        os.kill(pids["node1"], signal.SIGKILL)
        wait_until(lambda: "restarted node1 (pid" in log_path.read_text(), 20,
                   "the supervisor to restart node1")
        now = wait_until(lambda: (lambda p: p["node1"] not in (None, pids["node1"]) and p)(
            status_pids(tmp_path)), 20, "status to show node1's new pid")
        assert f"restarted node1 (pid {now['node1']})" in log_path.read_text()
        seen.add(now["node1"])

        stopped = esnode("stop", "--node", "node2", cwd=tmp_path)
        assert stopped.returncode == 0 and f"stopped node2 (pid {now['node2']})" in \
            stopped.stderr, stopped.stderr
        assert status_pids(tmp_path)["node2"] is None
        assert "node node2 stopped (esnode restart --node node2" in log_path.read_text()
        restarted = esnode("restart", "--node", "node2", cwd=tmp_path)
        assert restarted.returncode == 0, restarted.stderr
        new = status_pids(tmp_path)["node2"]
        seen.add(new)
        assert new not in (None, now["node2"]) and f"restarted node2 (pid {new})" in \
            restarted.stderr
        cluster.wait_for_leader(timeout=20, among=cluster.names)

        cluster.stop_all()  # the test's sockets only
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
        assert not (tmp_path / ".esnode").exists()  # its run state goes with it
        missing = esnode("stop", "--node", "node2", cwd=tmp_path)
        assert missing.returncode == 1 and "no `esnode run" in missing.stderr
    except BaseException:
        print(log_path.read_text(errors="replace")[-6000:])
        raise
    finally:
        log.close()
        end_supervisor(supervisor, seen, config)
