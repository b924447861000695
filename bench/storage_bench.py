"""Storage benchmark on the standard workload (docs/performance.md), store level:
no network, no actors. Durable figures: every ``write`` call is one fsynced transaction.

Phases (each run on a fresh store; medians over ``runs``):
- ``group1``: single-event appends, 64 requests per ``write`` call (64 concurrent requesters
  committed together), round-robin over 1,000 streams, exact expected versions: appends/s;
- ``batch100``: 100-event appends, several per ``write`` call: events/s;
- ``read_stream``: a 10,000-event stream read forwards in pages of 500: events/s;
- ``read_all``: the global log from the start in pages of 1,000 over >= 300,000 events: events/s.

``python -m esnode.bench.storage_bench [--path DIR] [--seconds S] [--runs N] [--mem]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

from esnode.bench.workload import new_event
from esnode.core.types import AppendRequest
from esnode.storage import open_store

STREAMS = 1000
GROUP = 64
BATCH_EVENTS = 100
BATCHES_PER_COMMIT = 8
READ_STREAM_EVENTS = 10_000
READ_ALL_EVENTS = 300_000


def _now_us() -> int:
    return time.time_ns() // 1000


class _Phases:
    def __init__(self, store, seconds: float):
        self.store, self.seconds = store, seconds
        self.versions = [-1] * STREAMS
        self.next_stream = 0

    def _requests(self, count: int, events: int) -> list[AppendRequest]:
        out = []
        for _ in range(count):
            s = self.next_stream
            self.next_stream = (s + 1) % STREAMS
            out.append(AppendRequest(f"stream-{s}", self.versions[s],
                                     tuple(new_event() for _ in range(events))))
            self.versions[s] += events
        return out

    def _write(self, requests: list[AppendRequest]) -> None:
        for outcome in self.store.write(requests, _now_us()):
            if isinstance(outcome, Exception):
                raise outcome

    def warm_up(self) -> None:
        for i in range(0, STREAMS, GROUP):
            self._write(self._requests(min(GROUP, STREAMS - i), 1))

    def timed(self, count: int, events: int) -> float:
        """Rate in events/s of ``write`` calls of ``count`` requests of ``events`` events;
        building the requests (the client's work) is not timed."""
        done, spent = 0, 0.0
        while spent < self.seconds:
            requests = self._requests(count, events)
            t0 = time.perf_counter()
            self._write(requests)
            spent += time.perf_counter() - t0
            done += count * events
        return done / spent

    def fill(self, stream: str, events: int, per_append: int = 100) -> None:
        version = -1
        for _ in range(events // per_append):
            self._write([AppendRequest(stream, version,
                                       tuple(new_event() for _ in range(per_append)))])
            version += per_append

    def read_stream(self, stream: str, page: int = 500) -> float:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < self.seconds / 2:
            version = 0
            while True:
                s = self.store.read_stream(stream, version, page)
                n += len(s.events)
                if s.is_end:
                    break
                version = s.next_version
        return n / (time.perf_counter() - t0)

    def read_all(self, page: int = 1000, limit: int = READ_ALL_EVENTS) -> float:
        n, position, t0 = 0, 0, time.perf_counter()
        while n < limit:
            s = self.store.read_all(position, page)
            n += len(s.events)
            if s.is_end:
                break
            position = s.next_position
        return n / (time.perf_counter() - t0)


def run_once(path: str | None, seconds: float) -> dict:
    store = open_store(path)
    try:
        p = _Phases(store, seconds)
        p.warm_up()
        group1 = p.timed(GROUP, 1)
        batch100 = p.timed(BATCHES_PER_COMMIT, BATCH_EVENTS)
        p.fill("read-0", READ_STREAM_EVENTS)
        read_stream = p.read_stream("read-0")
        while store.writer_position + 1 < READ_ALL_EVENTS:  # top the log up for the scan
            p._write(p._requests(BATCHES_PER_COMMIT, BATCH_EVENTS))
        read_all = p.read_all()
        return {"group1_appends_per_s": group1, "batch100_events_per_s": batch100,
                "read_stream_events_per_s": read_stream, "read_all_events_per_s": read_all}
    finally:
        store.close()


BARS = {"group1_appends_per_s": 25_000, "batch100_events_per_s": 100_000,
        "read_stream_events_per_s": 400_000, "read_all_events_per_s": 700_000}
LABELS = {"group1_appends_per_s": "single-event appends, 64 per commit (appends/s)",
          "batch100_events_per_s": f"100-event appends, {BATCHES_PER_COMMIT} per commit (events/s)",
          "read_stream_events_per_s": "read_stream, pages of 500, 10,000 events (events/s)",
          "read_all_events_per_s": "read_all, pages of 1,000, 300,000 events (events/s)"}


def run_storage_bench(path: str | None = None, seconds: float = 3.0, runs: int = 3,
                      mem: bool = False, print_table: bool = True) -> dict:
    """Run the phases ``runs`` times, each on a fresh store (LMDB in a fresh directory under
    ``path`` or the system temp dir; memory with ``mem=True``); print and return the medians
    (and every run's figures under ``"runs"``)."""
    results = []
    for _ in range(runs):
        if mem:
            results.append(run_once(None, seconds))
            continue
        work = tempfile.mkdtemp(prefix="esnode-bench-", dir=path)
        try:
            results.append(run_once(work, seconds))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    medians = {k: statistics.median(r[k] for r in results) for k in BARS}
    if print_table:
        _print_table(medians, results, "memory" if mem else "lmdb")
    return {**medians, "runs": results}


def _print_table(medians: dict, results: list[dict], backend: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"esnode storage ({backend}), median of {len(results)} runs")
    table.add_column("phase")
    table.add_column("median", justify="right")
    table.add_column("runs", justify="right")
    table.add_column("bar", justify="right")
    for key, label in LABELS.items():
        ok = medians[key] >= BARS[key]
        table.add_row(label, f"[{'green' if ok else 'red'}]{medians[key]:,.0f}",
                      " / ".join(f"{r[key]:,.0f}" for r in results), f"{BARS[key]:,}")
    Console().print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=None, help="parent directory for the LMDB stores")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per timed phase")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mem", action="store_true", help="benchmark the memory store")
    args = parser.parse_args(argv)
    run_storage_bench(args.path, args.seconds, args.runs, args.mem)


if __name__ == "__main__":
    main()
