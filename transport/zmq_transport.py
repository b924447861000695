"""ZeroMQ transport: one poller thread owns every socket of the node.

The thread polls the external ROUTER and a wake-up pipe. Incoming frames are decoded here (so
actors get typed messages) and handed over in batches: one ``tell`` per drained burst, not per
request, which keeps the append path to few thread hops. Replies from any thread go into a
deque and the pipe wakes the poller, which encodes and sends them.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

import zmq
from esnode.core.forwarding import claimed_sender
from esnode.core.messages import ClientEnvelope, ErrorReply
from esnode.core.types import BadRequest
from esnode.transport.codec import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DecodeError,
    decode_request,
    encode_reply,
)
from esnode.transport.internal_codec import InternalCodec
from esnode.transport.port import ClientHandler, NodeHandler, PeerGoneHandler

log = logging.getLogger("esnode.transport")

MAX_BURST = 1024
"""Most requests decoded before handing a batch to the gateway."""

SEND_HWM = 100_000
"""Per-peer queued outgoing messages; subscriptions are bounded by credit well below it."""

SEED_MESSAGES = ("Gossip",)
"""What a node sends to a seed whose name it does not know yet."""

PEER_HWM = 10_000
"""Queued messages to one cluster peer before new ones are dropped (and retried above)."""


class Waker:
    """A self-pipe that lets any thread wake a zmq poller; at most one byte is pending."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._pending = False

    def wake(self) -> None:
        if not self._pending:
            self._pending = True
            try:
                os.write(self._write_fd, b"w")
            except BlockingIOError:
                pass

    def clear(self) -> None:
        try:
            os.read(self.read_fd, 4096)
        except BlockingIOError:
            pass
        self._pending = False

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self._write_fd)


