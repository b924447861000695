"""``esnode run --restart``: the supervisor reports a node that died and starts it again; the
restarted node rejoins and catches up by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.cluster.harness import REPO
from tests.cluster.test_supervisor import children_of, gone
from tests.conftest import free_port, wait_for
from tests.node.rawclient import RawClient, event


def topology_with_free_ports(tmp_path: Path) -> tuple[Path, list[int]]:
    text = (Path(REPO) / "topology.toml").read_text()
    externals = []
    for old in (2113, 2114, 2123, 2124, 2133, 2134):
        new = free_port()
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}").replace(
            f"_port = {old}\n", f"_port = {new}\n")
        if old % 10 == 3:
            externals.append(new)
    path = tmp_path / "topology.toml"
    path.write_text(text)
    return path, externals


def leader_of(port: int) -> str | None:
    c = RawClient(f"tcp://127.0.0.1:{port}")
    try:
        _, kind, body = c.call("cluster_info", timeout=1)
        return body.get("leader") if kind == "ok" else None
    except TimeoutError:
        return None
    finally:
        c.close()


def appended(port: int) -> bool:
    c = RawClient(f"tcp://127.0.0.1:{port}")
    try:
        return c.call("append", {"stream": "after", "events": [event()]}, timeout=2)[1] == "ok"
    except TimeoutError:
        return False
    finally:
        c.close()


def test_a_killed_node_is_reported_and_restarted(tmp_path):
    config, externals = topology_with_free_ports(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "esnode.cli", "run", "--config", str(config),
                             "--restart"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        children = wait_for(lambda: len(children_of(proc.pid)) == 3 and children_of(proc.pid),
                            timeout=30, message="three node processes")
        wait_for(lambda: leader_of(externals[0]), timeout=30, message="a leader")
        victim = children[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: gone(victim), timeout=10, message="the victim to die")
        restarted = wait_for(lambda: (lambda now: len(now) == 3 and victim not in now and now)(
            children_of(proc.pid)), timeout=30, message="the node to be restarted")
        assert set(restarted) - set(children), "a new process replaced the killed one"
        # The cluster serves through every node again, the restarted one included.
        for port in externals:
            wait_for(lambda port=port: appended(port), timeout=30,
                     message=f"an append through {port}")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "exited with code -9" in err and "restarting" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children_of(proc.pid):
            os.kill(pid, signal.SIGKILL)
