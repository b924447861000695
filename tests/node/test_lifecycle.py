"""Running a node as a user does: ``esnode run``, signals, graceful shutdown, logs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from esnode.actors.node import Node
from tests.conftest import free_port, single_node_topology, start_leader, wait_for
from tests.node.rawclient import RawClient, event


def write_topology(tmp_path: Path, ext: int, internal: int, http: int = 0) -> Path:
    path = tmp_path / "topology.toml"
    path.write_text(f"""
[cluster]
name = "t"
size = 1

[[nodes]]
name = "solo"
data_dir = "data"
log_dir = "logs"
internal_host = "127.0.0.1"
internal_port = {internal}
external_host = "127.0.0.1"
external_port = {ext}
external_http_port = {http}
""")
    return path


def serving(endpoint: str) -> bool:
    c = RawClient(endpoint)
    try:
        return c.call("ping", timeout=0.5)[1] == "ok"
    except TimeoutError:
        return False
    finally:
        c.close()


def test_esnode_run_serves_and_stops_on_sigterm(tmp_path):
    ext, http = free_port(), free_port()
    config = write_topology(tmp_path, ext, free_port(), http)
    proc = subprocess.Popen([sys.executable, "-m", "esnode.cli", "run", "--config", str(config)],
                            stderr=subprocess.PIPE, text=True)
    try:
        endpoint = f"tcp://127.0.0.1:{ext}"
        wait_for(lambda: serving(endpoint), timeout=20, message="the node to serve")
        c = RawClient(endpoint)
        try:
            assert c.call("append", {"stream": "s", "events": [event()]})[1] == "ok"
        finally:
            c.close()
        # the node's process froze what its start made (full collections skip it)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) \
            .read().decode()
        frozen = re.search(r"^esnode_gc_frozen_objects (\S+)$", metrics, re.M)
        assert frozen and float(frozen.group(1)) > 10_000, frozen
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "PreLeader -> Leader term=1" in err and "stopped" in err
        log_text = (tmp_path / "logs" / "solo.log").read_text()
        assert "Leader -> ShuttingDown" in log_text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The data survived the stop, and the port was released.
    node = start_leader(Node(single_node_topology(str(tmp_path / "data"), external_port=ext), "node1"))
    try:
        c = RawClient(node.transport.external_endpoint)
        try:
            assert len(c.call("read_stream", {"stream": "s"})[2]["events"]) == 1
        finally:
            c.close()
    finally:
        node.stop()


def test_invalid_topology_fails_with_the_key_named(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[cluster]\nsize = 2\n[[nodes]]\nname = "a"\nmem_db = true\n'
                      'internal_host = "127.0.0.1"\ninternal_port = 1\n'
                      'external_host = "127.0.0.1"\nexternal_port = 2\n')
    proc = subprocess.run([sys.executable, "-m", "esnode.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "cluster.size: 2 is even" in proc.stderr


def test_graceful_stop_answers_what_it_read_and_loses_no_acknowledged_write(tmp_path):
    data = str(tmp_path / "data")
    node = start_leader(Node(single_node_topology(data), "node1"))
    c = RawClient(node.transport.external_endpoint)
    try:
        assert c.call("ping")[1] == "ok"  # connected
        sent = {c.send("append", {"stream": f"f-{i}", "events": [event()]}): f"f-{i}"
                for i in range(300)}
        replies = [c.recv()]  # the node is busy with them
        stopper = threading.Thread(target=node.stop)
        stopper.start()
        try:
            while len(replies) < len(sent):
                replies.append(c.recv(timeout=3))
        except TimeoutError:
            pass  # requests the node never read: they never ran
        stopper.join()
    finally:
        c.close()
        node.stop()
    assert {r[1] for r in replies} <= {"ok", "error"}
    assert all(r[2]["code"] == "not_ready" for r in replies if r[1] == "error")
    acknowledged = [sent[r[0]] for r in replies if r[1] == "ok"]
    assert acknowledged
    node = start_leader(Node(single_node_topology(data), "node1"))
    try:
        for stream in acknowledged:
            assert node.store.stream_version(stream) == 0, stream
    finally:
        node.stop()


def test_crashed_actor_takes_the_node_down_loudly(caplog):
    from esnode.actors.gateway import GatewayActor
    from esnode.actors.node import Factories

    class ExplodingGateway(GatewayActor):
        """A test double: crashes on the first client batch."""

        def _route(self, envelopes):
            raise RuntimeError("boom")

    node = Node(single_node_topology(), "node1",
                Factories().replace(gateway_actor=ExplodingGateway)).start()
    c = RawClient(node.transport.external_endpoint)
    try:
        c.send("ping")
        assert node.wait(timeout=20) == 1
        assert "fatal: gateway actor crashed: boom" in caplog.text
    finally:
        c.close()
        node.stop()
