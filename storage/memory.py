"""The in-memory backend (``mem_db``): the same semantics as the LMDB store, nothing on disk.

One writer thread and any number of reader threads: every read and every commit holds one
lock for the short time it touches the lists (reads copy what they return).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from esnode.core.types import RecordedEvent, StorageLimits, Vote
from esnode.storage.base import StoreBase
from esnode.storage.rules import TOMBSTONE_VERSION, decode_record, encode_record


class MemoryEventStore(StoreBase):
    def __init__(self, limits: StorageLimits | None = None):
        super().__init__(limits)
        self._lock = threading.Lock()
        self._log: list[RecordedEvent] = []  # index = position
        self._streams: dict[str, list[int]] = {}  # stream -> positions, index = version
        self._tombstones: dict[str, int] = {}  # stream -> position of its tombstone
        self._ids: dict[tuple[str, str], tuple[int, int]] = {}  # (id, stream) -> (v, pos)

    # --- the View primitives (called with the lock held, or by the writer) --------------------
    def stream_last(self, stream: str) -> tuple[int, int, int]:
        positions = self._streams.get(stream)
        tomb = self._tombstones.get(stream, -1)
        if positions:
            return len(positions) - 1, positions[-1], tomb
        return -1, -1, tomb

    def stream_records(self, stream: str, first: int, count: int) -> list[RecordedEvent]:
        log = self._log
        return [log[p] for p in self._streams.get(stream, ())[first:first + count]]

    def position_of(self, stream: str, version: int) -> int:
        return self._streams[stream][version]

    def find_event(self, event_id: str, stream: str) -> tuple[int, int] | None:
        return self._ids.get((event_id, stream))

    def any_known(self, event_ids: list[str], stream: str) -> bool:
        ids = self._ids
        return any((i, stream) in ids for i in event_ids)

    def log_records(self, first: int, count: int) -> list[RecordedEvent]:
        return self._log[first:first + count]

    def log_values(self, first: int, count: int) -> list[bytes]:
        return [encode_record(rec) for rec in self._log[first:first + count]]

    def stream_values(self, stream: str, first: int, count: int
                      ) -> tuple[list[int], list[bytes]]:
        positions = self._streams.get(stream, [])[first:first + count]
        log = self._log
        return positions, [encode_record(log[p]) for p in positions]

    # --- backend hooks -------------------------------------------------------------------------
    @contextmanager
    def _read_view(self) -> Iterator[MemoryEventStore]:
        with self._lock:
            yield self

    def _writer_view(self):
        return nullcontext(self)  # only the writer thread changes anything

    def _commit(self, records: list[RecordedEvent], values: list[bytes] | None,
                commit_position: int | None) -> None:
        ids = self._ids
        with self._lock:
            for rec in records:
                if rec.version == TOMBSTONE_VERSION:
                    self._tombstones[rec.stream] = rec.position
                else:
                    self._streams.setdefault(rec.stream, []).append(rec.position)
                ids[(rec.event_id, rec.stream)] = (rec.version, rec.position)
                self._log.append(rec)

    def _remove_after(self, position: int) -> None:
        with self._lock:
            for rec in reversed(self._log[position + 1:]):
                if rec.version == TOMBSTONE_VERSION:
                    del self._tombstones[rec.stream]
                else:
                    positions = self._streams[rec.stream]
                    positions.pop()
                    if not positions:
                        del self._streams[rec.stream]
                key = (rec.event_id, rec.stream)
                if self._ids.get(key, (0, -1))[1] == rec.position:
                    del self._ids[key]
            del self._log[position + 1:]

    def rewrite(self, values: list[tuple[int, bytes]], checkpoint: bytes) -> None:
        """Replace committed records in place (storage/scavenge.py)."""
        with self._lock:
            self._save_scavenged(max((p for p, _ in values), default=-1))
            for position, value in values:
                self._log[position] = decode_record(value)
            self._scavenge_checkpoint = checkpoint

    def scavenge_checkpoint(self) -> bytes | None:
        return getattr(self, "_scavenge_checkpoint", None)

    def live_bytes(self) -> int:
        with self._lock:
            return sum(len(encode_record(rec)) for rec in self._log)

    def _save_commit_position(self, position: int) -> None:
        pass

    def _save_vote(self, vote: Vote) -> None:
        pass

    def _read_raw(self, after_position: int, max_count: int,
                  max_bytes: int) -> list[tuple[int, bytes]]:
        with self._lock:
            records = self._log[after_position + 1:after_position + 1 + max_count]
        out: list[tuple[int, bytes]] = []
        size = 0
        for rec in records:
            value = encode_record(rec)
            if out and size + len(value) > max_bytes:
                break
            out.append((rec.position, value))
            size += len(value)
        return out
