"""Fixtures for actor-level tests: in-process clusters that are always torn down."""

from __future__ import annotations

import threading

import pytest

from tests.support.cluster import InProcessCluster


@pytest.fixture(params=["memory", "lmdb"])
def store(request) -> str:
    return request.param


@pytest.fixture
def make_cluster(tmp_path):
    """``make_cluster(size=3, store="memory", **kwargs)`` -> a started ``InProcessCluster``;
    every cluster made is stopped after the test, which then fails on any network error."""
    made: list[InProcessCluster] = []

    def make(size: int = 3, store: str = "memory", **kwargs) -> InProcessCluster:
        cluster = InProcessCluster(size, store=store, data_root=tmp_path / f"c{len(made)}",
                                   **kwargs)
        made.append(cluster)
        return cluster.start()

    yield make
    for cluster in made:
        cluster.stop(check=False)
    for cluster in made:
        cluster.network.check()
    left = [t.name for t in threading.enumerate() if t.name in ("ticker", "inproc-network")]
    assert not left, f"threads left running: {left}"
