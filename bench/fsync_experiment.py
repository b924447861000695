"""Experiment (not a product path): what one sync per group commit would buy on this disk.

Runs the storage bench's single-event group commits (64 appends per ``write``) against
``LmdbEventStore`` variants, interleaved, each on a fresh store in ``--path``:

- ``lmdb``: the product (``sync=True, metasync=True``: ``fdatasync`` of the data file, then
  the meta page written through an ``O_DSYNC`` descriptor: two syncs per commit);
- ``metasync_off``: ``metasync=False``: one ``fdatasync`` per commit, the meta page is made
  durable by the NEXT commit's sync (a crash may undo the last acknowledged commit: a
  product would have to delay acknowledgements by one commit, or sync again when idle);
- ``segment``: LMDB with ``sync=False`` (indexes only, rebuilt from the log after a crash)
  plus an append-only segment file preallocated to 64 MiB: every record framed with its
  length and a CRC (zlib's CRC32 standing in for CRC32C), one ``fdatasync`` per group;
- ``nosync``: LMDB ``sync=False`` alone: no durability, the ceiling of the CPU path;
- ``prezeroed``: the product, but the data file written out with zeros (256 MiB, synced)
  before the run, so that commits overwrite allocated blocks instead of extending the file:
  the same two syncs, without the file-size and block-allocation metadata in each sync.

``python -m esnode.bench.fsync_experiment [--path DIR] [--commits N] [--rounds R]``
prints per variant the median over rounds of appends/s and of the commit p50/p99 (ms).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import tempfile
import time
import zlib

import lmdb

from esnode.bench.storage_bench import GROUP, _Phases, percentiles_ms
from esnode.storage import lmdb_store

_FRAME = struct.Struct("<II")  # length, crc
_SEGMENT = 64 << 20
VARIANTS = ("lmdb", "metasync_off", "segment", "nosync", "prezeroed")
_PREZERO = 256 << 20


class _Segment:
    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.posix_fallocate(self.fd, 0, _SEGMENT)
        os.fsync(self.fd)
        self.offset = 0

    def append_group(self, values: list[bytes]) -> None:
        frames = b"".join(_FRAME.pack(len(v), zlib.crc32(v)) + v for v in values)
        if self.offset + len(frames) > _SEGMENT:
            self.offset = 0  # the experiment reuses the segment: the write cost is the same
        os.pwrite(self.fd, frames, self.offset)
        self.offset += len(frames)
        os.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _open(variant: str, path: str) -> lmdb_store.LmdbEventStore:
    real_open = lmdb.open
    flags = {"lmdb": {}, "metasync_off": {"metasync": False}, "prezeroed": {},
             "segment": {"sync": False}, "nosync": {"sync": False}}[variant]
    if variant == "prezeroed":  # LMDB writes its meta pages, then zeros extend the file
        lmdb_store.LmdbEventStore(os.path.join(path, "db")).close()
        fd = os.open(os.path.join(path, "db", "data.mdb"), os.O_WRONLY | os.O_APPEND)
        zeros = bytes(1 << 20)
        for _ in range(_PREZERO >> 20):
            os.write(fd, zeros)
        os.fsync(fd)
        os.close(fd)

    def patched(*args, **kwargs):
        return real_open(*args, **{**kwargs, **flags})

    lmdb_store.lmdb.open = patched
    try:
        store = lmdb_store.LmdbEventStore(os.path.join(path, "db"))
    finally:
        lmdb_store.lmdb.open = real_open
    if variant == "segment":
        segment = _Segment(os.path.join(path, "segment"))
        commit = store._commit

        def _commit(records, values, commit_position):
            values = values or [lmdb_store.encode_record(r) for r in records]
            segment.append_group(values)
            commit(records, values, commit_position)

        store._commit = _commit
        store._segment = segment
    return store


def run(variant: str, parent: str | None, commits: int) -> dict:
    work = tempfile.mkdtemp(prefix="esnode-fsync-", dir=parent)
    store = _open(variant, work)
    try:
        phases = _Phases(store, 0)
        phases.warm_up()
        latencies = []
        for _ in range(commits):
            requests = phases._requests(GROUP, 1)
            t0 = time.perf_counter()
            phases._write(requests)
            latencies.append(time.perf_counter() - t0)
        return {"appends_per_s": commits * GROUP / sum(latencies), **percentiles_ms(latencies)}
    finally:
        store.close()
        if variant == "segment":
            store._segment.close()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=None, help="parent directory (a real disk)")
    parser.add_argument("--commits", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            results[variant].append(run(variant, args.path, args.commits))
    base = statistics.median(r["appends_per_s"] for r in results["lmdb"])
    for variant, runs in results.items():
        rate = statistics.median(r["appends_per_s"] for r in runs)
        p50 = statistics.median(r["p50"] for r in runs)
        p99 = statistics.median(r["p99"] for r in runs)
        spread = " / ".join(f"{r['appends_per_s']:,.0f}" for r in runs)
        print(f"{variant:13s} {rate:9,.0f} appends/s (x{rate / base:.2f})  commit p50 {p50:.2f} ms"
              f"  p99 {p99:.2f} ms   runs: {spread}")


if __name__ == "__main__":
    main()
