"""The ZeroMQ transport: internal and external networks are segregated, cluster messages
round-trip between nodes, and misdirected traffic is refused clearly without harm."""

from __future__ import annotations

import contextlib
import queue
import time
from dataclasses import dataclass

import msgpack
import pytest

from esnode.core.cluster_messages import PeerDisconnected
from esnode.core.messages import Reply
from esnode.core.types import Epoch
from esnode.transport.internal_codec import InternalCodec
from esnode.transport.codec import MAX_FRAMES_PER_MESSAGE
from esnode.transport.zmq_transport import ZmqTransport
from tests.conftest import free_port
from tests.node.rawclient import RawClient


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    term: int
    epochs: tuple[Epoch, ...]
    note: str | None = None


CODEC = InternalCodec([Hello])


@contextlib.contextmanager
def started_pair():
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
    try:
        yield transports, inboxes, ports
    finally:
        for t in transports.values():
            t.stop()


@pytest.fixture
def pair():
    with started_pair() as started:
        yield started


def send_until_received(transports, inboxes, msg, timeout: float = 10.0) -> tuple:
    """IMMEDIATE drops messages until the connection a -> b is up: resend until one
    arrives, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        transports["a"].send_node([("b", msg)])
        try:
            return inboxes["b"].get(timeout=0.1)
        except queue.Empty:
            continue
    raise AssertionError(f"no message from a reached b within {timeout}s")


def test_cluster_message_round_trips_with_nested_types(pair):
    transports, inboxes, _ = pair
    msg = Hello(term=3, epochs=(Epoch(1, 0, "a"), Epoch(3, 17, "b")), note=None)
    sender, got = send_until_received(transports, inboxes, msg)
    assert sender == "a" and got == msg and isinstance(got.epochs[1], Epoch)


def test_transports_started_and_stopped_one_after_another_all_connect():
    """Regression: sockets closed while their monitors ran were never reaped by the shared
    context, and a few transports later no new connection came up (seen late in long test
    runs as nodes that never answered)."""
    for _ in range(30):
        with started_pair() as (transports, inboxes, _):
            send_until_received(transports, inboxes, Hello(term=1, epochs=()), timeout=5)


def test_a_peer_that_goes_away_is_reported_as_disconnected(pair):
    """The socket monitor's hint: the DEALER's connection to a stopped peer closes."""
    transports, inboxes, _ = pair
    send_until_received(transports, inboxes, Hello(term=1, epochs=()))
    transports.pop("b").stop()
    deadline = time.monotonic() + 10
    while True:  # no hint within 10 s: queue.Empty fails the test
        sender, got = inboxes["a"].get(timeout=max(0.0, deadline - time.monotonic()))
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


def test_messages_to_a_peer_go_out_on_the_senders_thread_in_order(pair):
    """A message to a topology peer is sent on the caller's thread (the poller is not woken
    for it); with several threads sending, and some messages queued for the poller (an
    unknown name queues everything after it), each thread's messages arrive in its order."""
    import threading

    transports, inboxes, _ = pair
    send_until_received(transports, inboxes, Hello(term=1, epochs=()))
    while not inboxes["b"].empty():  # earlier tries that also arrived
        inboxes["b"].get_nowait()
    a = transports["a"]
    wakes = []
    real_wake = a._waker.wake
    a._waker.wake = lambda: (wakes.append(1), real_wake())
    a.send_node([("b", Hello(term=2, epochs=(), note="direct"))])
    assert inboxes["b"].get(timeout=10)[1].note == "direct"
    assert wakes == []  # sent on this thread, not handed to the poller

    senders, count = 4, 200

    def send(k: int) -> None:
        for i in range(count):
            batch = [("b", Hello(term=k + 1, epochs=(), note=str(i)))]
            if i % 17 == 0:
                batch.insert(0, ("nobody", Hello(term=k + 1, epochs=())))
            a.send_node(batch)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got: dict[int, list[int]] = {k + 1: [] for k in range(senders)}
    for _ in range(senders * count):
        sender, msg = inboxes["b"].get(timeout=10)
        got[msg.term].append(int(msg.note))
    assert all(seq == list(range(count)) for seq in got.values())
    assert wakes  # the messages behind a queued one went through the poller


def test_replies_queued_together_for_a_connection_go_out_as_one_message_in_order():
    """Answers handed over together for one client connection leave as one message, a frame
    per answer, in the order given (the clients read frame by frame); more than
    ``MAX_FRAMES_PER_MESSAGE`` are split, and each connection gets only its own answers."""
    got: queue.Queue = queue.Queue()
    port = free_port()
    t = ZmqTransport(("127.0.0.1", port))
    t.start(lambda batch: [got.put(e) for e in batch], lambda peer: None)
    clients = []
    try:
        clients += [RawClient(f"tcp://127.0.0.1:{port}") for _ in range(2)]
        count = MAX_FRAMES_PER_MESSAGE + 6
        for c in clients:
            for _ in range(count):
                c.send("ping")
        envelopes = [got.get(timeout=10) for _ in range(2 * count)]
        t.send_client([(e.peer, e.corr, Reply({"n": e.corr})) for e in envelopes])
        for c in clients:
            messages = []
            while sum(len(m) for m in messages) < count:
                assert c.sock.poll(10_000), "the answers did not arrive"
                messages.append(c.sock.recv_multipart())
            assert [len(m) for m in messages] == [MAX_FRAMES_PER_MESSAGE, count - MAX_FRAMES_PER_MESSAGE]
            replies = [msgpack.unpackb(f) for m in messages for f in m]
            assert replies == [[n, "ok", {"n": n}] for n in range(1, count + 1)]
    finally:
        for c in clients:
            c.close()
        t.stop()
