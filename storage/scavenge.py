"""Scavenge: reclaim the space of events that no read can show any more, online.

What goes (Event Store's rules, docs/operations.md): every event of a tombstoned stream (not
the tombstone), events of a soft-deleted stream, events before `$tb`, beyond `$maxCount`, or
older than `$maxAge`. `$`-streams (metadata, epochs) are kept. Only committed records are
touched.

How: a scavenged record stays where it was, with its position, stream, version, event id,
type and creation time, and loses its data and metadata (``rules.is_scavenged``). So positions
and versions never change, the indexes stay valid (an append retried with a scavenged event's
id is still recognised), replication ships the record as it now is, and reads skip it. The log
is walked in chunks of ``CHUNK`` records: each chunk's decisions are made on a read snapshot,
then written in one short durable transaction (``store.rewrite``) together with the
checkpoint (``Progress``), so appends wait at most one such transaction, and a scavenge killed
at any moment resumes from its last chunk (``Scavenger.resume``). Each node scavenges its own
store, independently.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import msgpack

from esnode.core.types import StreamDeleted, decode_records
from esnode.storage.rules import (
    TOMBSTONE_VERSION,
    age_cutoff,
    encode_record,
    first_visible,
    is_scavenged,
)

log = logging.getLogger("esnode.scavenge")

CHUNK = 200
"""Records per write transaction: a few milliseconds of the writer's time at most."""

MAX_CHUNK_BYTES = 1 << 20

CHECKPOINT_EVERY = 25
"""Chunks with nothing to reclaim still move the checkpoint, every this many."""


