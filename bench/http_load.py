"""A lean HTTP/1.1 load generator for ``esnode bench``: one asyncio protocol per keep-alive
connection, requests pre-encoded as bytes, responses parsed by httptools (llhttp, the parser
uvicorn uses). aiohttp's client costs about as much CPU per request as the server does, and
the bench client shares the machine's cores with the node: a heavy client would measure
itself. Falls back to aiohttp's client when httptools is not installed."""

from __future__ import annotations

import asyncio


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``request(raw)`` -> ``(status, headers, body)`` with header
    names lower-cased (bytes)."""

    def __init__(self) -> None:
        import httptools

        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future | None = None
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), self._headers,
                               b"".join(self._body)))

    async def request(self, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        self._headers, self._body = {}, []
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self._waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def post_request(path: str, host: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}Content-Length: {len(body)}\r\n\r\n"
            .encode() + body)


def get_request(path: str, host: str, headers: dict[str, str]) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode()
