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

from esnode.core.messages import ClientEnvelope, ErrorReply
from esnode.transport.codec import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DecodeError,
    decode_request,
    encode_reply,
)
from esnode.transport.port import ClientHandler, PeerGoneHandler

log = logging.getLogger("esnode.transport")

MAX_BURST = 1024
"""Most requests decoded before handing a batch to the gateway."""

SEND_HWM = 100_000
"""Per-peer queued outgoing messages; subscriptions are bounded by credit well below it."""


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
    def __init__(self, external_bind: tuple[str, int],
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 context: zmq.Context | None = None) -> None:
        self._bind = external_bind
        self._max_message_size = max_message_size
        self._ctx = context or zmq.Context.instance()
        self._outbox: collections.deque = collections.deque()
        self._waker = Waker()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._endpoint = ""

    @property
    def external_endpoint(self) -> str:
        return self._endpoint

    def start(self, on_client: ClientHandler, on_peer_gone: PeerGoneHandler) -> None:
        self._on_client, self._on_peer_gone = on_client, on_peer_gone
        self._thread = threading.Thread(target=self._run, name="transport", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def send_client(self, replies: Iterable[tuple[bytes, int, Any]]) -> None:
        self._outbox.extend(replies)
        self._waker.wake()

    def stop(self) -> None:
        self._stopping.set()
        self._waker.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._waker.close()

    # --- the poller thread ---------------------------------------------------------------
    def _open(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message_size)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        sock.setsockopt(zmq.RCVHWM, SEND_HWM)
        host, port = self._bind
        try:
            sock.bind(f"tcp://{host}:{port}")
        except zmq.ZMQError as exc:
            sock.close()
            raise OSError(f"cannot bind the external endpoint {host}:{port}: {exc}") from None
        self._endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return sock

    def _run(self) -> None:
        try:
            sock = self._open()
        except BaseException as exc:  # reported to start()'s caller
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._waker.read_fd, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                events = dict(poller.poll())
                if sock in events:
                    self._receive(sock)
                if self._waker.read_fd in events:
                    self._waker.clear()
                self._flush(sock)
            self._flush(sock)
        except Exception:
            log.exception("transport thread failed")
            raise
        finally:
            sock.close(linger=0)

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
                log.warning("bad request from client %s: %s", peer.hex(), exc)
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
            try:
                sock.send_multipart((peer, encode_reply(corr, message)), zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                if exc.errno in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                    # The client vanished or stopped reading: drop the reply, keep serving.
                    self._on_peer_gone(peer)
                else:
                    raise
