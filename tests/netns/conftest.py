"""Fixtures for the hosts tier: a ``Network`` of namespaces per test module, a fresh
``HostsCluster`` (node processes, data in tmp_path) per test. Skipped as a whole, with the
reason, when not root or ``ip netns`` does not work.

Clean-up: each test's finalizer kills its nodes and heals every cut; the module's finalizer
destroys the network (namespaces, veths, bridges, the root veth and route); ``atexit`` does
both again for anything left; a stale-leftover sweep runs once before the first network."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.cluster.conftest import FAST
from tests.netns import hosts

_reason = hosts.available()
_swept: list[str] | None = None


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=f"hosts tier skipped: {_reason}") if _reason else None
    for item in items:
        if "tests/netns/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.netns)
            if skip is not None:
                item.add_marker(skip)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def new_network(size: int) -> hosts.Network:
    global _swept
    if _reason is not None:
        pytest.skip(f"hosts tier skipped: {_reason}")
    if _swept is None:
        _swept = hosts.sweep_stale()
        if _swept:
            print(f"removed stale leftovers of earlier runs: {_swept}")
    return hosts.Network(size).create()


@pytest.fixture(scope="module")
def network() -> Iterator[hosts.Network]:
    """Three hosts, shared by the tests of a module (each test heals what it cut)."""
    net = new_network(3)
    try:
        yield net
    finally:
        net.destroy()


@pytest.fixture(scope="module")
def network5() -> Iterator[hosts.Network]:
    net = new_network(5)
    try:
        yield net
    finally:
        net.destroy()


def _cluster_fixture(request, net: hosts.Network, tmp_path) -> Iterator[hosts.HostsCluster]:
    net.heal()
    cluster = hosts.HostsCluster(net, tmp_path / "cluster", **FAST)
    try:
        yield cluster
    finally:
        cluster.stop_all(graceful=False)
        net.heal()
        failed = any(getattr(request.node, f"rep_{when}", None) is not None
                     and getattr(request.node, f"rep_{when}").failed
                     for when in ("setup", "call"))
        if failed:
            print(f"\n===== node logs of {cluster.dir} =====\n{cluster.logs()}")


@pytest.fixture
def hosts_cluster(request, network, tmp_path) -> Iterator[hosts.HostsCluster]:
    """A 3-node cluster on ``network`` (not started), FAST timers."""
    yield from _cluster_fixture(request, network, tmp_path)


@pytest.fixture
def hosts_cluster5(request, network5, tmp_path) -> Iterator[hosts.HostsCluster]:
    yield from _cluster_fixture(request, network5, tmp_path)