@dataclass(frozen=True)
class Progress:
    """A scavenge's state, saved with every chunk it writes (the resume point)."""

    id: str
    state: str  # "running", "done", "stopped"
    started_us: int
    end_position: int  # the commit position when it started: it goes that far
    next_position: int = 0
    scanned: int = 0
    scavenged: int = 0
    bytes_reclaimed: int = 0
    finished_us: int = 0
    longest_write_ms: float = 0.0
    """The longest chunk transaction: how long appends waited for scavenge at most."""

    @property
    def percent(self) -> float:
        if self.end_position < 0:
            return 100.0
        return min(100.0, 100.0 * self.next_position / (self.end_position + 1))

    def encode(self) -> bytes:
        return msgpack.packb(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> Progress:
        return cls(**msgpack.unpackb(raw))


def reclaimable(rec, last: int, tombstoned: bool, meta: dict, now_us: int) -> bool:
    """Whether no read can show ``rec`` any more, given its stream's head."""
    if rec.stream.startswith("$") or is_scavenged(rec) or rec.version == TOMBSTONE_VERSION:
        return False
    if tombstoned:
        return True
    if rec.version < first_visible(meta, last):
        return True
    cutoff = age_cutoff(meta, now_us)
    return cutoff is not None and rec.created < cutoff


class Scavenger:
    """Scavenges ``store`` on its own thread. ``now_us`` is the clock for ``$maxAge``;
    ``pause_s`` is slept between chunks to leave the disk to the writer; ``committed`` says
    how far the log is committed (a node knows more than its store's saved checkpoint)."""

    def __init__(self, store, now_us: Callable[[], int], pause_s: float = 0.0,
                 chunk: int = CHUNK, committed: Callable[[], int] | None = None) -> None:
        self._store = store
        self._committed = committed or (lambda: store.commit_position)
        self._now_us = now_us
        self._pause_s = pause_s
        self._chunk = chunk
        self._stop = threading.Event()
        self._resumable = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        raw = store.scavenge_checkpoint()
        self.progress: Progress | None = Progress.decode(raw) if raw else None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Progress:
        """Start a new scavenge, or resume an interrupted one; the current one if running."""
        with self._lock:
            if self.running:
                return self.progress
            p = self.progress
            if p is None or p.state != "running":
                p = Progress(uuid.uuid4().hex, "running", self._now_us(),
                             min(self._committed(), self._store.writer_position))
                log.info("scavenge %s started: up to position %d", p.id, p.end_position)
            else:
                log.info("scavenge %s resumed at position %d of %d", p.id, p.next_position,
                         p.end_position)
            self.progress = p
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="scavenge", daemon=True)
            self._thread.start()
            return p

    def resume(self) -> Progress | None:
        """After a restart: carry on with a scavenge that was running when the node died."""
        if self.progress is not None and self.progress.state == "running":
            return self.start()
        return None

    def stop(self, resumable: bool = False, timeout: float = 10.0) -> None:
        """Stop after the current chunk. The saved state says "stopped" (a later start begins
        afresh), or, when the node is only going down (``resumable``), still "running", so
        that it resumes when the node is back."""
        self._resumable = resumable
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> Progress | None:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.progress

    # --- the scavenge thread -------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._walk()
        except Exception:
            log.exception("scavenge failed; it resumes from its last chunk when started again")

    def _walk(self) -> None:
        store, p = self._store, self.progress
        idle_chunks, last_log = 0, time.monotonic()
        while p.next_position <= p.end_position:
            if self._stop.is_set():
                self._save([], p if self._resumable else replace(p, state="stopped"))
                log.info("scavenge %s stopped at position %d%s", p.id, p.next_position,
                         " (resumes when the node starts)" if self._resumable else "")
                return
            raw = [(pos, v) for pos, v in store.read_raw(
                p.next_position - 1, self._chunk, MAX_CHUNK_BYTES) if pos <= p.end_position]
            if not raw:
                break
            values, reclaimed = self._chunk_of(raw)
            p = replace(p, next_position=raw[-1][0] + 1, scanned=p.scanned + len(raw),
                        scavenged=p.scavenged + len(values),
                        bytes_reclaimed=p.bytes_reclaimed + reclaimed)
            idle_chunks = 0 if values else idle_chunks + 1
            if values or idle_chunks >= CHECKPOINT_EVERY:
                idle_chunks = 0
                self._save(values, p)
                p = self.progress
            self.progress = p
            if time.monotonic() - last_log >= 2.0:
                last_log = time.monotonic()
                log.info("scavenge %s: %.0f%% (position %d of %d), %d records, %d bytes "
                         "reclaimed", p.id, p.percent, p.next_position, p.end_position,
                         p.scavenged, p.bytes_reclaimed)
            if self._pause_s:
                self._stop.wait(self._pause_s)
        p = replace(p, state="done", finished_us=self._now_us())
        self._save([], p)
        log.info("scavenge %s done: %d of %d records scavenged, %d bytes reclaimed", p.id,
                 p.scavenged, p.scanned, p.bytes_reclaimed)

    def _save(self, values: list[tuple[int, bytes]], p: Progress) -> None:
        started = time.perf_counter()
        self._store.rewrite(values, p.encode())
        took = (time.perf_counter() - started) * 1000
        self.progress = replace(p, longest_write_ms=max(p.longest_write_ms, round(took, 3)))

    def _chunk_of(self, raw: list[tuple[int, bytes]]) -> tuple[list[tuple[int, bytes]], int]:
        """The stubs for this chunk's reclaimable records, and the bytes they free."""
        heads: dict[str, tuple[int, bool, dict]] = {}
        now = self._now_us()
        out, reclaimed = [], 0
        for (position, value), rec in zip(raw, decode_records(v for _, v in raw)):
            head = heads.get(rec.stream)
            if head is None and not rec.stream.startswith("$"):
                head = heads[rec.stream] = self._head(rec.stream)
            if head is not None and reclaimable(rec, *head, now):
                stub = encode_record(rec._replace(data=None, metadata=b""))
                out.append((position, stub))
                reclaimed += len(value) - len(stub)
        return out, reclaimed

    def _head(self, stream: str) -> tuple[int, bool, dict]:
        """The stream's head as committed: an uncommitted delete or metadata change, which a
        new leader may truncate, decides nothing."""
        committed = min(self._committed(), self._store.writer_position)
        last = self._store.stream_version(stream, up_to_position=committed)
        try:
            meta = self._store.get_metadata(stream, up_to_position=committed).raw
        except StreamDeleted:
            return last, True, {}
        return last, False, meta
