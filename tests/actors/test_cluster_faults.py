"""A real 3-node cluster (every actor real) over the faulty in-process network, in the
style of etcd-raft's network tests: elect, cut, isolate, recover, and check what the design
(docs/cluster-design.md) promises."""

from __future__ import annotations

import threading
import time

import pytest

from esnode.core.messages import Append, EventsPushed, ReadStream, Subscribe
from esnode.core.states import VNodeState
from esnode.core.types import ANY as ANY_VERSION
from tests.conftest import wait_for
from tests.support.cluster import FAST_TIMERS, new_event
from tests.support.inproc import ANY, outcome

ELECTION_TIMEOUT = FAST_TIMERS["election_timeout_ms"] / 1000
HEARTBEAT = FAST_TIMERS["heartbeat_interval_ms"] / 1000
STEP_DOWN_BOUND = 1.25 * ELECTION_TIMEOUT + HEARTBEAT
"""docs/cluster-design.md §5: a leader cut from its majority steps down within this."""
SCHEDULING_SLACK = 1.0
"""Two cores shared by three nodes' threads (and other tests): timers fire late."""
REFUSALS = {"no_quorum", "not_leader", "not_ready", "outcome_unknown"}


def append(client, stream: str, *events, expected: int = ANY_VERSION, timeout: float = 5.0):
    return outcome(client.call(Append(stream, expected, tuple(events)), timeout=timeout))


def ids_on(cluster, name: str, prefix: str = "") -> list[str]:
    return [e.event_id for e in cluster.events(name) if e.stream.startswith(prefix)
            and not e.stream.startswith("$")]


def test_a_leader_is_elected_and_followed(make_cluster, store):
    cluster = make_cluster(store=store)
    leader = cluster.wait_for_leader()
    terms = {n.board.term for n in cluster.running()}
    assert len(terms) == 1 and terms.pop() >= 1
    assert {n.board.leader for n in cluster.running()} == {leader.config.name}
    assert [n.state for n in cluster.followers(leader)] == [VNodeState.Follower] * 2


def test_a_write_through_a_follower_is_forwarded_and_readable_everywhere(make_cluster, store):
    cluster = make_cluster(store=store)
    leader = cluster.wait_for_leader()
    follower = cluster.followers(leader)[0]
    event = new_event()
    kind, body = append(cluster.client(follower.config.name), "orders", event)
    assert kind == "ok", body
    cluster.wait_converged()
    for name in cluster.names:
        reply = cluster.client(name).call(ReadStream("orders"))
        kind, body = outcome(reply)
        assert kind == "ok" and [e.event_id for e in body["events"]] == [event.event_id]


def test_isolated_leader_steps_down_a_new_one_takes_over_and_recover_converges(
        make_cluster, store):
    cluster = make_cluster(store=store)
    net = cluster.network
    old = cluster.wait_for_leader()
    name = old.config.name
    others = [n for n in cluster.names if n != name]
    before = new_event()
    assert append(cluster.client(name), "s", before)[0] == "ok"
    term = old.board.term

    net.isolate(name)
    cut_at = time.monotonic()
    # A write the isolated leader takes but can never commit: it must not be acknowledged.
    stranded_client = cluster.client(name)
    stranded = new_event()
    corr = stranded_client.send(Append("s", ANY_VERSION, (stranded,)))

    wait_for(lambda: old.state is not VNodeState.Leader, STEP_DOWN_BOUND + SCHEDULING_SLACK,
             message="the isolated leader to step down (check-quorum)")
    new = cluster.wait_for_leader(among=others)
    assert new.board.term > term
    kind, detail = outcome(stranded_client.wait(corr, timeout=5))
    assert kind in REFUSALS, detail
    # Still cut off: it refuses writes, and does not campaign its term up (pre-vote).
    kind, detail = append(cluster.client(name), "s", new_event())
    assert kind in REFUSALS, detail
    during = new_event()
    assert append(cluster.client(others[0]), "s", during)[0] == "ok"
    assert old.board.term == term
    assert time.monotonic() - cut_at < 10

    net.recover()
    assert cluster.wait_for_leader() is new  # the rejoining node does not disrupt it
    cluster.wait_converged()
    assert {n.board.term for n in cluster.running()} == {new.board.term}
    for node in cluster.names:
        ids = ids_on(cluster, node)
        assert ids.count(before.event_id) == 1 and ids.count(during.event_id) == 1
        assert stranded.event_id not in ids  # its tail was truncated when it rejoined


@pytest.mark.parametrize("direction", ["leader->follower", "follower->leader"])
def test_a_one_way_cut_does_not_disrupt_a_leader_that_reaches_a_majority(
        make_cluster, direction):
    """Pre-vote and the leader lease (docs/cluster-design.md §3-§4): the follower that stops
    hearing the leader asks for pre-votes, and the other follower (in its lease) and the
    leader refuse them; the leader keeps its majority through the other follower."""
    cluster = make_cluster()
    net = cluster.network
    leader = cluster.wait_for_leader()
    term = leader.board.term
    cut_off, other = cluster.followers(leader)
    a, b = leader.config.name, cut_off.config.name
    net.cut_one_way(*((a, b) if direction == "leader->follower" else (b, a)))

    client = cluster.client(other.config.name)
    acked = []
    until = time.monotonic() + 3 * ELECTION_TIMEOUT
    while time.monotonic() < until:  # writes keep being acknowledged all along
        event = new_event()
        kind, body = append(client, "steady", event)
        assert kind == "ok", body
        acked.append(event.event_id)
        assert leader.state is VNodeState.Leader and leader.board.term == term
        threading.Event().wait(0.02)  # pacing, not synchronization
    assert other.state is VNodeState.Follower and other.board.leader == a
    assert {n.board.term for n in cluster.running()} == {term}  # nobody's term inflated
    if direction == "leader->follower":
        assert cut_off.state is not VNodeState.Follower  # it did notice the silence

    net.recover()
    assert cluster.wait_for_leader() is leader
    cluster.wait_converged()
    assert {n.board.term for n in cluster.running()} == {term}
    assert ids_on(cluster, b, "steady") == acked


