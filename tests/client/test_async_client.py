"""The asyncio client end to end (same protocol core as the threaded one). Each test runs
its own event loop with ``asyncio.run``."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from esnode.client import (
    NO_STREAM,
    ClientClosed,
    OperationTimeout,
    StreamNotFound,
    WriteTimeout,
    WrongExpectedVersion,
    connect_async,
    new_event,
)
from esnode.transport.codec import MAX_FRAMES_PER_MESSAGE


def unique() -> str:
    return f"a-{uuid.uuid4().hex[:8]}"


def test_operations(endpoint):
    async def main():
        stream = unique()
        async with await connect_async(endpoint, timeout=5) as c:
            assert (await c.ping()).state == "Leader"
            result = await c.append(stream, [new_event("A", {"x": 1}), new_event("B")],
                                    NO_STREAM)
            assert result.last_version == 1
            with pytest.raises(WrongExpectedVersion):
                await c.append(stream, new_event("C"), NO_STREAM)
            with pytest.raises(StreamNotFound):
                await c.read_stream(unique())
            assert [e.event_type async for e in c.iter_stream(stream, page_size=1)] == ["A", "B"]
            assert [e.stream async for e in c.iter_all(-1, backwards=True, limit=1)] == [stream]
            await c.set_metadata(stream, {"$maxCount": 9})
            assert (await c.get_metadata(stream)).max_count == 9
            assert (await c.cluster_info()).leader
            await c.delete(stream)

    asyncio.run(main())


def test_concurrent_appends_are_pipelined(endpoint):
    async def main():
        stream = unique()
        async with await connect_async(endpoint) as c:
            async def writer(k):
                for i in range(20):
                    await c.append(f"{stream}-{k}", new_event("T", {"i": i}))

            await asyncio.gather(*(writer(k) for k in range(32)))
            assert [(await c.read_stream(f"{stream}-{k}")).last_version
                    for k in range(32)] == [19] * 32

    asyncio.run(main())


def test_requests_of_one_turn_of_the_loop_go_out_together(fake):
    """Requests started in the same turn of the event loop leave as one message of a frame
    each (at most ``MAX_FRAMES_PER_MESSAGE``), and every one is answered."""
    async def main():
        async with await connect_async(fake.endpoint, timeout=10) as c:
            before = len(fake.message_sizes)
            results = await asyncio.gather(*(c.append(f"s-{k}", new_event("T"), NO_STREAM)
                                             for k in range(100)))
            assert [r.last_version for r in results] == [0] * 100
            return fake.message_sizes[before:]

    sizes = asyncio.run(main())
    assert sizes == [MAX_FRAMES_PER_MESSAGE, 100 - MAX_FRAMES_PER_MESSAGE]


def test_subscription_catches_up_and_goes_live(endpoint):
    async def main():
        stream = unique()
        async with await connect_async(endpoint) as c:
            await c.append(stream, [new_event("H") for _ in range(12)])
            positions = []
            sub = await c.subscribe(stream, window=3, on_caught_up=positions.append)
            got = [(await sub.get(5)).version for _ in range(12)]
            assert got == list(range(12))
            assert await sub.get(0.05) is None and sub.caught_up and len(positions) == 1
            await c.append(stream, new_event("L"))
            assert (await sub.get(5)).event_type == "L"
            assert c.subscriptions == [sub]
            await sub.close()
            assert [e async for e in sub] == [] and c.subscriptions == []

    asyncio.run(main())


def test_timeouts_cancellation_and_close(fake):
    fake.silent |= {"append", "read_all"}

    async def main():
        c = await connect_async(fake.endpoint)
        with pytest.raises(WriteTimeout):
            await c.append("s", new_event("T"), timeout=0.1)
        with pytest.raises(OperationTimeout):
            await c.read_all(timeout=0.1)
        task = asyncio.create_task(c.read_all(timeout=30))
        await asyncio.sleep(0)  # let it send
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(c._core) == 0  # the cancelled request was forgotten
        pending = asyncio.create_task(c.append("s", new_event("T"), timeout=30))
        while not len(c._core):
            await asyncio.sleep(0)
        await c.close()
        with pytest.raises(WriteTimeout):  # an outcome-unknown write, not a hang
            await pending
        with pytest.raises(ClientClosed):
            await c.ping()

    asyncio.run(main())
