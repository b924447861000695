"""Shared fixtures: free ports, topologies, a running in-process node, actor hygiene."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator

import pykka
import pytest

from esnode.core.config import Topology, parse_topology
from esnode.transport.ports import free_port  # noqa: F401  (the tests import it from here)


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.01,
             message: str = "condition") -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def end_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


def single_node_topology(data_dir: str = "", **node: object) -> Topology:
    entry = {"name": "node1", "internal_host": "127.0.0.1", "internal_port": free_port(),
             "external_host": "127.0.0.1", "external_port": free_port()}
    entry.update({"data_dir": data_dir} if data_dir else {"mem_db": True})
    entry.update(node)
    return parse_topology({"cluster": {"name": "test", "size": 1}, "nodes": [entry]})


def start_leader(node, timeout: float = 10.0):
    """Start a node of a one-node cluster and wait until it has elected itself."""
    from esnode.core.states import VNodeState

    node.start()
    try:
        wait_for(lambda: node.state is VNodeState.Leader, timeout, message="leadership")
    except BaseException:
        node.stop()
        raise
    return node


@pytest.fixture(autouse=True)
def _stop_all_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


@pytest.fixture(params=["memory", "lmdb"])
def running_node(request, tmp_path):
    """A started single node (memory and LMDB stores); stopped after the test."""
    from esnode.actors.node import Node

    data_dir = str(tmp_path / "data") if request.param == "lmdb" else ""
    node = start_leader(Node(single_node_topology(data_dir), "node1"))
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def node_endpoint(running_node) -> str:
    return running_node.transport.external_endpoint
