"""A bare DEALER speaking protocol v1 by hand: lets node tests send exactly the bytes they
want (including garbage) without going through the client library."""

from __future__ import annotations

import uuid

import msgpack
import zmq

from esnode.transport.codec import encode_request


class RawClient:
    def __init__(self, endpoint: str):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.corr = 0

    def send(self, op: str, args: dict | None = None, corr: int | None = None) -> int:
        if corr is None:
            self.corr += 1
            corr = self.corr
        self.sock.send(encode_request(op, corr, args or {}))
        return corr

    def send_raw(self, *frames: bytes) -> None:
        self.sock.send_multipart(list(frames))

    def recv(self, timeout: float = 5.0) -> list:
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError("no reply from the node")
        return msgpack.unpackb(self.sock.recv(), raw=False)

    def call(self, op: str, args: dict | None = None, timeout: float = 5.0) -> list:
        corr = self.send(op, args)
        reply = self.recv(timeout)
        assert reply[0] == corr, reply
        return reply

    def close(self) -> None:
        self.sock.close(linger=0)


def event(event_type: str = "OrderPlaced", data: bytes = b'{"a":1}', eid: str | None = None):
    return [eid or str(uuid.uuid4()), event_type, data, b'{"m":1}', True]
