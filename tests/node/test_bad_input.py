"""Garbage sent to a live node: each gets a clear error or the peer is dropped, the node keeps
serving everyone else, and nothing is lost."""

from __future__ import annotations

import uuid

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esnode.actors.node import Factories, Node
from esnode.transport.zmq_transport import ZmqTransport
from tests.conftest import single_node_topology, start_leader, wait_for
from tests.node.rawclient import RawClient, event

BAD_FRAMES = {
    "not msgpack": b"\xc1\xc1\xc1garbage",
    "truncated msgpack": msgpack.packb([1, "append", 5, {"stream": "x"}])[:-3],
    "not an array": msgpack.packb({"op": "append"}),
    "wrong arity": msgpack.packb([1, "ping", 5]),
    "unknown op": msgpack.packb([1, "drop_database", 5, {}]),
    "wrong version": msgpack.packb([99, "ping", 5, {}]),
    "corr not int": msgpack.packb([1, "ping", "x", {}]),
    "args not map": msgpack.packb([1, "ping", 5, [1, 2]]),
    "stream wrong type": msgpack.packb([1, "append", 5, {"stream": 7, "events": []}]),
    "events wrong shape": msgpack.packb([1, "append", 5, {"stream": "s", "events": [[1, 2]]}]),
    "data not bytes": msgpack.packb(
        [1, "append", 5, {"stream": "s", "events": [["id", "T", "text", b"", True]]}]),
    "event id not a uuid": msgpack.packb(
        [1, "append", 5, {"stream": "s", "events": [["nope", "T", b"{}", b"", True]]}]),
    "count too big": msgpack.packb([1, "read_all", 5, {"max_count": 10**9}]),
    "append to $all": msgpack.packb(
        [1, "append", 5, {"stream": "$all", "events": [event()]}], use_bin_type=True),
    "deep nesting": b"\x91" * 50_000 + b"\xc0",
    "huge map header": b"\xdf\xff\xff\xff\xff",
}


@pytest.fixture
def node():
    small = Factories().replace(
        transport=lambda topology, cfg: ZmqTransport(cfg.external_bind,
                                                     max_message_size=64 * 1024))
    n = start_leader(Node(single_node_topology(), "node1", small))
    yield n
    n.stop()


@pytest.fixture
def client(node):
    c = RawClient(node.transport.external_endpoint)
    yield c
    c.close()


def assert_serving(client):
    _, kind, body = client.call("append", {"stream": "alive", "events": [event()]})
    assert kind == "ok", body


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
def test_bad_frame_gets_a_clear_error_and_node_keeps_serving(client, name):
    client.send_raw(BAD_FRAMES[name])
    reply = client.recv()
    assert reply[1] == "error", reply
    assert reply[2]["code"] in ("bad_request", "too_large"), reply
    assert reply[2]["message"]
    assert_serving(client)


def test_a_message_of_64_requests_is_served_and_one_of_65_refused_whole(client):
    client.send_raw(*(msgpack.packb([1, "ping", corr, {}]) for corr in range(1, 65)))
    replies = [client.recv() for _ in range(64)]
    assert sorted(r[0] for r in replies) == list(range(1, 65))
    assert all(r[1] == "ok" for r in replies)
    client.send_raw(*(msgpack.packb([1, "ping", corr, {}]) for corr in range(1, 66)))
    reply = client.recv()
    assert reply[:2] == [0, "error"] and "at most 64 requests" in reply[2]["message"]
    client.corr = 1000  # a corr none of the 65 had
    assert client.call("ping")[1] == "ok"  # the next answer: none of the 65 was served


def test_each_frame_of_a_message_is_a_request_and_a_bad_one_fails_alone(client):
    client.send_raw(msgpack.packb([1, "ping", 5, {}]), b"extra",
                    msgpack.packb([1, "read_stream", 6, {"stream": "nowhere"}]))
    replies = sorted((client.recv() for _ in range(3)), key=lambda r: r[0])
    assert [r[:2] for r in replies] == [[0, "error"], [5, "ok"], [6, "error"]], replies
    assert replies[0][2]["code"] == "bad_request"
    assert replies[2][2]["code"] == "stream_not_found"
    assert_serving(client)


def test_oversized_frame_drops_only_that_peer(node, client):
    other = RawClient(node.transport.external_endpoint)
    try:
        before = client.call("append", {"stream": "keep", "events": [event()]})
        other.send_raw(b"\x00" * (256 * 1024))  # over ZMQ_MAXMSGSIZE: libzmq drops the peer
        with pytest.raises(TimeoutError):
            other.recv(timeout=0.3)
        assert_serving(client)
        _, _, body = client.call("read_stream", {"stream": "keep"})
        assert before[1] == "ok" and len(body["events"]) == 1
    finally:
        other.close()


def test_client_that_vanishes_mid_request_loses_nothing(node, client):
    ghost = RawClient(node.transport.external_endpoint)
    ghost.send("append", {"stream": "ghost", "events": [event() for _ in range(3)]})
    ghost.sock.close(linger=5000)  # gone before the reply (linger: the request still leaves)
    wait_for(lambda: client.call("read_stream", {"stream": "ghost"})[1] == "ok",
             message="the ghost's append to be committed")
    _, _, body = client.call("read_stream", {"stream": "ghost"})
    assert len(body["events"]) == 3
    assert_serving(client)


def test_subscriber_that_never_reads_does_not_hurt_others(node, client):
    ctx = zmq.Context.instance()
    lazy = ctx.socket(zmq.DEALER)
    lazy.setsockopt(zmq.RCVHWM, 1)
    lazy.setsockopt(zmq.LINGER, 0)
    lazy.connect(node.transport.external_endpoint)
    try:
        lazy.send(msgpack.packb([1, "subscribe", 1, {"stream": "$all", "credit": 10_000}]))
        for i in range(200):
            _, kind, _ = client.call("append", {"stream": f"busy-{i % 10}",
                                                "events": [event(data=b"x" * 2000)]})
            assert kind == "ok"
        _, _, body = client.call("read_all", {"max_count": 1000})
        assert len(body["events"]) >= 200
    finally:
        lazy.close(linger=0)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(sorted(set(BAD_FRAMES) - {"deep nesting"}) + ["ping", "append"]),
                min_size=1, max_size=64))
def test_any_mix_of_good_and_bad_requests_in_one_message_is_answered_one_by_one(client, kinds):
    """A message of several frames: each good request is carried out and answered under its
    own corr, each bad one gets its own error, and the node keeps serving."""
    frames, good = [], {}
    for i, kind in enumerate(kinds):
        corr = 1000 + i
        if kind == "ping":
            frames.append(msgpack.packb([1, "ping", corr, {}]))
        elif kind == "append":
            frames.append(msgpack.packb([1, "append", corr, {"stream": f"mix-{uuid.uuid4()}",
                                                             "events": [event()]}]))
        else:
            frames.append(BAD_FRAMES[kind])
            continue
        good[corr] = kind
    client.send_raw(*frames)
    replies = [client.recv() for _ in kinds]
    answered = {r[0]: r for r in replies if r[0] in good}
    assert sorted(answered) == sorted(good)
    assert all(r[1] == "ok" for r in answered.values()), answered
    errors = [r for r in replies if r[0] not in good]
    assert len(errors) == len(kinds) - len(good) and all(r[1] == "error" for r in errors)
    assert_serving(client)