def test_acknowledged_writes_survive_loss_duplication_and_reordering_exactly_once(
        make_cluster, store):
    cluster = make_cluster(store=store, seed=20240)
    net = cluster.network
    cluster.wait_for_leader()
    net.drop(ANY, ANY, 0.2)
    net.duplicate(ANY, ANY, 0.1)
    net.delay(ANY, ANY, (0.0, 0.004))
    net.reorder(ANY, ANY, 0.2, window=0.02)

    acked: dict[str, list[str]] = {}
    unknown: set[str] = set()
    errors: list[BaseException] = []

    def writer(node: str, stream: str, writes: int) -> None:
        client = cluster.client(node)
        try:
            for _ in range(writes):
                events = (new_event(), new_event())
                for _attempt in range(8):  # retries carry the same event ids
                    try:
                        kind, _ = append(client, stream, *events, timeout=1.0)
                    except TimeoutError:
                        kind = "timeout"
                    if kind == "ok":
                        acked.setdefault(stream, []).extend(e.event_id for e in events)
                        break
                    threading.Event().wait(0.05)  # back off before retrying
                else:
                    unknown.update(e.event_id for e in events)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name, f"w-{name}", 8))
               for name in cluster.names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert net.stats["dropped"] > 0 and net.stats["duplicated"] > 0

    net.recover()
    cluster.wait_for_leader()
    cluster.wait_converged(timeout=20)
    assert sum(map(len, acked.values())) >= 32  # the cluster made progress under loss
    for node in cluster.names:
        for stream, ids in acked.items():
            held = ids_on(cluster, node, stream)
            assert len(held) == len(set(held)), f"{node}: duplicate events in {stream}"
            assert set(ids) <= set(held), f"{node}: acknowledged writes lost in {stream}"
            assert set(held) <= set(ids) | unknown
            versions = [e.version for e in cluster.events(node) if e.stream == stream]
            assert versions == list(range(len(versions)))


def pushed(client, corr: int, stream: str) -> list[str]:
    return [e.event_id for message in client.messages(corr) if type(message) is EventsPushed
            for e in message.events if e.stream == stream]


def test_subscribers_on_every_node_see_each_acknowledged_event_once_through_a_failover(
        make_cluster):
    cluster = make_cluster()
    net = cluster.network
    old = cluster.wait_for_leader()
    subscribers = {}
    for name in cluster.names:
        client = cluster.client(name)
        corr = client.send(Subscribe("$all"))
        assert outcome(client.wait(corr))[0] == "ok"
        subscribers[name] = (client, corr)
    acked = []

    def write(node: str, n: int) -> None:
        for _ in range(n):
            event = new_event()
            kind, body = append(cluster.client(node), "sub", event)
            assert kind == "ok", body
            acked.append(event.event_id)

    write(old.config.name, 5)
    net.isolate(old.config.name)
    others = [n for n in cluster.names if n != old.config.name]
    cluster.wait_for_leader(among=others)
    write(others[0], 5)
    net.recover()
    cluster.wait_for_leader()
    write(others[1], 5)
    for name, (client, corr) in subscribers.items():
        wait_for(lambda c=client, k=corr: len(pushed(c, k, "sub")) >= len(acked), timeout=10,
                 message=f"the subscriber on {name} to receive every event")
        assert pushed(client, corr, "sub") == acked, name


def test_a_five_node_cluster_partitioned_two_three_serves_only_on_the_majority_side(
        make_cluster):
    cluster = make_cluster(size=5)
    net = cluster.network
    old = cluster.wait_for_leader()
    minority = [old.config.name, cluster.followers(old)[0].config.name]
    majority = [n for n in cluster.names if n not in minority]
    net.partition(minority, majority)
    new = cluster.wait_for_leader(among=majority)
    wait_for(lambda: not cluster.leaders(minority), STEP_DOWN_BOUND + SCHEDULING_SLACK,
             message="no leader left on the minority side")
    stranded = new_event()
    for name in minority:
        kind, detail = append(cluster.client(name), "p", stranded)
        assert kind in REFUSALS, detail
    kept = new_event()
    assert append(cluster.client(majority[-1]), "p", kept)[0] == "ok"
    net.recover()
    assert cluster.wait_for_leader() is new
    cluster.wait_converged()
    for name in cluster.names:
        assert ids_on(cluster, name, "p") == [kept.event_id]


def test_nodes_restart_from_disk_and_catch_up(make_cluster):
    cluster = make_cluster(store="lmdb")
    leader = cluster.wait_for_leader()
    follower = cluster.followers(leader)[0].config.name
    written = []

    def write(node: str) -> None:
        event = new_event()
        assert append(cluster.client(node), "r", event)[0] == "ok"
        written.append(event.event_id)

    write(leader.config.name)
    cluster.stop_node(follower)
    write(leader.config.name)  # 2 of 3 still commit
    cluster.start_node(follower)
    cluster.wait_converged()
    name = leader.config.name
    cluster.stop_node(name)  # the leader goes: the other two elect one
    others = [n for n in cluster.names if n != name]
    cluster.wait_for_leader(among=others)
    write(others[0])
    cluster.start_node(name)
    cluster.wait_for_leader()
    cluster.wait_converged()
    for node in cluster.names:
        assert ids_on(cluster, node, "r") == written
