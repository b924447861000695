"""The durable backend: one LMDB environment, four named databases, fsync on every commit.

| db | key | value |
| --- | --- | --- |
| ``log`` | position (8 bytes big-endian) | the record: msgpack array of the RecordedEvent fields |
| ``streams`` | stream key + version (8 bytes BE) | position (8 bytes BE) |
| ``event_ids`` | stream key + event id (36 ASCII bytes) | version, position (2 x 8 bytes BE) |
| ``checkpoints`` | ``commit`` / ``vote`` / ``ids`` | commit position / msgpack [term, candidate] / first position whose ids are not merged (8 bytes BE) |

Event ids reach ``event_ids`` in bulk merges (see ``_merge_ids``); until then the log itself is
their durable record and a dict holds them (rebuilt from the log tail on open).

The stream key is the UTF-8 name prefixed by its length (2 bytes), or for names over 200
bytes ``FFFF`` + SHA-256 of the name: prefix-free (so a stream's index entries are
contiguous) and short enough for LMDB's 511-byte key limit. A tombstone is indexed at version
``2**63 - 1``, after every real version. Stream heads, metadata and epochs are derived from these
indexes (and cached for the writer), so a truncation needs no undo log.

See docs/storage.md.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice

import lmdb
import msgpack

from esnode.core.types import RecordedEvent, StorageFull, StorageLimits, Vote
from esnode.storage.base import StoreBase
from esnode.storage.rules import TOMBSTONE_VERSION, decode_records, encode_record

Q = struct.Struct(">Q")
QQ = struct.Struct(">QQ")
_TOMB_SUFFIX = Q.pack(TOMBSTONE_VERSION)
_LEN = struct.Struct(">H")
_SHORT_NAME = 200
_NAMEKEY_CACHE_LIMIT = 100_000
DEFAULT_MAP_SIZE = 1 << 30
_NEARLY_FULL = 64 << 20


def stream_key(stream: str) -> bytes:
    raw = stream.encode()
    if len(raw) <= _SHORT_NAME:
        return _LEN.pack(len(raw)) + raw
    return b"\xff\xff" + hashlib.sha256(raw).digest()


def is_disk_full(exc: BaseException, path: str) -> bool:
    """Whether a failed write transaction failed for want of space. LMDB reports a short write
    to a full file system as EIO, so an I/O error on a nearly full file system counts too."""
    if isinstance(exc, lmdb.DiskError):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(exc, lmdb.Error):
        return False
    text = str(exc)
    if "No space left" in text or "Disk quota" in text:
        return True
    if "Input/output error" in text:
        try:
            fs = os.statvfs(path)
        except OSError:
            return False
        return fs.f_bavail * fs.f_frsize < max(_NEARLY_FULL, fs.f_blocks * fs.f_frsize // 100)
    return False


class _ReadGate:
    """Read transactions enter, a map resize waits until none is open (LMDB requires it)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._resizing = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._resizing = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class _LmdbView:
    """The ``View`` primitives over one LMDB transaction."""

    __slots__ = ("txn", "key", "log", "streams", "ids", "recent")

    def __init__(self, store: LmdbEventStore, txn: lmdb.Transaction):
        self.txn = txn
        self.key = store._stream_key
        self.recent = store._recent_ids  # only the writer thread calls find_event
        self.log, self.streams, self.ids = store._log, store._streams, store._ids

    def stream_last(self, stream: str) -> tuple[int, int, int]:
        key = self.key(stream)
        cursor = self.txn.cursor(db=self.streams)
        tomb_key = key + _TOMB_SUFFIX
        tomb = -1
        if cursor.set_range(tomb_key):
            if cursor.key() == tomb_key:
                tomb = Q.unpack(cursor.value())[0]
            found = cursor.prev()
        else:
            found = cursor.last()
        if found:
            k = cursor.key()
            if len(k) == len(key) + 8 and k.startswith(key):
                return Q.unpack_from(k, len(key))[0], Q.unpack(cursor.value())[0], tomb
        return -1, -1, tomb

    def stream_records(self, stream: str, first: int, count: int) -> list[RecordedEvent]:
        cursor = self.txn.cursor(db=self.streams)
        if not cursor.set_range(self.key(stream) + Q.pack(first)):
            return []
        positions = list(islice(cursor.iternext(keys=False), count))
        pairs = self.txn.cursor(db=self.log).getmulti(positions)
        return decode_records([v for _, v in pairs])

    def position_of(self, stream: str, version: int) -> int:
        return Q.unpack(self.txn.get(self.key(stream) + Q.pack(version), db=self.streams))[0]

    def find_event(self, event_id: str, stream: str) -> tuple[int, int] | None:
        hit = self.recent.get((event_id, stream))
        if hit is not None:
            return hit
        hit = self.txn.get(self.key(stream) + event_id.encode(), db=self.ids)
        return QQ.unpack(hit) if hit is not None else None

    def any_known(self, event_ids: list[str], stream: str) -> bool:
        recent = self.recent
        if any((i, stream) in recent for i in event_ids):
            return True
        key = self.key(stream)
        cursor = self.txn.cursor(db=self.ids)
        return bool(cursor.getmulti([key + i.encode() for i in event_ids]))

    def log_records(self, first: int, count: int) -> list[RecordedEvent]:
        cursor = self.txn.cursor(db=self.log)
        if not cursor.set_range(Q.pack(first)):
            return []
        return decode_records(islice(cursor.iternext(keys=False), count))


