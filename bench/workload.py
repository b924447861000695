"""The standard benchmark workload (docs/performance.md), driven through esnode's client.

Phases: a (one sequential client, single-event appends), b (C concurrent single-event appends,
C = 32 and 64, asyncio tasks on one connection), c (100-event appends), d (read a 10,000-event
stream in pages of 500; scan ``$all`` in pages of 1,000). Each phase reports throughput and
client-side latency (encode + round trip + decode) p50/p99/p99.9, and the CPU of its timed window:
cores busy in the client and the machine, and the server's CPU per event when the benchmark
started the server itself (``bench/cpu.py``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from esnode.bench.cpu import CpuFigures, CpuWindow
from esnode.core.types import EventData

N_STREAMS = 1000
READ_STREAM = "read-0"
READ_STREAM_EVENTS = 10_000
BATCH = 100
CPU_KEYS = ("client_cores", "machine_cores", "server_us_per_event")


def _pad_json(obj: dict, key: str, size: int) -> bytes:
    obj = dict(obj, **{key: ""})
    base = len(json.dumps(obj, separators=(",", ":")).encode())
    obj[key] = "x" * max(0, size - base)
    return json.dumps(obj, separators=(",", ":")).encode()


DATA = _pad_json({"order_id": "ord-00000001", "customer_id": "cust-000001", "amount": 1234.56,
                  "currency": "EUR", "items": [{"sku": "SKU-12345", "qty": 2},
                                               {"sku": "SKU-67890", "qty": 1}], "note": ""},
                 "note", 200)
META = _pad_json({"corr": "0000000000000001", "user": "u-42", "p": ""}, "p", 50)


GROUP_EVENTS = 20_000
"""Events of the stream the subscription phase (g) consumes."""
GROUP_WINDOW = 500
GROUP_ACK_BATCH = 100


def new_event() -> EventData:
    """The standard event: a fresh UUID, 200 bytes of JSON data, 50 bytes of JSON metadata."""
    return EventData(str(uuid.uuid4()), "OrderPlaced", DATA, META, True)


def settle_harness() -> None:
    """Freeze what the benchmark process holds before the phases (the CLI: typer, rich, ...,
    and the imported client): its ~45,000 objects made every full garbage collection a
    17-22 ms pause of the measured client (the HTTP feed's p99 was those pauses), where the
    ceiling's client runs in a lean process of its own. What the phases and the client library
    make while measured is collected as before (docs/performance.md)."""
    gc.collect()
    gc.freeze()


@dataclass
class PhaseResult:
    name: str
    ops: int = 0
    events: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)
    cpu: CpuFigures | None = None
    """CPU of the timed window (client, server, machine), when measured."""

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def summary(self) -> dict:
        row = {"phase": self.name, "ops_per_s": round(self.ops_per_s),
               "events_per_s": round(self.events_per_s),
               "p50_ms": self.percentile_ms(0.50), "p99_ms": self.percentile_ms(0.99),
               "p999_ms": self.percentile_ms(0.999)}
        return row | (self.cpu.summary(self.events) if self.cpu is not None else
                      dict.fromkeys(CPU_KEYS))


class Workload:
    """Runs the phases against one endpoint; keeps each stream's version so every append
    carries the right expected version (a conflict would fail the run)."""

    def __init__(self, target: str, seconds: float = 5.0, concurrencies=(32, 64),
                 http: str | None = None, server_pids: Callable[[], list[int]] | None = None):
        self.target = target
        self.server_pids = server_pids
        self.http = http
        self.seconds = seconds
        self.concurrencies = concurrencies
        self.versions: dict[str, int] = {}

    def run(self, phases: str = "abcd") -> list[PhaseResult]:
        from esnode.client import connect, connect_async  # noqa: F401 - before the freeze

        if "h" in phases:
            from esnode.bench.http_workload import HttpPhases  # noqa: F401 - before the freeze
        settle_harness()
        results: list[PhaseResult] = []
        with connect(self.target, timeout=30) as client:
            if "a" in phases:
                results.append(self.phase_a(client))
            if "b" in phases:
                for c in self.concurrencies:
                    results.append(asyncio.run(self.phase_b(c)))
            if "c" in phases:
                results.append(self.phase_c(client))
            if "d" in phases:
                results.extend(self.phase_d(client))
            if "g" in phases:
                results.extend(self.phase_g(client))
        if "h" in phases:
            if not self.http:
                raise ValueError("phase h needs the node's HTTP URL (--http)")
            from esnode.bench.http_workload import HttpPhases

            results.extend(HttpPhases(self.http, self.seconds).run())
        return results

    def _append(self, client, stream: str, events: list[EventData]) -> None:
        result = client.append(stream, events, self.versions.get(stream, -1))
        self.versions[stream] = result.last_version

    def phase_a(self, client) -> PhaseResult:
        names = [f"stream-{i}" for i in range(N_STREAMS)]
        for s in names:  # warm-up: create every stream (not timed)
            self._append(client, s, [new_event()])
        res = PhaseResult("a single")
        start = time.perf_counter()
        deadline = start + self.seconds
        i = 0
        with CpuWindow(self.server_pids) as cpu:
            while time.perf_counter() < deadline:
                s = names[i % N_STREAMS]
                t0 = time.perf_counter()
                self._append(client, s, [new_event()])
                res.latencies.append(time.perf_counter() - t0)
                i += 1
        res.cpu = cpu.figures
        res.seconds = time.perf_counter() - start
        res.ops = res.events = i
        return res

    async def phase_b(self, concurrency: int) -> PhaseResult:
        from esnode.client import connect_async

        client = await connect_async(self.target, timeout=30)
        res = PhaseResult(f"b C={concurrency}")
        try:
            async def worker(k: int, until: float, record: bool) -> None:
                owned = [f"stream-{s}" for s in range(k, N_STREAMS, concurrency)]
                j = 0
                while time.perf_counter() < until:
                    s = owned[j % len(owned)]
                    t0 = time.perf_counter()
                    r = await client.append(s, [new_event()], self.versions.get(s, -1))
                    self.versions[s] = r.last_version
                    if record:
                        res.latencies.append(time.perf_counter() - t0)
                        res.ops += 1
                    j += 1

            warm = time.perf_counter() + 1.0
            await asyncio.gather(*(worker(k, warm, False) for k in range(concurrency)))
            start = time.perf_counter()
            with CpuWindow(self.server_pids) as cpu:
                await asyncio.gather(*(worker(k, start + self.seconds, True)
                                       for k in range(concurrency)))
            res.cpu = cpu.figures
            res.seconds = time.perf_counter() - start
            res.events = res.ops
        finally:
            await client.close()
        return res

    def phase_c(self, client) -> PhaseResult:
        res = PhaseResult(f"c batch {BATCH}")
        start = time.perf_counter()
        deadline = start + self.seconds
        i = 0
        with CpuWindow(self.server_pids) as cpu:
            while time.perf_counter() < deadline:
                s = f"stream-{i % N_STREAMS}"
                events = [new_event() for _ in range(BATCH)]  # made before t0, as WORKLOAD.md's
                t0 = time.perf_counter()
                self._append(client, s, events)
                res.latencies.append(time.perf_counter() - t0)
                i += 1
        res.cpu = cpu.figures
        res.seconds = time.perf_counter() - start
        res.ops, res.events = i, i * BATCH
        return res

    @staticmethod
    def _read_pages(res: PhaseResult, read: Callable, start: int, after: Callable,
                    until_events: int | None = None) -> None:
        """Read page after page from ``start`` to the end (or ``until_events``), timing each
        read into ``res``; ``after(page)`` is where the next page starts."""
        where = start
        while until_events is None or res.events < until_events:
            t0 = time.perf_counter()
            page = read(where)
            res.latencies.append(time.perf_counter() - t0)
            res.events += len(page.events)
            res.ops += 1
            where = after(page)
            if page.is_end:
                return

    def phase_d(self, client) -> list[PhaseResult]:
        for _ in range(READ_STREAM_EVENTS // BATCH):
            self._append(client, READ_STREAM, [new_event() for _ in range(BATCH)])
        stream = PhaseResult("d read stream")
        start = time.perf_counter()
        with CpuWindow(self.server_pids) as cpu:
            while time.perf_counter() - start < self.seconds / 2:  # the stream, again and again
                self._read_pages(stream, lambda v: client.read_stream(READ_STREAM, v, 500),
                                 0, lambda page: page.next_version)
        stream.cpu = cpu.figures
        stream.seconds = time.perf_counter() - start
        scan = PhaseResult("d scan $all")
        start = time.perf_counter()
        with CpuWindow(self.server_pids) as cpu:
            self._read_pages(scan, lambda p: client.read_all(p, 1000), 0,
                             lambda page: page.next_position, until_events=300_000)
        scan.cpu = cpu.figures
        scan.seconds = time.perf_counter() - start
        return [stream, scan]


    def phase_g(self, client, events: int = GROUP_EVENTS) -> list[PhaseResult]:
        """Subscriptions: one stream of ``events`` events consumed by a catch-up
        subscription, then by one persistent subscription group with 1 and with 4
        consumers (threads, a connection each) acking in batches of ``GROUP_ACK_BATCH``:
        events delivered and acked per second."""
        from esnode.client import connect

        stream = f"group-bench-{uuid.uuid4().hex[:8]}"
        for _ in range(events // BATCH):
            self._append(client, stream, [new_event() for _ in range(BATCH)])
        catchup = PhaseResult("g catch-up subscription")
        start = time.perf_counter()
        with client.subscribe(stream, "start", window=2000) as sub:
            for _ in range(events):
                sub.get(30)
        catchup.seconds = time.perf_counter() - start
        catchup.events = catchup.ops = events
        results = [catchup]
        for consumers in (1, 4):
            group = f"bench-{consumers}"
            client.create_group(stream, group, start_from="start", read_batch_size=500,
                                live_buffer_size=5000, history_buffer_size=5000)
            res = PhaseResult(f"g group, {consumers} consumer(s)")
            done = [0] * consumers
            errors: list[BaseException] = []
            stop = threading.Event()

            def consume(k: int, client=client, group=group, done=done) -> None:
                try:
                    with connect(self.target, timeout=30) as c, \
                            c.subscribe_group(stream, group, window=GROUP_WINDOW) as sub:
                        batch = []
                        while not stop.is_set():
                            item = sub.get(0.2)
                            if item is not None:
                                batch.append(item)
                            if batch and (len(batch) >= GROUP_ACK_BATCH or item is None):
                                sub.ack(*batch)
                                done[k] += len(batch)
                                batch = []
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=consume, args=(k,), daemon=True)
                       for k in range(consumers)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            deadline = start + max(60.0, self.seconds * 10)
            while sum(done) < events and not errors and time.perf_counter() < deadline:
                time.sleep(0.005)
            res.seconds = time.perf_counter() - start
            stop.set()
            for t in threads:
                t.join(timeout=30)
            if errors:
                raise errors[0]
            res.events = res.ops = sum(done)
            results.append(res)
        return results


def median_summaries(runs: list[list[PhaseResult]]) -> list[dict]:
    """Per phase, the median of each figure over the runs (and the spread of throughput)."""
    out = []
    for phase_runs in zip(*runs):
        rows = [r.summary() for r in phase_runs]
        merged = {"phase": rows[0]["phase"], "runs": len(rows)}
        for key in ("ops_per_s", "events_per_s", "p50_ms", "p99_ms", "p999_ms", *CPU_KEYS):
            values = [r[key] for r in rows if r.get(key) is not None]
            merged[key] = statistics.median(values) if values else None
        merged["spread"] = (max(r["events_per_s"] for r in rows)
                            - min(r["events_per_s"] for r in rows)) / max(1, merged["events_per_s"])
        out.append(merged)
    return out