class ZmqTransport:
    """External ROUTER for clients; optionally an internal ROUTER (cluster traffic in) and one
    DEALER per peer node (cluster traffic out, identified by this node's name)."""

    def __init__(self, external_bind: tuple[str, int],
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 context: zmq.Context | None = None,
                 internal_bind: tuple[str, int] | None = None,
                 node_name: str = "",
                 peers: dict[str, tuple[str, int]] | None = None,
                 internal_codec: InternalCodec | None = None,
                 members: Iterable[str] = (),
                 seeds: Iterable[tuple[str, int]] = ()) -> None:
        self._bind = external_bind
        self._max_message_size = max_message_size
        self._ctx = context or zmq.Context.instance()
        self._internal_bind = internal_bind
        self._node_name = node_name
        self._peers = dict(peers or {})
        self._members = set(members) | set(self._peers)
        self._members.discard(node_name)
        self._new_seeds: collections.deque = collections.deque(seeds)
        self._internal_codec = internal_codec
        self._node_outbox: collections.deque = collections.deque()
        self._outbox: collections.deque = collections.deque()
        self._waker = Waker()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._endpoint = ""
        self._paused = False
        self._dealers: dict[str, zmq.Socket] = {}
        self._router_peers: set[str] = set()

    @property
    def external_endpoint(self) -> str:
        return self._endpoint

    def start(self, on_client: ClientHandler, on_peer_gone: PeerGoneHandler,
              on_node: NodeHandler | None = None) -> None:
        self._on_client, self._on_peer_gone, self._on_node = on_client, on_peer_gone, on_node
        self._thread = threading.Thread(target=self._run, name="transport", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def send_client(self, replies: Iterable[tuple[bytes, int, Any]]) -> None:
        self._outbox.extend(replies)
        self._waker.wake()

    def add_seeds(self, endpoints: Iterable[tuple[str, int]]) -> None:
        """Gossip seeds (internal endpoints of nodes whose names are not known yet, e.g. from
        DNS); thread-safe. Already known endpoints are ignored."""
        self._new_seeds.extend(endpoints)
        self._waker.wake()

    def pause_receiving(self) -> None:
        """Stop reading client requests (shutdown): what was read gets answered, what was not
        stays unread and its clients time out, knowing it never ran."""
        self._paused = True
        self._waker.wake()

    def send_node(self, messages: Iterable[tuple[str, Any]]) -> None:
        """Queue ``(peer_name, cluster_message)``; thread-safe. Messages to an unreachable
        peer are dropped: cluster protocols carry their own acks and retries."""
        self._node_outbox.extend(messages)
        self._waker.wake()

    def stop(self) -> None:
        self._stopping.set()
        self._waker.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._waker.close()

    # --- the poller thread ---------------------------------------------------------------
    def _router(self, bind: tuple[str, int], which: str) -> zmq.Socket:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        if which == "internal":
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted peer takes its name back
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message_size)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        sock.setsockopt(zmq.RCVHWM, SEND_HWM)
        host, port = bind
        try:
            sock.bind(f"tcp://{host}:{port}")
        except zmq.ZMQError as exc:
            sock.close()
            raise OSError(f"cannot bind the {which} endpoint {host}:{port}: {exc}") from None
        return sock

    def _dealer(self, host: str, port: int) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, self._node_name.encode())
        sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue for a peer that is not connected
        sock.setsockopt(zmq.SNDHWM, PEER_HWM)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.connect(f"tcp://{host}:{port}")
        return sock

    def _run(self) -> None:
        sockets: list[zmq.Socket] = []
        try:
            sock = self._router(self._bind, "external")
            sockets.append(sock)
            self._endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            internal = None
            if self._internal_bind is not None:
                internal = self._router(self._internal_bind, "internal")
                sockets.append(internal)
                self.internal_endpoint = internal.getsockopt_string(zmq.LAST_ENDPOINT)
            self._dealers = {name: self._dealer(*addr) for name, addr in self._peers.items()}
            sockets.extend(self._dealers.values())
        except BaseException as exc:  # reported to start()'s caller
            for s in sockets:
                s.close(linger=0)
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._internal = internal
        self._seed_dealers: dict[zmq.Socket, tuple[str, int]] = {}
        poller = self._poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        if internal is not None:
            poller.register(internal, zmq.POLLIN)
        poller.register(self._waker.read_fd, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                if self._paused and sock in poller:
                    poller.unregister(sock)
                if self._new_seeds:
                    self._connect_seeds()
                events = dict(poller.poll())
                if sock in events:
                    self._receive(sock)
                if internal is not None and internal in events:
                    self._receive_internal(internal)
                for dealer in [d for d in self._seed_dealers if d in events]:
                    self._receive_seed(dealer)
                if self._waker.read_fd in events:
                    self._waker.clear()
                self._flush(sock)
                self._flush_nodes()
            self._flush(sock)
            self._flush_nodes()
        except Exception:
            log.exception("transport thread failed")
            raise
        finally:
            for s in [*sockets, *self._seed_dealers]:
                s.close(linger=0)

    def _receive(self, sock: zmq.Socket) -> None:
        batch: list[ClientEnvelope] = []
        errors: list[tuple[bytes, int, Any]] = []
        max_size = self._max_message_size
        for _ in range(MAX_BURST):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            peer = frames[0]
            if len(frames) != 2:
                errors.append((peer, 0, ErrorReply(DecodeError(
                    f"a request is exactly one frame, got {len(frames) - 1}"))))
                continue
            try:
                corr, request = decode_request(frames[1], max_size)
            except DecodeError as exc:
                errors.append((peer, exc.corr or 0, ErrorReply(exc)))
                continue
            batch.append(ClientEnvelope(peer, corr, request))
        if errors:
            self._outbox.extend(errors)
        if batch:
            self._on_client(batch)

    def _flush(self, sock: zmq.Socket) -> None:
        outbox = self._outbox
        while outbox:
            peer, corr, message = outbox.popleft()
            if type(message) is ErrorReply:
                log.info("client %s request %d: %s: %s", peer.hex(), corr,
                         message.error.code, message.error)
            try:
                sock.send_multipart((peer, encode_reply(corr, message)), zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                if exc.errno in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                    # The client vanished or stopped reading: drop the reply, keep serving.
                    self._on_peer_gone(peer)
                else:
                    raise

    def _receive_internal(self, sock: zmq.Socket) -> None:
        batch: list[tuple[str, Any]] = []
        for _ in range(MAX_BURST):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            peer = frames[0]
            sender = peer.decode(errors="replace")
            try:
                if len(frames) != 2 or self._internal_codec is None:
                    raise BadRequest("a cluster message is exactly one frame")
                message = self._internal_codec.decode(frames[1])
                if sender not in self._members:
                    raise BadRequest(f"unknown cluster member {sender!r}")
                self._router_peers.add(sender)
                batch.append((sender, message))
            except BadRequest as exc:
                # Refuse clearly (in the client protocol's error shape, which is what a
                # misdirected client understands) and carry on.
                log.warning("refused a message on the internal endpoint from %r: %s",
                            sender, exc)
                try:
                    sock.send_multipart((peer, encode_reply(0, ErrorReply(exc))), zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
        if batch and self._on_node is not None:
            self._on_node(batch)

    # --- gossip seeds: endpoints whose node names we learn from their first message --------
    def _connect_seeds(self) -> None:
        known = set(self._seed_dealers.values()) | set(self._peers.values())
        while self._new_seeds:
            endpoint = tuple(self._new_seeds.popleft())
            if endpoint in known or endpoint == self._internal_bind:
                continue
            known.add(endpoint)
            dealer = self._dealer(*endpoint)
            self._seed_dealers[dealer] = endpoint
            self._poller.register(dealer, zmq.POLLIN)
            log.info("gossip seed %s:%d", *endpoint)

    def _receive_seed(self, dealer: zmq.Socket) -> None:
        """A node answered on a seed connection (through its ROUTER): the message names its
        sender, which tells us who is at that endpoint."""
        batch: list[tuple[str, Any]] = []
        for _ in range(MAX_BURST):
            try:
                frame = dealer.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                message = self._internal_codec.decode(frame)
            except BadRequest as exc:
                log.warning("bad message from seed %s:%d: %s", *self._seed_dealers[dealer], exc)
                continue
            sender = claimed_sender(message)
            if sender not in self._members:
                continue
            if sender not in self._dealers:
                self._dealers[sender] = dealer
                self._peers[sender] = self._seed_dealers[dealer]
                log.info("cluster member %s is at %s:%d", sender, *self._peers[sender])
            batch.append((sender, message))
        if batch and self._on_node is not None:
            self._on_node(batch)

    def _flush_nodes(self) -> None:
        outbox = self._node_outbox
        codec = self._internal_codec
        while outbox:
            name, message = outbox.popleft()
            if codec is None:
                continue
            frame = codec.encode(message)
            dealer = self._dealers.get(name)
            try:
                if dealer is not None:
                    dealer.send(frame, zmq.NOBLOCK)
                elif name in self._router_peers:
                    # It reached us through our ROUTER: answer on that connection.
                    self._internal.send_multipart((name.encode(), frame), zmq.NOBLOCK)
                elif type(message).__name__ in SEED_MESSAGES:
                    # Unknown address yet: introduce ourselves to every unidentified seed.
                    named = set(map(id, self._dealers.values()))
                    for seed in self._seed_dealers:
                        if id(seed) not in named:
                            seed.send(frame, zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                if exc.errno not in (zmq.EAGAIN, zmq.EHOSTUNREACH):
                    raise
                # peer down or too far behind: the protocol above retries
