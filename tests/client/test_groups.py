"""Persistent subscription groups end to end on a real in-process node: management, two
competing consumers, acks made durable, nacks (park, retry, skip), timeouts of a consumer
that never acks, replay of parked events, and bad input."""

from __future__ import annotations

import uuid

import pytest

from esnode.client import _core as core
from esnode.client import (
    BadRequest,
    GroupExists,
    GroupNotFound,
    connect,
    new_event,
)
from tests.conftest import wait_for


@pytest.fixture
def client(real_node_endpoint):
    with connect(real_node_endpoint, timeout=5) as c:
        yield c


def take(sub, n: int, timeout: float = 10.0) -> list:
    got = []
    deadline = timeout
    while len(got) < n:
        item = sub.get(deadline)
        assert item is not None, f"only {len(got)} of {n} events"
        got.append(item)
    return got


def test_management_and_bad_input(client):
    stream = f"g-{uuid.uuid4().hex[:8]}"
    client.create_group(stream, "g1", start_from="start", max_retry_count=3)
    with pytest.raises(GroupExists):
        client.create_group(stream, "g1")
    with pytest.raises(BadRequest, match="consumer_strategy"):
        client.create_group(stream, "g2", consumer_strategy="Random")
    wait_for(lambda: [g.group for g in client.list_groups(stream)] == ["g1"], 5,
             message="the group to be listed")
    info = client.group_info(stream, "g1")
    assert info.settings.max_retry_count == 3 and info.live
    client.update_group(stream, "g1", max_retry_count=7)
    wait_for(lambda: client.group_info(stream, "g1").settings.max_retry_count == 7, 5,
             message="the update")
    with pytest.raises(GroupNotFound):
        client.group_info(stream, "nope")
    with pytest.raises(GroupNotFound):
        client.subscribe_group(stream, "nope")
    client.delete_group(stream, "g1")
    wait_for(lambda: client.list_groups(stream) == [], 5, message="the deletion")


def test_competing_consumers_share_the_events_and_acked_ones_never_come_back(client,
                                                                            real_node_endpoint):
    stream = f"g-{uuid.uuid4().hex[:8]}"
    client.create_group(stream, "work", start_from="start", message_timeout=0.5,
                        max_retry_count=1)
    wait_for(lambda: client.list_groups(stream), 5, message="the group")
    client.append(stream, [new_event("Job", {"n": i}) for i in range(20)])
    with connect(real_node_endpoint) as other:
        a = client.subscribe_group(stream, "work", window=5)
        b = other.subscribe_group(stream, "work", window=5)
        got_a, got_b = take(a, 5), take(b, 5)
        assert not {e.position for e in got_a} & {e.position for e in got_b}
        a.ack(*got_a)
        b.ack(*got_b)
        with pytest.raises(BadRequest, match="not in flight"):  # already settled
            client._op(core.group_ack(a.id, (got_a[0].position,)), None)
        rest_a, rest_b = take(a, 5), take(b, 5)
        a.ack(*rest_a)
        b.ack(*rest_b)
        everything = got_a + got_b + rest_a + rest_b
        assert sorted(e.event.json()["n"] for e in everything) == list(range(20))
        assert all(e.retry_count == 0 for e in everything)
        b.close()
        # a consumer that never acks: its events time out, come back with a retry count,
        # and park after max_retry_count
        client.append(stream, [new_event("Job", {"n": 20 + i}) for i in range(5)])
        first = take(a, 5)
        again = take(a, 5)
        assert {e.position for e in again} == {e.position for e in first}
        assert all(e.retry_count == 1 for e in again)
        wait_for(lambda: client.group_info(stream, "work").parked == 5, 10,
                 message="the events to be parked")
        assert a.get(0.8) is None  # parked: not delivered again
        a.close()


def test_nacks_park_retry_skip_and_parked_events_replay(client):
    stream = f"g-{uuid.uuid4().hex[:8]}"
    client.create_group(stream, "n", start_from="start")
    wait_for(lambda: client.list_groups(stream), 5, message="the group")
    client.append(stream, [new_event("Job", {"n": i}) for i in range(3)])
    with client.subscribe_group(stream, "n", window=10) as sub:
        e0, e1, e2 = take(sub, 3)
        sub.nack(e0, action="park", reason="bad data")
        sub.nack(e1, action="retry")
        assert (again := sub.get(5)).position == e1.position and again.retry_count == 1
        sub.ack(again)
        sub.nack(e2, action="skip")
        assert sub.get(0.3) is None
        wait_for(lambda: client.group_info(stream, "n").parked == 1, 5, message="parked")
        assert client.replay_parked(stream, "n") == 1
        replayed = sub.get(5)
        assert replayed.position == e0.position and replayed.event.json() == {"n": 0}
        sub.ack(replayed)
        assert client.replay_parked(stream, "n") == 0  # each parked event is replayed once
        assert sub.get(0.3) is None


def test_a_group_reads_on_as_its_consumers_settle_without_new_writes(client):
    """Small buffer and window, everything written at once: every ack makes room and the
    group reads further from the log, though no new commit comes to trigger a read."""
    stream = f"g-{uuid.uuid4().hex[:8]}"
    client.create_group(stream, "slow", start_from="start", live_buffer_size=5,
                        read_batch_size=3)
    wait_for(lambda: client.list_groups(stream), 5, message="the group")
    client.append(stream, [new_event("Job", {"n": i}) for i in range(30)])
    with client.subscribe_group(stream, "slow", window=2) as sub:
        got = []
        for _ in range(30):
            item = sub.get(5)
            assert item is not None, f"stalled after {len(got)} events"
            sub.ack(item)
            got.append(item.event.json()["n"])
    assert got == list(range(30))
