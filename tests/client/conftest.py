"""Client test fixtures: a fake node, the real node (once storage exists), and a check that
no client leaves a thread behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.client.fake_node import FakeNode
from tests.conftest import single_node_topology, wait_for


def real_node_available() -> bool:
    try:
        from esnode.storage import open_store  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def fake() -> Iterator[FakeNode]:
    node = FakeNode()
    try:
        yield node
    finally:
        node.close()


@pytest.fixture
def real_node_endpoint() -> Iterator[str]:
    """A real in-process single node (memory store)."""
    from esnode.actors.node import Node

    node = Node(single_node_topology(), "node1").start()
    try:
        yield node.transport.external_endpoint
    finally:
        node.stop()


@pytest.fixture(params=["fake", "node"])
def endpoint(request) -> str:
    """The endpoint of a fake node and of a real in-process node: end-to-end tests run
    against both."""
    if request.param == "fake":
        return request.getfixturevalue("fake").endpoint
    if not real_node_available():
        pytest.skip("the node's storage backend is not there yet")
    return request.getfixturevalue("real_node_endpoint")


def client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("esnode-client")]


@pytest.fixture(autouse=True)
def _no_client_thread_left() -> Iterator[None]:
    yield
    wait_for(lambda: not client_threads(), timeout=5, message="client I/O threads to stop")
