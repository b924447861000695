"""Storage benchmark on the standard workload (docs/performance.md), store level:
no network, no actors. Durable figures: every ``write`` call is one fsynced transaction.

Phases (each run on a fresh store; medians over ``runs``):
- ``group1``: single-event appends, 64 requests per ``write`` call (64 concurrent requesters
  committed together), round-robin over 1,000 streams, exact expected versions: appends/s;
- ``batch100``: 100-event appends, several per ``write`` call: events/s;
- ``read_stream``: a 10,000-event stream read forwards in pages of 500: events/s;
- ``read_all``: the global log from the start in pages of 1,000 over >= 300,000 events: events/s.

The write phases also report the latency of one ``write`` call (one group commit: what every
request in it waits for) at p50, p99, p99.9 and the maximum: a long commit (such as a bulk
event-id merge) shows in the tail.

``python -m esnode.bench.storage_bench [--path DIR] [--seconds S] [--runs N] [--mem]
[--phases group1,batch100,read_stream,read_all]`` (``--phases`` runs only those, e.g. under a
profiler; the read phases then repeat for ``--seconds`` each).
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

    def timed(self, count: int, events: int) -> tuple[float, list[float]]:
        """Rate in events/s of ``write`` calls of ``count`` requests of ``events`` events, and
        each call's seconds; building the requests (the client's work) is not timed."""
        done, spent, latencies = 0, 0.0, []
        while spent < self.seconds:
            requests = self._requests(count, events)
            t0 = time.perf_counter()
            self._write(requests)
            took = time.perf_counter() - t0
            latencies.append(took)
            spent += took
            done += count * events
        return done / spent, latencies

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

    def read_all(self, page: int = 1000, limit: int = READ_ALL_EVENTS,
                 seconds: float = 0.0) -> float:
        """One scan of ``limit`` events from the start, repeated until ``seconds`` passed."""
        n, t0 = 0, time.perf_counter()
        while True:
            done, position = 0, 0
            while done < limit:
                s = self.store.read_all(position, page)
                done += len(s.events)
                if s.is_end:
                    break
                position = s.next_position
            n += done
            if time.perf_counter() - t0 >= seconds:
                return n / (time.perf_counter() - t0)


def percentiles_ms(latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"p50": at(0.50), "p99": at(0.99), "p999": at(0.999), "max": ordered[-1] * 1000}


PHASES = ("group1", "batch100", "read_stream", "read_all")


def run_once(path: str | None, seconds: float, phases=PHASES) -> dict:
    store = open_store(path)
    out: dict = {}
    try:
        p = _Phases(store, seconds)
        p.warm_up()
        if "group1" in phases:
            out["group1_appends_per_s"], lat = p.timed(GROUP, 1)
            out["group1_ms"] = percentiles_ms(lat)
        if "batch100" in phases:
            out["batch100_events_per_s"], lat = p.timed(BATCHES_PER_COMMIT, BATCH_EVENTS)
            out["batch100_ms"] = percentiles_ms(lat)
        if "read_stream" in phases:
            p.fill("read-0", READ_STREAM_EVENTS)
            out["read_stream_events_per_s"] = p.read_stream("read-0")
        if "read_all" in phases:
            while store.writer_position + 1 < READ_ALL_EVENTS:  # top the log up for the scan
                p._write(p._requests(BATCHES_PER_COMMIT, BATCH_EVENTS))
            out["read_all_events_per_s"] = p.read_all(
                seconds=0.0 if len(phases) == len(PHASES) else seconds)
        return out
    finally:
        store.close()


BARS = {"group1_appends_per_s": 25_000, "batch100_events_per_s": 100_000,
        "read_stream_events_per_s": 400_000, "read_all_events_per_s": 700_000}
LABELS = {"group1_appends_per_s": "single-event appends, 64 per commit (appends/s)",
          "batch100_events_per_s": f"100-event appends, {BATCHES_PER_COMMIT} per commit (events/s)",
          "read_stream_events_per_s": "read_stream, pages of 500, 10,000 events (events/s)",
          "read_all_events_per_s": "read_all, pages of 1,000, 300,000 events (events/s)"}


LATENCY_LABELS = {"group1_ms": "  one commit, ms: p50/p99/p99.9/max",
                  "batch100_ms": "  one commit, ms: p50/p99/p99.9/max"}


def run_storage_bench(path: str | None = None, seconds: float = 3.0, runs: int = 3,
                      mem: bool = False, print_table: bool = True, phases=PHASES) -> dict:
    """Run the phases ``runs`` times, each on a fresh store (LMDB in a fresh directory under
    ``path`` or the system temp dir; memory with ``mem=True``); print and return the medians
    (and every run's figures under ``"runs"``)."""
    results = []
    for _ in range(runs):
        if mem:
            results.append(run_once(None, seconds, phases))
            continue
        work = tempfile.mkdtemp(prefix="esnode-bench-", dir=path)
        try:
            results.append(run_once(work, seconds, phases))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    medians = {k: statistics.median(r[k] for r in results) for k in BARS if k in results[0]}
    for key in LATENCY_LABELS:
        if key in results[0]:
            medians[key] = {q: statistics.median(r[key][q] for r in results)
                            for q in results[0][key]}
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
        if key not in medians:
            continue
        ok = medians[key] >= BARS[key]
        table.add_row(label, f"[{'green' if ok else 'red'}]{medians[key]:,.0f}",
                      " / ".join(f"{r[key]:,.0f}" for r in results), f"{BARS[key]:,}")
        lat_key = key.split("_")[0] + "_ms"
        if lat_key in medians:
            table.add_row(LATENCY_LABELS[lat_key],
                          " / ".join(f"{v:.1f}" for v in medians[lat_key].values()),
                          " | ".join(f"p99 {r[lat_key]['p99']:.1f} max {r[lat_key]['max']:.1f}"
                                     for r in results), "")
    Console().print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=None, help="parent directory for the LMDB stores")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per timed phase")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mem", action="store_true", help="benchmark the memory store")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)}")
    args = parser.parse_args(argv)
    phases = tuple(p for p in args.phases.split(",") if p)
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    run_storage_bench(args.path, args.seconds, args.runs, args.mem, phases=phases)


if __name__ == "__main__":
    main()
