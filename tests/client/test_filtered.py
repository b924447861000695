"""Server-side filters and the friendlier subscription API against a real in-process node:
filtered ``$all`` reads and subscriptions (with checkpoints when nothing matches), resume
points, JSON and datetime accessors, ``async with connect_async(...)``."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest

from esnode.client import BadRequest, EventFilter, connect, connect_async, new_event


@pytest.fixture
def client(real_node_endpoint):
    with connect(real_node_endpoint, timeout=5) as c:
        yield c


def test_filtered_all_reads_bring_only_the_category(client):
    tag = uuid.uuid4().hex[:8]
    for i in range(30):
        client.append(f"noise{tag}-{i}", new_event("Noise"))
        if i % 10 == 0:
            client.append(f"order{tag}-{i}", new_event("OrderPlaced", {"i": i}))
    orders = EventFilter(stream_prefixes=(f"order{tag}-",))
    got = list(client.iter_all(filter=orders, page_size=2))
    assert [e.json()["i"] for e in got] == [0, 10, 20]
    page = client.read_all(0, 1, filter=EventFilter(type_regex="^OrderPlaced$",
                                                    stream_regex=tag))
    assert len(page.events) == 1 and page.next_position == page.events[0].position + 1
    system = list(client.iter_all(filter=EventFilter(type_prefixes=("$",), include_system=True)))
    assert all(e.event_type.startswith("$") for e in system)
    with pytest.raises(BadRequest, match="regular expression"):  # the node checks too
        client._op(_bad_regex_call(), None)


def _bad_regex_call():
    from esnode.client import _core as core

    call = core.read_all()
    call.args["filter"] = {"stream_regex": "("}
    return call


def test_a_filtered_subscription_checkpoints_while_nothing_matches_and_resumes_after(client):
    tag = uuid.uuid4().hex[:8]
    checkpoints: list[int] = []
    wanted = EventFilter(stream_prefixes=(f"want{tag}",))
    with client.subscribe("$all", "end", filter=wanted, checkpoint_interval=5,
                          on_checkpoint=checkpoints.append) as sub:
        for i in range(12):
            client.append(f"skip{tag}", new_event("Skipped"))
        assert sub.get(0.3) is None  # nothing matches ...
        assert len(checkpoints) >= 2 and sub.checkpoint == checkpoints[-1]  # ... yet it moves
        client.append(f"want{tag}", new_event("Wanted", {"n": 1}))
        event = sub.get(5)
        assert event.stream == f"want{tag}" and sub.checkpoint >= event.position
    with client.subscribe(f"want{tag}") as sub:
        first = sub.get(5)
        assert sub.checkpoint == first.version == 0 and sub.last_event == first
        assert sub.resubscriptions == 0


def test_a_filter_on_a_stream_subscription_is_refused(client):
    with pytest.raises(BadRequest, match="'\\$all' subscriptions only"):
        client.subscribe("s", filter=EventFilter(type_prefixes=("A",)))


def test_event_accessors_and_async_with(real_node_endpoint, client):
    stream = f"acc-{uuid.uuid4().hex[:8]}"
    before = dt.datetime.now(dt.timezone.utc)
    client.append(stream, new_event("Made", {"total": 12}))
    [event] = client.read_stream(stream).events
    assert event.json() == {"total": 12}
    assert abs((event.created_at - before).total_seconds()) < 60
    assert event.created_at.tzinfo is dt.timezone.utc

    async def main():
        async with connect_async(real_node_endpoint) as aclient:
            got = [e async for e in aclient.iter_all(
                filter=EventFilter(stream_prefixes=(stream,)))]
            assert [e.event_id for e in got] == [event.event_id]
        assert aclient._closed
        c = await connect_async(real_node_endpoint)  # the awaitable form still works
        await c.close()

    asyncio.run(main())
