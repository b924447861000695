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
        b.close()  # posted, not awaited: wait until the node has let b go, or some of the
        # next events could still go to b and come back to a already retried once
        wait_for(lambda: client.group_info(stream, "work").consumers == 1, 10,
                 message="the node to drop the closed consumer")
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
                        history_buffer_size=5, read_batch_size=3)
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


def test_asyncio_consumers_on_all_skip_system_streams(real_node_endpoint, client):
    """An ``$all`` group through the asyncio client: user events only (the group's own
    bookkeeping streams and other ``$`` streams are never delivered), ack and nack."""
    import asyncio

    from esnode.client import connect_async

    tag = uuid.uuid4().hex[:8]
    group = f"all-{tag}"
    client.create_group("$all", group, start_from="end")
    wait_for(lambda: [g for g in client.list_groups("$all") if g.group == group], 5,
             message="the group")

    async def main() -> list:
        async with connect_async(real_node_endpoint) as aclient:
            sub = await aclient.subscribe_group("$all", group, window=10)
            await aclient.append(f"mine-{tag}", [new_event("A"), new_event("B")])
            await aclient.set_metadata(f"mine-{tag}", {"owner": "x"})  # a $$ stream event
            first = await sub.get(5)
            assert first.event.stream == f"mine-{tag}" and first.event.event_type == "A"
            assert await sub.nack(first, action="retry") == (first.position,)
            got = [await sub.get(5), await sub.get(5)]
            assert sorted((g.event.event_type, g.retry_count) for g in got) == [("A", 1),
                                                                               ("B", 0)]
            assert await sub.ack(*got) == tuple(g.position for g in got)
            assert await sub.get(0.5) is None  # nothing from $ streams, acks included
            await sub.close()
            return got

    assert len(asyncio.run(main())) == 2


def test_a_consumer_that_never_acks_does_not_stall_the_others(client, real_node_endpoint):
    stream = f"g-{uuid.uuid4().hex[:8]}"
    client.create_group(stream, "mixed", start_from="start", message_timeout=30.0)
    wait_for(lambda: client.list_groups(stream), 5, message="the group")
    client.append(stream, [new_event("Job", {"n": i}) for i in range(20)])
    with connect(real_node_endpoint) as other:
        lazy = client.subscribe_group(stream, "mixed", window=2)
        busy = other.subscribe_group(stream, "mixed", window=5)
        held = take(lazy, 2)  # never acked
        done = []
        while len(done) < 18:
            item = busy.get(5)
            assert item is not None, f"the busy consumer stalled after {len(done)}"
            busy.ack(item)
            done.append(item.position)
        assert not set(done) & {h.position for h in held}
        info = client.group_info(stream, "mixed")
        assert (info.in_flight, info.consumers) == (2, 2)
        lazy.close()
        assert {busy.get(5).position, busy.get(5).position} == {h.position for h in held}
