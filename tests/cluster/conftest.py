"""Fixtures for process-level cluster tests: every node process a test starts is ended in the
finalizer, pass or fail, and a failing test prints each node's stderr."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.cluster.harness import Cluster


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def make_cluster(request, tmp_path) -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(size=3, **timers)`` -> a ``Cluster`` (not started)."""
    clusters: list[Cluster] = []

    def make(size: int = 3, **timers: int) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(clusters)}", size, **timers)
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop_all(graceful=False)
        failed = any(getattr(request.node, f"rep_{when}", None) is not None
                     and getattr(request.node, f"rep_{when}").failed
                     for when in ("setup", "call"))
        if failed:
            for cluster in clusters:
                print(f"\n===== node logs of {cluster.dir} =====\n{cluster.logs()}")


FAST = {"election_timeout_ms": 500, "heartbeat_interval_ms": 50, "write_timeout_ms": 2000,
        "gossip_interval_ms": 100, "dead_member_ms": 1000}
"""Shorter timers for tests that do not measure the defaults."""


@pytest.fixture
def cluster(make_cluster) -> Cluster:
    """A started 3-node cluster with FAST timers and an elected leader."""
    c = make_cluster(3, **FAST)
    c.start()
    c.wait_for_leader(timeout=20)
    return c
