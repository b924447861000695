"""Persistent subscription groups on a real 3-node in-process cluster (memory and LMDB
stores) over the faulty network: the group state machine under message loss on every cluster
link and a leader change (the old leader is isolated while a consumer holds events in flight
and acks others). Checked: a confirmed ack is never delivered again, every event is acked in
the end, retry counts and an unfinished replay of parked events carry over to the new
leader, and the acks stream is cut off behind checkpoints without losing what they said."""

from __future__ import annotations

import time

from esnode.actors import persistent as persistent_actor
from esnode.core.messages import (
    Append,
    ConnectGroup,
    CreateGroup,
    GroupAck,
    GroupEventsPushed,
    GroupNack,
    ReplayParked,
    Reply,
    SubscriptionDropped,
)
from esnode.core.persistent import GroupSettings, group_stream
from esnode.core.states import VNodeState
from esnode.core.types import ANY as ANY_VERSION
from esnode.core.types import StreamNotFound
from tests.conftest import wait_for
from tests.support.cluster import new_event
from tests.support.inproc import ANY, outcome

STREAM, GROUP, EVENTS = "orders", "billing", 40


class Consumer:
    """One group consumer speaking the raw protocol to one node at a time; it remembers
    every delivery (position, retry count, when) and every ack the node confirmed."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.client = None
        self.corr = None
        self.seen = 0
        self.deliveries: list[tuple[int, int, float]] = []
        self.confirmed: dict[int, float] = {}
        self.pending: list[int] = []

    def connect(self, node: str, credit: int, timeout: float = 20.0) -> None:
        """Join the group on ``node``, retrying while it is not ready (rebuilding groups)."""
        def joined() -> bool:
            client = self.cluster.client(node)
            corr = client.send(ConnectGroup(STREAM, GROUP, credit))
            try:
                first = client.wait(corr, timeout=2.0)
            except TimeoutError:
                return False
            if type(first) is not Reply:
                return False
            self.client, self.corr, self.seen = client, corr, 1
            return True
        wait_for(joined, timeout, message=f"a consumer joined on {node}")

    def poll(self) -> bool:
        """Take new pushes; False once the node dropped this consumer."""
        messages = self.client.messages(self.corr)
        alive = True
        for message in messages[self.seen:]:
            if type(message) is GroupEventsPushed:
                for event, retries in message.events:
                    self.deliveries.append((event.position, retries, time.monotonic()))
                    self.pending.append(event.position)
            elif type(message) is SubscriptionDropped:
                alive = False
        self.seen = len(messages)
        return alive

    def ack(self, count: int) -> bool:
        """Ack up to ``count`` pending events; True if the node confirmed it."""
        batch, self.pending = self.pending[:count], self.pending[count:]
        if not batch:
            return True
        try:
            kind, _ = outcome(self.client.call(GroupAck(self.corr, tuple(batch)), timeout=3.0))
        except TimeoutError:
            return False
        if kind == "ok":
            now = time.monotonic()
            self.confirmed.update((p, now) for p in batch)
        return kind == "ok"


def group_on_a_cluster(make_cluster, store: str, events: int):
    """A 3-node cluster with a group on ``STREAM`` (from the start) and ``events`` events."""
    cluster = make_cluster(store=store)
    leader = cluster.wait_for_leader()
    settings = GroupSettings(start_from="start", message_timeout=5.0, max_retry_count=50,
                             min_checkpoint_count=4, checkpoint_after=0.2)
    client = cluster.client(leader.config.name)
    assert outcome(client.call(CreateGroup(STREAM, GROUP, settings)))[0] == "ok"
    for _ in range(events):
        kind, body = outcome(client.call(Append(STREAM, ANY_VERSION, (new_event(),)),
                                         timeout=10.0))
        assert kind == "ok", body
    return cluster, leader


def committed(node, suffix: str, event_type: str, has: str) -> bool:
    """The last record of the group's ``suffix`` stream on ``node`` is an ``event_type``
    naming ``has`` and is committed (a new leader has it)."""
    try:
        last = node.store.read_stream(group_stream(STREAM, GROUP, suffix), -1, 1, True).events
    except StreamNotFound:
        return False
    return bool(last) and last[0].event_type == event_type and has in last[0].data.decode() \
        and last[0].position <= node.board.readable_position


def change_leader(cluster, old):
    """Isolate ``old`` until another node leads, then heal the network; the new leader."""
    name = old.config.name
    cluster.network.isolate(name)
    wait_for(lambda: old.state is not VNodeState.Leader, 10,
             message="the isolated leader stepping down")
    new = cluster.wait_for_leader(among=[n for n in cluster.names if n != name])
    cluster.network.recover()
    return new


def test_a_group_through_message_loss_and_a_leader_change(make_cluster, store):
    cluster, old = group_on_a_cluster(make_cluster, store, EVENTS)
    net = cluster.network
    name = old.config.name
    net.drop(ANY, ANY, 0.1)  # from here on every cluster link loses one message in ten

    consumer = Consumer(cluster)
    consumer.connect(name, credit=10)
    wait_for(lambda: consumer.poll() and len(consumer.pending) >= 10, 10,
             message="ten events in flight")
    assert consumer.ack(5), "the first acks were confirmed (through the lossy links)"
    wait_for(lambda: consumer.poll() and len(consumer.pending) >= 10, 10,
             message="the window refilled")
    held = list(consumer.pending)  # in flight when the leader is cut off: never acked there
    # a retry on the old leader: it must count on the new one too
    retried = held[0]
    assert outcome(consumer.client.call(GroupNack(consumer.corr, (retried,), "retry"),
                                        timeout=3.0))[0] == "ok"
    consumer.pending.remove(retried)
    wait_for(lambda: consumer.poll() and consumer.deliveries[-1][0] == retried, 5,
             message="the nacked event delivered again")
    consumer.pending.remove(retried)
    wait_for(lambda: committed(old, "acks", "$Retried", f"[{retried},1]"), 10,
             message="the retry count committed")
    new = change_leader(cluster, old)
    net.drop(ANY, ANY, 0.1)
    consumer.pending = []
    consumer.connect(new.config.name, credit=10)
    switched = time.monotonic()
    deadline = time.monotonic() + 60
    while len(consumer.confirmed) < EVENTS:
        # an ack refused or lost comes back after the message timeout, with retry count + 1
        wait_for(lambda: consumer.poll() and (consumer.pending or
                                              len(consumer.confirmed) >= EVENTS),
                 max(0.1, deadline - time.monotonic()), message=f"every event acked: "
                 f"{len(consumer.confirmed)} of {EVENTS} so far")
        consumer.ack(10)
    positions = {p for p, _, _ in consumer.deliveries}
    assert len(positions) == EVENTS
    assert set(consumer.confirmed) == positions, "every event acked in the end"
    again = [(p, t) for p, _, t in consumer.deliveries
             if p in consumer.confirmed and t > consumer.confirmed[p]]
    assert not again, f"confirmed acks delivered again: {again}"
    after = {p: r for p, r, t in consumer.deliveries if t >= switched}
    assert after.get(retried, 0) >= 1, \
        f"the retry count of {retried} survived the leader change: {after.get(retried)}"


def test_a_replay_of_parked_events_not_acked_before_a_leader_change_is_finished_after(
        make_cluster, store):
    """The replayed event was not acked on the old leader: the new one delivers it again,
    and a second replay finds nothing (it was replayed once, and acked)."""
    cluster, old = group_on_a_cluster(make_cluster, store, 3)
    consumer = Consumer(cluster)
    consumer.connect(old.config.name, credit=10)
    wait_for(lambda: consumer.poll() and len(consumer.pending) == 3, 10, message="3 events")
    first, *rest = consumer.pending
    assert outcome(consumer.client.call(GroupNack(consumer.corr, (first,), "park"),
                                        timeout=5.0))[0] == "ok"
    consumer.pending = rest
    assert consumer.ack(2)
    kind, body = outcome(cluster.client(old.config.name).call(ReplayParked(STREAM, GROUP)))
    assert (kind, body) == ("ok", {"replayed": 1})
    wait_for(lambda: consumer.poll() and consumer.pending == [first], 5,
             message="the parked event replayed")
    wait_for(lambda: committed(old, "checkpoint", "$Checkpoint", f'"replaying":[[{first},'),
             10, message="the replay recorded")
    new = change_leader(cluster, old)
    # an ack on the old connection: the consumer is gone there, and the group moved
    kind, _ = outcome(consumer.client.call(GroupAck(consumer.corr, (first,)), timeout=5.0))
    assert kind == "not_leader"
    consumer.pending = []
    consumer.connect(new.config.name, credit=10)
    wait_for(lambda: consumer.poll() and consumer.pending == [first], 10,
             message="the unfinished replay delivered again by the new leader")
    assert consumer.ack(1)
    kind, body = outcome(cluster.client(new.config.name).call(ReplayParked(STREAM, GROUP)))
    assert (kind, body) == ("ok", {"replayed": 0})


def test_the_acks_stream_is_cut_off_behind_checkpoints_and_a_new_leader_still_skips_acked(
        make_cluster, store, monkeypatch):
    """Acked one by one, 24 events leave 24 ack records; once checkpoints summarised them
    the stream keeps only the tail (``$tb``), and a new leader built from what is left
    delivers only the events written after."""
    monkeypatch.setattr(persistent_actor, "COMPACT_AFTER", 5)
    cluster, old = group_on_a_cluster(make_cluster, store, 24)
    consumer = Consumer(cluster)
    consumer.connect(old.config.name, credit=3)
    while len(consumer.confirmed) < 24:
        wait_for(lambda: consumer.poll() and consumer.pending, 10,
                 message=f"event {len(consumer.confirmed) + 1} of 24")
        assert consumer.ack(1)
    acks = group_stream(STREAM, GROUP, "acks")

    def cut_off() -> bool:
        meta = old.store.get_metadata(acks)
        return (meta.truncate_before or 0) >= 10 and old.board.readable_position >= \
            old.store.writer_position
    wait_for(cut_off, 10, message="the acks stream cut off behind a committed checkpoint")
    left = old.store.read_stream(acks, 0, 100).events
    assert left and left[0].version >= 10 and len(left) < 24 - 5

    new = change_leader(cluster, old)
    client = cluster.client(new.config.name)
    fresh = [outcome(client.call(Append(STREAM, ANY_VERSION, (new_event(),)), timeout=10.0))
             for _ in range(2)]
    assert [kind for kind, _ in fresh] == ["ok", "ok"], fresh
    consumer.pending = []
    before = len(consumer.deliveries)
    consumer.connect(new.config.name, credit=10)
    wait_for(lambda: consumer.poll() and len(consumer.pending) >= 2, 10,
             message="the two new events")
    positions = [p for p, _, _ in consumer.deliveries[before:]]
    assert not set(positions) & set(consumer.confirmed), positions
    assert len(positions) == 2
