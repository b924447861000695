"""``esnode run --config topology.toml``: the supervisor starts one process per node, the
cluster elects and serves, and SIGTERM stops every node cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.cluster.checker import OK, History, check
from tests.cluster.harness import REPO, Cluster, new_event, wait_until
from tests.conftest import free_port


def children_of(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").exists() and " Z " in Path(f"/proc/{pid}/stat").read_text()


def our_node(pid: int, config: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"esnode.cli" in cmdline and str(config).encode() in cmdline


def end_supervisor(supervisor: subprocess.Popen, nodes, config: Path) -> None:
    """Kill only processes that are provably ours: the supervisor's children while it lives
    (their pids cannot be reused before it reaps them), else node processes (of ``nodes``)
    that still run this test's topology; then the supervisor."""
    if supervisor.poll() is None:
        leftovers = children_of(supervisor.pid)
    else:
        leftovers = [pid for pid in nodes if our_node(pid, config)]
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if supervisor.poll() is None:
        supervisor.kill()
        supervisor.wait(timeout=10)


def shipped_topology_copy(directory: Path) -> Path:
    """The shipped topology.toml with every port replaced by a free one."""
    text = (REPO / "topology.toml").read_text()
    ports = sorted(set(re.findall(r"(?<![\d.])(2\d{3})(?!\d)", text)))
    assert len(ports) == 9, ports  # internal, external and HTTP of three nodes
    mapping = {p: str(free_port()) for p in ports}
    text = re.sub(r"(?<![\d.])(2\d{3})(?!\d)", lambda m: mapping[m.group(1)], text)
    config = directory / "topology.toml"
    config.write_text(text)
    return config


def test_esnode_run_starts_the_topology_serves_and_stops_cleanly_on_sigterm(tmp_path):
    config = shipped_topology_copy(tmp_path)
    cluster = Cluster.adopt(config)
    stderr = open(tmp_path / "supervisor.stderr", "wb")
    supervisor = subprocess.Popen([sys.executable, "-m", "esnode.cli", "run", "--config",
                                   str(config)], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                  stdout=stderr, stderr=stderr)
    nodes: list[int] = []
    try:
        nodes = wait_until(lambda: len(children_of(supervisor.pid)) == 3 and
                           children_of(supervisor.pid), 10, "three node processes")
        leader = cluster.wait_for_leader(timeout=20, among=cluster.names)
        history = History()
        for name in cluster.names:
            event = new_event()
            op = history.append("supervised", [event[0]], name)
            assert history.complete(op, *cluster.append(name, "supervised", [event])) == OK
        check(history, cluster.wait_converged(cluster.names, at_least=3))
        # A new user's view, from the topology's folder: `esnode status` finds the nodes.
        status = subprocess.run([sys.executable, "-m", "esnode.cli", "status", "--json"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        members = [json.loads(line) for line in status.stdout.splitlines()]
        assert sorted(m["name"] for m in members) == cluster.names
        assert [m["name"] for m in members if m["leader"]] == [leader]
        cluster.stop_all()  # closes the test's sockets only: these processes are not ours

        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(timeout=30)
        assert code == 0
        assert all(gone(pid) for pid in nodes), [p for p in nodes if not gone(p)]
        log = (tmp_path / "supervisor.stderr").read_text()
        assert "started 3 nodes" in log
        for name in cluster.names:  # each node shut down gracefully, not killed
            assert f"node {name} stopped" in log, log[-3000:]
        assert "killing" not in log
    except BaseException:
        print((tmp_path / "supervisor.stderr").read_text(errors="replace")[-6000:])
        raise
    finally:
        stderr.close()
        end_supervisor(supervisor, nodes, config)
