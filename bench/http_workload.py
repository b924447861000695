"""The ``h`` (HTTP) phases of ``esnode bench``: the standard events through the HTTP API.

- ``h single C=64``: single-event POSTs (``application/vnd.eventstore.events+json``, with
  expected versions, as phase b) from 64 concurrent keep-alive connections;
- ``h batch 100``: 100-event POSTs from one connection (as phase c);
- ``h feed embed=body``: forward feed pages of ``READ_PAGE`` events with ``?embed=body`` over
  the 10,000-event read stream, from ``READERS`` connections.

The load generator is ``bench/http_load.py`` (keep-alive connections on one asyncio loop in
the bench process, sharing the machine's cores with the node as in the other phases).
Request bodies are made from a template before the clock starts for each request, as phase c
makes its events.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from urllib.parse import urlsplit

import orjson

from esnode.bench.http_load import Connection, get_request, post_request
from esnode.bench.workload import BATCH, DATA, META, N_STREAMS, READ_STREAM, PhaseResult

READ_PAGE = 200
READERS = 4
EVENTS_JSON = "application/vnd.eventstore.events+json"
ATOM_JSON = "application/vnd.eventstore.atom+json"
_EVENT = ('{"eventId":"%s","eventType":"OrderPlaced","data":' + DATA.decode()
          + ',"metadata":' + META.decode() + "}")


def _body(n: int) -> bytes:
    return ("[" + ",".join(_EVENT % uuid.uuid4() for _ in range(n)) + "]").encode()


class HttpPhases:
    """Keeps each stream's version (from the ``Location`` of its last append) so every
    append carries the right ``ES-ExpectedVersion``, as the ZeroMQ phases do."""

    def __init__(self, url: str, seconds: float, concurrency: int = 64):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.seconds = seconds
        self.concurrency = concurrency
        self.versions: dict[str, int] = {}

    def run(self) -> list[PhaseResult]:
        return asyncio.run(self._run())

    async def _run(self) -> list[PhaseResult]:
        conns = [await Connection.open(self.host, self.port) for _ in range(self.concurrency)]
        try:
            return [await self.single(conns), await self.batch(conns[0]),
                    await self.feed(conns[:READERS])]
        finally:
            for c in conns:
                c.close()

    async def _append(self, conn: Connection, stream: str, body: bytes) -> None:
        raw = post_request(f"/streams/{stream}", self.host, body, {
            "Content-Type": EVENTS_JSON,
            "ES-ExpectedVersion": str(self.versions.get(stream, -2))})
        status, headers, _ = await conn.request(raw)
        if status != 201:
            raise RuntimeError(f"HTTP append failed: {status}")
        first = int(headers[b"location"].rsplit(b"/", 1)[1])
        self.versions[stream] = first + body.count(b'"eventId"') - 1

    async def single(self, conns: list[Connection]) -> PhaseResult:
        res = PhaseResult(f"h single C={self.concurrency}")

        async def worker(k: int, until: float, record: bool) -> None:
            conn = conns[k]
            owned = [f"http-stream-{s}" for s in range(k, N_STREAMS, self.concurrency)]
            j = 0
            while time.perf_counter() < until:
                body = _body(1)
                t0 = time.perf_counter()
                await self._append(conn, owned[j % len(owned)], body)
                if record:
                    res.latencies.append(time.perf_counter() - t0)
                    res.ops += 1
                j += 1

        warm = time.perf_counter() + 1.0
        await asyncio.gather(*(worker(k, warm, False) for k in range(self.concurrency)))
        start = time.perf_counter()
        await asyncio.gather(*(worker(k, start + self.seconds, True)
                               for k in range(self.concurrency)))
        res.seconds = time.perf_counter() - start
        res.events = res.ops
        return res

    async def batch(self, conn: Connection) -> PhaseResult:
        res = PhaseResult(f"h batch {BATCH}")
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < self.seconds:
            body = _body(BATCH)
            t0 = time.perf_counter()
            await self._append(conn, f"http-stream-{i % N_STREAMS}", body)
            res.latencies.append(time.perf_counter() - t0)
            i += 1
        res.seconds = time.perf_counter() - start
        res.ops, res.events = i, i * BATCH
        return res

    async def feed(self, conns: list[Connection]) -> PhaseResult:
        """Needs phase d's read stream (10,000 events); writes it when absent."""
        status, _, _ = await conns[0].request(get_request(
            f"/streams/{READ_STREAM}/head", self.host, {"Accept": "application/json"}))
        if status != 200:
            for _ in range(100):
                await self._append(conns[0], READ_STREAM, _body(BATCH))
        res = PhaseResult(f"h feed embed=body ({READ_PAGE}/page)")

        async def reader(k: int, until: float) -> None:
            conn, start_at = conns[k], (k * 2500) % 10_000
            while time.perf_counter() < until:
                raw = get_request(f"/streams/{READ_STREAM}/{start_at}/forward/{READ_PAGE}"
                                  "?embed=body", self.host, {"Accept": ATOM_JSON})
                t0 = time.perf_counter()
                status, _, body = await conn.request(raw)
                if status != 200:
                    raise RuntimeError(f"HTTP feed read failed: {status}")
                page = orjson.loads(body)
                res.latencies.append(time.perf_counter() - t0)
                res.ops += 1
                res.events += len(page["entries"])
                start_at = (start_at + READ_PAGE) % 10_000

        start = time.perf_counter()
        await asyncio.gather(*(reader(k, start + self.seconds) for k in range(len(conns))))
        res.seconds = time.perf_counter() - start
        return res
