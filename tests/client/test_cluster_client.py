"""Both client flavours against several fake nodes (``FakeCluster``): discovery from seeds
and DNS (a real DNS server on loopback), node preference, leader redirects, failover of an
append with an unknown outcome, a subscription resuming across a node's death, and a clear
``Unavailable`` when nothing answers. Each test closes its clients, nodes and servers."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from typer.testing import CliRunner

from esnode.cli.main import app
from esnode.client import (
    NodeChanged,
    Reconnected,
    Resubscribed,
    Retrying,
    Unavailable,
    WriteUnavailable,
    connect,
    connect_async,
    new_event,
)
from tests.client.cluster_support import Notices, cluster_client, dns_seeds, dns_server, seeds
from tests.client.fake_node import FakeCluster
from tests.conftest import free_port, wait_for


@pytest.fixture
def cluster():
    with FakeCluster(3, leader=1) as c:
        yield c


def appends(node):
    return [r for r in node.requests if type(r).__name__ == "Append"]


def test_discovery_skips_a_dead_first_seed_and_prefers_the_leader(cluster):
    dead = ("127.0.0.1", free_port())
    with cluster_client([dead] + [n.external for n in cluster.nodes]) as client:
        assert (client.node, client.endpoint) == ("node2", cluster.nodes[1].endpoint)
        assert client.append("s", new_event("T")).last_version == 0
    assert len(appends(cluster.nodes[1])) == 1


def test_follower_preference_reads_from_a_follower(cluster):
    with cluster_client([n.external for n in cluster.nodes], nodePreference="follower") as c:
        assert c.node in ("node1", "node3") and c.ping().state == "Follower"


def test_not_leader_redirects_to_the_leader_it_names(cluster):
    notices = Notices()
    with cluster_client([n.external for n in cluster.nodes]) as client:
        client.on_event(notices)
        cluster.elect(2)  # node2 is now a follower: it answers not_leader naming node3
        event = new_event("T")
        assert client.append("s", event).last_version == 0
        assert client.node == "node3" and client.stats.node_changes == 1
    assert [a.events[0].event_id for a in appends(cluster.nodes[2])] == [event.event_id]
    assert notices.of(Retrying)[0].error.code == "not_leader"
    assert [(n.old_node, n.node) for n in notices.of(NodeChanged)] == [("node2", "node3")]


def test_an_append_in_flight_when_the_leader_dies_is_retried_once_with_the_same_ids(cluster):
    leader = cluster.nodes[1]
    leader.unanswered.add("append")  # written, but the answer never comes
    with cluster_client([n.external for n in cluster.nodes]) as client:
        events = [new_event("T", {"i": i}) for i in range(3)]
        outcome = []
        worker = threading.Thread(target=lambda: outcome.append(client.append("s", events)))
        worker.start()
        try:
            wait_for(lambda: len(leader.log) == 3, message="the append to be written")
            cluster.elect(0)
            cluster.kill(1)
        finally:
            worker.join(10)
        [result] = outcome
        assert result.idempotent and (result.first_version, result.last_version) == (0, 2)
        assert client.node == "node1" and client.stats.retries >= 1
    assert [e.event_id for e in cluster.nodes[0].log] == [e.event_id for e in events]
    assert [a.events for a in appends(cluster.nodes[0])] == [tuple(events)]


def test_a_subscription_resumes_after_its_node_dies_without_gap_or_duplicate(cluster):
    notices = Notices()
    with cluster_client([n.external for n in cluster.nodes]) as client:
        client.on_event(notices)
        client.append("s", [new_event("T", {"i": i}) for i in range(10)])
        with client.subscribe("$all", window=4) as sub:
            got = [sub.get(5) for _ in range(6)]
            cluster.elect(2)
            cluster.kill(1)
            client.append("s", [new_event("T", {"i": i}) for i in range(10, 15)])
            got += [sub.get(5) for _ in range(9)]
            assert sub.get(0.05) is None
        assert [e.position for e in got] == list(range(15))
        assert client.node == "node3" and client.stats.resubscriptions == 1
    [resumed] = notices.of(Resubscribed)
    assert 5 <= resumed.from_ <= 9 and resumed.endpoint == cluster.nodes[2].endpoint
    assert notices.of(Reconnected)


def test_all_seeds_dead_fail_with_a_clear_unavailable_within_the_attempts():
    ports = [free_port() for _ in range(3)]
    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        connect(seeds([("127.0.0.1", p) for p in ports], maxDiscoverAttempts=3,
                      gossipTimeout=100))
    elapsed = time.monotonic() - started
    text = str(info.value)
    assert "3 attempt(s)" in text and all(f"127.0.0.1:{p}" in text for p in ports)
    assert elapsed < 3 * 3 * 0.1 + 2  # 3 rounds of 3 probes of 100 ms, and some slack


def test_when_the_whole_cluster_dies_an_append_fails_as_unavailable_and_unknown(cluster):
    with cluster_client([n.external for n in cluster.nodes], maxDiscoverAttempts=2) as client:
        cluster.nodes[1].unanswered.add("append")
        for i in range(3):
            cluster.kill(i) if i != 1 else None
        outcome = []
        worker = threading.Thread(target=lambda: outcome.append(_try(
            client.append, "s", new_event("T"))))
        worker.start()
        try:
            wait_for(lambda: appends(cluster.nodes[1]), message="the append to arrive")
            cluster.kill(1)
        finally:
            worker.join(20)
        assert isinstance(outcome[0], WriteUnavailable)
        assert "may or may not have happened" in str(outcome[0])


def test_dns_discovery_against_a_real_dns_server():
    port = free_port()
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    with FakeCluster(hosts=hosts, port=port, leader=2) as cluster, \
            dns_server({"es.test": ["127.0.0.9"] + hosts}) as server:
        with connect(dns_seeds("es.test", port, server)) as client:
            assert client.node == "node3" and client.endpoint == f"tcp://127.0.0.4:{port}"
            client.append("s", new_event("T"))

        async def main():
            async with await connect_async(dns_seeds("es.test", port, server)) as aclient:
                assert aclient.node == "node3"
                return (await aclient.read_stream("s")).last_version

        assert asyncio.run(main()) == 0
        with pytest.raises(Unavailable) as info:
            connect(dns_seeds("nowhere.test", port, server, maxDiscoverAttempts=1))
        assert "DNS nowhere.test" in str(info.value) and "NXDOMAIN" in str(info.value)
        assert len(cluster.nodes[2].log) == 1


def test_the_asyncio_client_fails_over_with_the_same_logic(cluster):
    async def main():
        notices = Notices()
        async with await connect_async(seeds([n.external for n in cluster.nodes])) as client:
            client.on_event(notices)
            await client.append("s", [new_event("T", {"i": i}) for i in range(4)])
            sub = await client.subscribe("$all", window=2)
            got = [await sub.get(5) for _ in range(2)]
            cluster.elect(0)
            cluster.kill(1)
            event = new_event("T", {"i": 4})
            assert (await client.append("s", event)).last_version == 4
            got += [await sub.get(5) for _ in range(3)]
            await sub.close()
            assert [e.position for e in got] == list(range(5))
            assert client.node == "node1" and client.stats.node_changes == 1
        return notices

    notices = asyncio.run(main())
    assert notices.of(NodeChanged) and notices.of(Resubscribed)


def test_the_cli_accepts_every_form_of_connect(cluster):
    port = free_port()
    runner = CliRunner()
    with FakeCluster(hosts=["127.0.0.2", "127.0.0.3"], port=port, leader=0) as dns_cluster, \
            dns_server({"es.test": ["127.0.0.2", "127.0.0.3"]}) as server:
        for target, node in [(cluster.nodes[0].endpoint, "node1"),
                             (seeds([n.external for n in cluster.nodes]), "node2"),
                             (dns_seeds("es.test", port, server), "node1")]:
            result = runner.invoke(app, ["ping", "--json", "--connect", target])
            assert result.exit_code == 0, result.output
            assert f'"node": "{node}"' in result.output.replace('":"', '": "')
        assert dns_cluster.nodes[0].requests


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        return exc
