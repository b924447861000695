"""The threaded client end to end over real ZeroMQ sockets: against the fake node and, once
its storage exists, against a real in-process node (``endpoint`` fixture)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from esnode.client import (
    NO_STREAM,
    ClientClosed,
    NotReady,
    OperationTimeout,
    OutcomeUnknown,
    StreamDeleted,
    StreamNotFound,
    Unavailable,
    WriteTimeout,
    WrongExpectedVersion,
    connect,
    new_event,
)
from tests.client.conftest import client_threads
from tests.conftest import free_port, wait_for


def unique(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(endpoint):
    with connect(endpoint, timeout=5) as c:
        yield c


def test_append_then_read_forwards_backwards_and_paged(client):
    stream = unique()
    events = [new_event("OrderPlaced", {"n": i}) for i in range(7)]
    result = client.append(stream, events[:3], NO_STREAM)
    assert (result.first_version, result.last_version, result.idempotent) == (0, 2, False)
    assert client.append(stream, events[3:], 2).last_version == 6
    page = client.read_stream(stream, 0, 4)
    assert [e.version for e in page.events] == [0, 1, 2, 3] and not page.is_end
    assert page.events[0].event_id == events[0].event_id and page.events[0].data == b'{"n":0}'
    assert [e.version for e in client.read_stream(stream, -1, 2, backwards=True).events] == [6, 5]
    assert [e.version for e in client.iter_stream(stream, page_size=3)] == list(range(7))
    assert [e.version for e in client.iter_stream(stream, -1, backwards=True, limit=3)] == \
        [6, 5, 4]


def test_read_all_sees_appends_in_log_order(client):
    stream = unique()
    client.append(stream, [new_event("A"), new_event("B")])
    mine = [e for e in client.iter_all(page_size=7) if e.stream == stream]
    assert [e.event_type for e in mine] == ["A", "B"] and mine[0].position < mine[1].position
    last = client.read_all(-1, 1, backwards=True).events[0]
    assert (last.stream, last.event_type) == (stream, "B")


def test_errors_are_typed(client):
    stream = unique()
    with pytest.raises(StreamNotFound):
        client.read_stream(stream)
    client.append(stream, new_event("A"))
    with pytest.raises(WrongExpectedVersion) as info:
        client.append(stream, new_event("B"), NO_STREAM)
    assert info.value.current == 0
    client.delete(stream, tombstone=True)
    with pytest.raises(StreamDeleted):
        client.append(stream, new_event("C"))


def test_metadata_round_trip(client):
    stream = unique()
    assert client.get_metadata(stream).version == -1
    custom = {"owner": "billing", "tags": ["a", ["b"]], "acl": {"$r": ["ops"]}}
    client.set_metadata(stream, {"$maxCount": 5, **custom})
    meta = client.get_metadata(stream)
    assert meta.raw == {"$maxCount": 5, **custom} and meta.max_count == 5
    # replies are unpacked with arrays as tuples; the user's own arrays come back as lists
    assert type(meta.raw["tags"]) is list and type(meta.raw["tags"][1]) is list
    assert type(meta.raw["acl"]["$r"]) is list


def test_cluster_info_and_ping(client):
    info = client.cluster_info()
    assert info.leader and info.node in [m.name for m in info.members]
    assert all(m.alive for m in info.members)
    assert client.ping().state == "Leader"


def test_subscription_catches_up_then_goes_live_with_small_credit(client):
    stream = unique()
    client.append(stream, [new_event("H", {"i": i}) for i in range(25)])
    caught_up = threading.Event()
    with client.subscribe(stream, window=4, on_caught_up=lambda p: caught_up.set()) as sub:
        history = [sub.get(5) for _ in range(25)]
        assert [e.version for e in history] == list(range(25))
        assert sub.get(0.05) is None  # drains the caught-up marker, no event
        assert sub.caught_up and caught_up.is_set()
        client.append(stream, [new_event("L", {"i": i}) for i in range(10)])
        live = [sub.get(5) for _ in range(10)]
        assert [e.version for e in live] == list(range(25, 35))
        assert sub.last_event.version == 34


def test_subscription_from_a_version_and_from_the_end(client):
    stream = unique()
    client.append(stream, [new_event("A"), new_event("B"), new_event("C")])
    with client.subscribe(stream, 1) as sub:
        assert sub.get(5).version == 2
    with client.subscribe(stream, "end") as sub:
        client.append(stream, new_event("D"))
        assert sub.get(5).event_type == "D"


def test_subscription_ends_on_close_and_is_dropped_by_tombstone(client):
    stream = unique()
    client.append(stream, new_event("A"))
    sub = client.subscribe(stream)
    assert next(sub).version == 0 and client.subscriptions == [sub] and not sub.ended
    sub.close()
    assert list(sub) == [] and sub.ended and client.subscriptions == []
    sub = client.subscribe(stream)
    assert next(sub).version == 0
    client.delete(stream, tombstone=True)
    with pytest.raises(StreamDeleted):
        sub.get(5)


def test_many_threads_pipeline_on_one_connection(client):
    stream = unique()
    errors = []

    def writer(k: int) -> None:
        try:
            for i in range(20):
                client.append(f"{stream}-{k}", new_event("T", {"i": i}))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert all(client.read_stream(f"{stream}-{k}").last_version == 19 for k in range(16))


# --- behaviour only the fake node can provoke ----------------------------------------------------
def test_a_silent_node_makes_writes_unknown_and_reads_time_out(fake):
    fake.silent |= {"append", "read_stream"}
    with connect(fake.endpoint) as c:
        with pytest.raises(WriteTimeout) as info:
            c.append("s", new_event("T"), timeout=0.1)
        assert isinstance(info.value, OutcomeUnknown) and "may or may not" in str(info.value)
        with pytest.raises(OperationTimeout):
            c.read_stream("s", timeout=0.1)
        fake.silent.clear()
        assert c.append("s", new_event("T")).last_version == 0  # the connection still works


def test_not_ready_is_retried_with_the_same_event_ids(fake):
    fake.errors["append"] += [NotReady("electing"), NotReady("electing")]
    with connect(fake.endpoint, max_retries=2, retry_delay=0.01) as c:
        event = new_event("T")
        assert c.append("s", event).last_version == 0
    appends = [r for r in fake.requests if type(r).__name__ == "Append"]
    assert len(appends) == 3 and {r.events[0].event_id for r in appends} == {event.event_id}


def test_refusals_are_retried_until_the_operation_deadline(fake):
    with connect(fake.endpoint, max_retries=1, retry_delay=0) as c:
        fake.errors["ping"][:] = [NotReady("x")] * 5
        assert c.ping().node  # five refusals in a row, well within the timeout
        fake.errors["ping"][:] = [NotReady("x")] * 10_000
        started = time.monotonic()
        with pytest.raises(NotReady):
            c.ping(timeout=0.5)
        assert 0.5 <= time.monotonic() - started < 2.0


def test_close_fails_what_is_in_flight_and_leaves_no_thread(fake):
    fake.silent.add("append")
    c = connect(fake.endpoint)
    outcome = []
    t = threading.Thread(target=lambda: outcome.append(_try(c.append, "s", new_event("T"))))
    t.start()
    wait_for(lambda: fake.requests and type(fake.requests[-1]).__name__ == "Append",
             message="the append to reach the node")
    c.close()
    t.join(10)
    assert isinstance(outcome[0], OutcomeUnknown)
    assert not client_threads()
    with pytest.raises(ClientClosed):
        c.ping()
    c.close()  # idempotent


def test_no_reachable_node_raises_unavailable_naming_what_was_tried():
    port = free_port()
    with pytest.raises(Unavailable) as info:
        connect(f"esnode://127.0.0.1:{port}?maxDiscoverAttempts=2&gossipTimeout=100"
                "&discoveryInterval=10")
    assert f"127.0.0.1:{port}" in str(info.value) and "2 attempt(s)" in str(info.value)


def test_several_hosts_connect_to_the_first_that_answers(fake):
    dead = free_port()
    host_port = fake.endpoint.removeprefix("tcp://")
    with connect(f"esnode://127.0.0.1:{dead},{host_port}?gossipTimeout=200") as c:
        assert c.endpoint == fake.endpoint and c.ping().node == "fake"


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        return exc
