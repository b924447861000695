"""The ZeroMQ transport: internal and external networks are segregated, cluster messages
round-trip between nodes, and misdirected traffic is refused clearly without harm."""

from __future__ import annotations

import queue
from dataclasses import dataclass

import msgpack
import pytest

from esnode.core.cluster_messages import PeerDisconnected
from esnode.core.types import Epoch
from esnode.transport.internal_codec import InternalCodec
from esnode.transport.zmq_transport import ZmqTransport
from tests.conftest import free_port
from tests.node.rawclient import RawClient


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    term: int
    epochs: tuple[Epoch, ...]
    note: str | None = None


CODEC = InternalCodec([Hello])


@pytest.fixture
def pair():
    ports = {n: (free_port(), free_port()) for n in ("a", "b")}
    inboxes = {n: queue.Queue() for n in ports}
    transports = {}
    for name, (ext, internal) in ports.items():
        peers = {p: ("127.0.0.1", ports[p][1]) for p in ports if p != name}
        t = ZmqTransport(("127.0.0.1", ext), internal_bind=("127.0.0.1", internal),
                         node_name=name, peers=peers, internal_codec=CODEC)
        t.start(lambda batch: None, lambda peer: None,
                on_node=lambda batch, q=inboxes[name]: [q.put(m) for m in batch])
        transports[name] = t
    yield transports, inboxes, ports
    for t in transports.values():
        t.stop()


def test_cluster_message_round_trips_with_nested_types(pair):
    transports, inboxes, _ = pair
    msg = Hello(term=3, epochs=(Epoch(1, 0, "a"), Epoch(3, 17, "b")), note=None)
    # IMMEDIATE drops messages until the connection is up: resend until one arrives.
    while True:
        transports["a"].send_node([("b", msg)])
        try:
            sender, got = inboxes["b"].get(timeout=0.1)
            break
        except queue.Empty:
            continue
    assert sender == "a" and got == msg and isinstance(got.epochs[1], Epoch)


def test_a_peer_that_goes_away_is_reported_as_disconnected(pair):
    """The socket monitor's hint: the DEALER's connection to a stopped peer closes."""
    transports, inboxes, _ = pair
    while True:  # the connection a -> b is up once a message got through
        transports["a"].send_node([("b", Hello(term=1, epochs=()))])
        try:
            inboxes["b"].get(timeout=0.1)
            break
        except queue.Empty:
            continue
    transports.pop("b").stop()
    while True:  # no hint within 10 s: queue.Empty fails the test
        sender, got = inboxes["a"].get(timeout=10)
        if type(got) is PeerDisconnected:
            break
    assert sender == "b" and got == PeerDisconnected("b")


def test_client_frame_on_internal_endpoint_is_refused(pair):
    _, inboxes, ports = pair
    c = RawClient(f"tcp://127.0.0.1:{ports['b'][1]}")
    try:
        c.send("ping")
        reply = c.recv()
        assert reply[1] == "error" and "internal endpoint accepts only cluster" in reply[2]["message"]
        assert inboxes["b"].empty()
    finally:
        c.close()


def test_cluster_frame_on_external_endpoint_is_refused(pair):
    _, inboxes, ports = pair
    c = RawClient(f"tcp://127.0.0.1:{ports['b'][0]}")
    try:
        c.send_raw(CODEC.encode(Hello(term=1, epochs=())))
        reply = c.recv()
        assert reply[1] == "error" and reply[2]["code"] == "bad_request"
        assert "cluster message" in reply[2]["message"]
        assert "internal endpoint" in reply[2]["message"]
        assert inboxes["b"].empty()
    finally:
        c.close()


def test_bad_cluster_frames_are_refused():
    bad = [msgpack.packb(["esnode-cluster", 1, "Nope", []]),
           msgpack.packb(["esnode-cluster", 1, "Hello", [1]]),
           msgpack.packb(["esnode-cluster", 2, "Hello", [1, [], None]]),
           msgpack.packb(["esnode-cluster", 1, "Hello", [1, [[1, 2]], None]]),
           b"\xc1"]
    from esnode.core.types import BadRequest

    for frame in bad:
        with pytest.raises(BadRequest):
            CODEC.decode(frame)


def test_bind_conflict_is_a_clear_error():
    port = free_port()
    first = ZmqTransport(("127.0.0.1", port))
    first.start(lambda b: None, lambda p: None)
    try:
        second = ZmqTransport(("127.0.0.1", port))
        with pytest.raises(OSError, match="cannot bind the external endpoint"):
            second.start(lambda b: None, lambda p: None)
        second.stop()
    finally:
        first.stop()