class LmdbEventStore(StoreBase):
    """Durable event store in an LMDB environment at ``path`` (a directory, created if needed).

    ``map_size`` is only the starting size: the map doubles whenever a transaction fills it."""

    ids_merge_threshold = 50_000
    """Event ids kept in memory (and found again in the log on open) before a bulk merge."""

    def __init__(self, path: str | os.PathLike, limits: StorageLimits | None = None,
                 map_size: int = DEFAULT_MAP_SIZE):
        super().__init__(limits)
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)
        # Durability: fsync data and meta pages on every commit; never writemap/map_async/nosync.
        self._env = lmdb.open(self.path, map_size=map_size, max_dbs=8, sync=True,
                              metasync=True, writemap=False, map_async=False, lock=True)
        self._gate = _ReadGate()
        self._namekeys: dict[str, bytes] = {}
        # Event ids of the records after the ``ids`` checkpoint: not yet in ``event_ids``.
        self._recent_ids: dict[tuple[str, str], tuple[int, int]] = {}
        self._ids_through = -1
        self._closed = False
        dbs = self._write_txn(lambda txn: [self._env.open_db(name, txn=txn) for name in (
            b"log", b"streams", b"event_ids", b"checkpoints")])
        self._log, self._streams, self._ids, self._checkpoints = dbs
        with self._env.begin() as txn:
            cursor = txn.cursor(db=self._log)
            self._writer_position = Q.unpack(cursor.key())[0] if cursor.last() else -1
            commit = txn.get(b"commit", db=self._checkpoints)
            self._commit_position = Q.unpack(commit)[0] if commit else -1
            vote = txn.get(b"vote", db=self._checkpoints)
            self._vote = Vote(*msgpack.unpackb(vote)) if vote else None
            merged = txn.get(b"ids", db=self._checkpoints)
            self._ids_through = Q.unpack(merged)[0] - 1 if merged else -1
            if cursor.set_range(Q.pack(self._ids_through + 1)):
                self._recent_ids = {(r.event_id, r.stream): (r.version, r.position)
                                    for r in decode_records(cursor.iternext(keys=False))}
        self._load_state()

    # --- plumbing ------------------------------------------------------------------------------
    def _stream_key(self, stream: str) -> bytes:
        key = self._namekeys.get(stream)
        if key is None:
            if len(self._namekeys) >= _NAMEKEY_CACHE_LIMIT:
                self._namekeys.clear()
            key = self._namekeys[stream] = stream_key(stream)
        return key

    @contextmanager
    def _read_view(self) -> Iterator[_LmdbView]:
        with self._gate.reading():
            txn = self._env.begin()
            try:
                yield _LmdbView(self, txn)
            finally:
                txn.abort()

    def _write_txn(self, work: Callable[[lmdb.Transaction], object]) -> object:
        """Run ``work`` in one durable write transaction: the map grows and the whole
        transaction is retried when it fills; a full disk raises ``StorageFull``."""
        while True:
            txn = self._env.begin(write=True)
            try:
                result = work(txn)
                txn.commit()
                return result
            except lmdb.MapFullError:
                txn.abort()
                self._grow()
            except BaseException as exc:
                txn.abort()
                if is_disk_full(exc, self.path):
                    raise StorageFull(f"disk full, nothing written to {self.path}: {exc}") from exc
                raise

    def _grow(self) -> None:
        with self._gate.exclusive():
            size = self._env.info()["map_size"]
            self._env.set_mapsize(size * 2)

    @property
    def map_size(self) -> int:
        return self._env.info()["map_size"]

    # --- backend hooks -------------------------------------------------------------------------
    def _commit(self, records: list[RecordedEvent], values: list[bytes] | None,
                commit_position: int | None) -> None:
        if values is None:
            values = [encode_record(rec) for rec in records]
        new_ids = {(rec.event_id, rec.stream): (rec.version, rec.position) for rec in records}
        merge = len(self._recent_ids) + len(new_ids) >= self.ids_merge_threshold
        log, streams = self._log, self._streams
        key_of, pack = self._stream_key, Q.pack

        def work(txn: lmdb.Transaction) -> None:
            put = txn.put
            for (_i, stream, version, _t, _d, _m, _j, _c, position), value in zip(
                    records, values):
                pkey = pack(position)
                put(pkey, value, append=True, db=log)
                put(key_of(stream) + pack(version), pkey, db=streams)
            if merge:
                self._merge_ids(txn, {**self._recent_ids, **new_ids}, records[-1].position)
            if commit_position is not None:
                put(b"commit", pack(commit_position), db=self._checkpoints)

        self._write_txn(work)
        if merge:
            self._recent_ids = {}
            self._ids_through = records[-1].position
        else:
            self._recent_ids.update(new_ids)

    def _merge_ids(self, txn: lmdb.Transaction, ids: dict, through: int) -> None:
        """Move event ids into the ``event_ids`` db in key order, in bulk: a put per event id
        at random places of a big B-tree would write a page per event; a sorted bulk merge
        writes each touched page once, and keys that start with the stream keep the ids of
        one stream's appends together (few pages touched per stream)."""
        key_of, pack2 = self._stream_key, QQ.pack
        items = sorted([(key_of(stream) + event_id.encode(), pack2(*hit))
                        for (event_id, stream), hit in ids.items()])
        txn.cursor(db=self._ids).putmulti(items)  # one C loop for the whole merge
        txn.put(b"ids", Q.pack(through + 1), db=self._checkpoints)

    def _remove_after(self, position: int) -> None:
        def work(txn: lmdb.Transaction) -> None:
            cursor = txn.cursor(db=self._log)
            if not cursor.set_range(Q.pack(position + 1)):
                return
            records = decode_records(cursor.iternext(keys=False))
            for rec in records:
                skey = self._stream_key(rec.stream)
                txn.delete(skey + Q.pack(rec.version), db=self._streams)
                if rec.position <= self._ids_through:
                    txn.delete(skey + rec.event_id.encode(), db=self._ids)
                txn.delete(Q.pack(rec.position), db=self._log)
            if position < self._ids_through:
                txn.put(b"ids", Q.pack(position + 1), db=self._checkpoints)

        self._write_txn(work)
        self._recent_ids = {key: hit for key, hit in self._recent_ids.items()
                            if hit[1] <= position}
        self._ids_through = min(self._ids_through, position)

    def _save_commit_position(self, position: int) -> None:
        self._write_txn(lambda txn: txn.put(b"commit", Q.pack(position), db=self._checkpoints))

    def _save_vote(self, vote: Vote) -> None:
        value = msgpack.packb([vote.term, vote.candidate_id])
        self._write_txn(lambda txn: txn.put(b"vote", value, db=self._checkpoints))

    def _read_raw(self, after_position: int, max_count: int,
                  max_bytes: int) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        size = 0
        with self._gate.reading(), self._env.begin() as txn:
            cursor = txn.cursor(db=self._log)
            if not cursor.set_range(Q.pack(after_position + 1)):
                return out
            for key, value in cursor.iternext():
                if out and (len(out) >= max_count or size + len(value) > max_bytes):
                    break
                out.append((Q.unpack(key)[0], value))
                size += len(value)
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self._gate.exclusive():
                self._env.close()
