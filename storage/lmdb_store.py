"""The durable backend: one LMDB environment, four named databases, fsync on every commit.

| db | key | value |
| --- | --- | --- |
| ``log`` | position (8 bytes big-endian) | the record: msgpack array of the RecordedEvent fields |
| ``streams`` | stream key + version (8 bytes BE) | position (8 bytes BE) |
| ``event_ids`` | stream key + event id (36 ASCII bytes) | version, position (2 x 8 bytes BE) |
| ``checkpoints`` | ``commit`` / ``vote`` / ``ids`` / ``scavenged`` | commit position / msgpack [term, candidate] / first position whose ids are not merged / first position above every scavenged record (8 bytes BE) |

Event ids and stream index entries reach ``event_ids`` and ``streams`` in sorted merges spread
over commits (see ``_merge_step``); until then the log itself is their durable record and
memory holds them (rebuilt from the log tail on open; readers combine both, see
``_read_view``). A Bloom filter
(``IdFilter``) over the ids in ``event_ids`` answers most lookups of fresh ids without touching
the database (rebuilt from ``event_ids`` on open).

The stream key is the UTF-8 name prefixed by its length (2 bytes), or for names over 200
bytes ``FFFF`` + SHA-256 of the name: prefix-free (so a stream's index entries are
contiguous) and short enough for LMDB's 511-byte key limit. A tombstone is indexed at version
``2**63 - 1``, after every real version. Stream heads, metadata and epochs are derived from these
indexes (and cached for the writer), so a truncation needs no undo log.

See docs/storage.md.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice

import lmdb
import msgpack

from esnode.core.types import RecordedEvent, StorageFull, StorageLimits, Vote, decode_records
from esnode.storage.base import StoreBase
from esnode.storage.idfilter import MIN_CAPACITY, IdFilter
from esnode.storage.rules import TOMBSTONE_VERSION, encode_record

Q = struct.Struct(">Q")
QQ = struct.Struct(">QQ")
_TOMB_SUFFIX = Q.pack(TOMBSTONE_VERSION)
_LEN = struct.Struct(">H")
_SHORT_NAME = 200
_NAMEKEY_CACHE_LIMIT = 100_000
DEFAULT_MAP_SIZE = 1 << 30
_NEARLY_FULL = 64 << 20
_MIN_RUN = 8  # consecutive log records read with a cursor walk rather than getmulti
_DIRECT_RUN = 16  # a stream's records in one commit whose index entries are written at once
_FILTER_STEP = 512  # least ids of ``event_ids`` added to the filter per commit after opening


def _maybe(event_id: str) -> bool:
    return True


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


class _Run:
    """One stream's index entries of one generation, in memory until merged into ``streams``
    (see ``LmdbEventStore._merge_step``). Only the writer appends (the position first, then
    the version); readers on other threads bound what they look at by the position their
    view started at, so an entry being added is never half seen."""

    __slots__ = ("versions", "positions", "tomb")

    def __init__(self) -> None:
        self.versions: list[int] = []
        self.positions: list[int] = []
        self.tomb = -1  # the tombstone's position

    def visible(self, limit: int) -> int:
        """How many entries are at or before position ``limit``."""
        return bisect.bisect_right(self.positions, limit, 0, len(self.versions))

    def span(self, low: int, high: int, n: int) -> tuple[int, int]:
        """Indexes of the versions in [low, high) among the first ``n`` entries."""
        versions = self.versions
        return bisect.bisect_left(versions, low, 0, n), bisect.bisect_left(versions, high, 0, n)


Index = tuple[dict[str, _Run], dict[str, _Run]]
"""The stream index entries not (surely) in ``streams``: (recent, merging) generations."""


class _LmdbView:
    """The ``View`` primitives over one LMDB transaction, and the stream index entries held in
    memory (captured before the transaction began: what they lack, it has)."""

    __slots__ = ("txn", "key", "log", "streams", "ids", "recent", "maybe", "limit", "runs")

    def __init__(self, store: LmdbEventStore, txn: lmdb.Transaction,
                 overlay: tuple[int, Index]):
        self.txn = txn
        self.limit, index = overlay
        self.runs = (index[1], index[0])  # older generation first
        self.key = store._stream_key
        # only the writer thread calls find_event / any_known (ids not merged, or partly):
        self.recent = (store._recent_ids, store._merging_ids)
        # False: certainly not in ``event_ids`` (until the filter is filled, always "maybe")
        self.maybe = store._id_filter.may_contain if store._filter_from is None else _maybe
        self.log, self.streams, self.ids = store._log, store._streams, store._ids

    def stream_last(self, stream: str) -> tuple[int, int, int]:
        """The runs' newest entry when they have one: they hold a stream's newest versions
        (a batch goes to ``streams`` at once only while the stream has none waiting). A
        reader that captured its runs before a merge ended and a batch of the stream was
        written, and began its snapshot after, sees the stream as of its runs: an earlier,
        whole prefix of it (the writer's own views never race so)."""
        last, position, tomb = self._stored_last(stream)
        limit = self.limit
        for gen in self.runs:  # newer entries override
            run = gen.get(stream)
            if run is not None:
                n = run.visible(limit)
                if n:
                    last, position = run.versions[n - 1], run.positions[n - 1]
                if 0 <= run.tomb <= limit:
                    tomb = run.tomb
        return last, position, tomb

    def _stored_last(self, stream: str) -> tuple[int, int, int]:
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
        return decode_records(self.stream_values(stream, first, count)[1])

    def stream_values(self, stream: str, first: int, count: int
                      ) -> tuple[Sequence[int], list[bytes]]:
        """Versions ``first`` .. ``first + count - 1`` (those that exist): the older ones
        from ``streams``, those of the generations in memory from their runs."""
        end, limit = first + count, self.limit
        held: list[int] = []  # positions of the versions the runs hold, from ``low`` on
        low = end
        for gen in self.runs:
            run = gen.get(stream)
            if run is None:
                continue
            n = run.visible(limit)
            if not n:
                continue
            if run.versions[0] < low:
                low = max(first, run.versions[0])
            i, j = run.span(first, end, n)
            held += run.positions[i:j]
        if low >= end:
            return self._stored_values(stream, first, count)
        if low > first:
            positions, values = self._stored_values(stream, first, low - first)
            positions = list(positions)
        else:
            positions, values = [], []
        keys = [Q.pack(p) for p in held]
        return positions + held, values + self._log_values(keys, tuple(held))

    def _stored_values(self, stream: str, first: int, count: int
                       ) -> tuple[Sequence[int], list[bytes]]:
        key = self.key(stream)
        cursor = self.txn.cursor(db=self.streams)
        if not cursor.set_range(key + Q.pack(first)):
            return (), []
        if count >= _MIN_RUN:  # positions grow with versions: when the last is count - 1
            # after the first, the page is one run of the log (a stream written in batches)
            # and the index entries between need not be read
            low = Q.unpack(cursor.value())[0]
            high = self.txn.get(key + Q.pack(first + count - 1), db=self.streams)
            if high is not None and Q.unpack(high)[0] - low == count - 1:
                log = self.txn.cursor(db=self.log)
                log.set_key(cursor.value())
                return range(low, low + count), list(islice(log.iternext(keys=False), count))
        keys = list(islice(cursor.iternext(keys=False), count))  # log keys (positions)
        positions = struct.unpack(f">{len(keys)}Q", b"".join(keys))
        return positions, self._log_values(keys, positions)

    def _log_values(self, keys: list[bytes], positions: tuple[int, ...]) -> list[bytes]:
        """The log values at ``keys`` (increasing ``positions``). Runs of consecutive
        positions (a stream written in batches) are read by walking a log cursor, which costs
        much less than a B-tree search per record; scattered positions by one ``getmulti``."""
        n = len(keys)
        log = self.txn.cursor(db=self.log)
        if n >= _MIN_RUN and positions[-1] - positions[0] + 1 <= 4 * n:  # maybe runs
            return self._runs(log, keys, positions)
        return [v for _, v in log.getmulti(keys)]

    @staticmethod
    def _runs(log: lmdb.Cursor, keys: list[bytes], positions: tuple[int, ...]) -> list[bytes]:
        out: list[bytes] = []
        scattered: list[int] = []  # indexes in ``out`` still to fill by getmulti
        n, start = len(keys), 0
        for i in range(1, n + 1):
            if i < n and positions[i] == positions[i - 1] + 1:
                continue
            if i - start >= _MIN_RUN:
                log.set_key(keys[start])
                out.extend(islice(log.iternext(keys=False), i - start))
            else:
                scattered.extend(range(len(out), len(out) + i - start))
                out.extend(keys[start:i])  # placeholders: the keys
            start = i
        if scattered:
            for index, (_, value) in zip(scattered, log.getmulti([out[i] for i in scattered])):
                out[index] = value
        return out

    def position_of(self, stream: str, version: int) -> int:
        for gen in self.runs:
            run = gen.get(stream)
            if run is not None:
                n = run.visible(self.limit)
                i = bisect.bisect_left(run.versions, version, 0, n)
                if i < n and run.versions[i] == version:
                    return run.positions[i]
        return Q.unpack(self.txn.get(self.key(stream) + Q.pack(version), db=self.streams))[0]

    def find_event(self, event_id: str, stream: str) -> tuple[int, int] | None:
        for recent in self.recent:
            ids = recent.get(stream)
            if ids is not None:
                hit = ids.get(event_id)
                if hit is not None:
                    return hit
        if not self.maybe(event_id):
            return None
        hit = self.txn.get(self.key(stream) + event_id.encode(), db=self.ids)
        return QQ.unpack(hit) if hit is not None else None

    def any_known(self, event_ids: list[str], stream: str) -> bool:
        for recent in self.recent:
            ids = recent.get(stream)
            if ids is not None and any(i in ids for i in event_ids):
                return True
        key = self.key(stream)  # (one C loop over many ids costs less than the filter's)
        cursor = self.txn.cursor(db=self.ids)
        return bool(cursor.getmulti([key + i.encode() for i in event_ids]))

    def log_records(self, first: int, count: int) -> list[RecordedEvent]:
        return decode_records(self.log_values(first, count))

    def log_values(self, first: int, count: int) -> list[bytes]:
        cursor = self.txn.cursor(db=self.log)
        if not cursor.set_range(Q.pack(first)):
            return []
        return list(islice(cursor.iternext(keys=False), count))


class LmdbEventStore(StoreBase):
    """Durable event store in an LMDB environment at ``path`` (a directory, created if needed).

    ``map_size`` is only the starting size: the map doubles whenever a transaction fills it."""

    ids_merge_threshold = 50_000
    """Event ids kept in memory (and found again in the log on open) before a merge starts."""
    ids_merge_step = 64
    """Least event ids merged by one commit while a merge runs (at least 1.25 times the
    commit's own records, so a merge ends before the next one is due)."""

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
        # Event ids of the records after the ``ids`` checkpoint, by stream: not yet in
        # ``event_ids`` (recent), or being merged into it (a frozen generation, see _merge_step).
        self._recent_ids: dict[str, dict[str, tuple[int, int]]] = {}
        self._recent_count = 0
        self._merging_ids: dict[str, dict[str, tuple[int, int]]] = {}
        self._merge_queue: list[str] = []  # streams of _merging_ids not merged, last first
        self._merging_through = -1
        self._ids_through = -1
        # The stream index entries of the same generations (``streams`` gets them in the
        # same merge steps), and the position through which readers may use them.
        self._index: Index = ({}, {})
        self._indexed_through = -1
        self._id_filter = IdFilter()  # every id in ``event_ids`` (and maybe some removed ones)
        self._filter_from: bytes | None = None  # next ``event_ids`` key to add to the filter
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
            mark = txn.get(b"scavenged", db=self._checkpoints)
            merged = txn.get(b"ids", db=self._checkpoints)
            self._ids_through = Q.unpack(merged)[0] - 1 if merged else -1
            if cursor.set_range(Q.pack(self._ids_through + 1)):
                self._remember_ids(decode_records(cursor.iternext(keys=False)))
            self._indexed_through = self._writer_position
            entries = txn.stat(self._ids)["entries"]
            self._id_filter = IdFilter(max(MIN_CAPACITY, 2 * entries))
            self._filter_from = b"" if entries else None  # filled by later commits
        if mark is not None:
            self._scavenged_through = Q.unpack(mark)[0] - 1
        else:  # a new store, or one from before the mark: anything written may be scavenged
            self._save_scavenged(self._writer_position)
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
            # Before the transaction begins: an entry the writer adds from here on is past
            # the limit, and one it merges and drops is in the snapshot.
            overlay = (self._indexed_through, self._index)
            txn = self._env.begin()
            try:
                yield _LmdbView(self, txn, overlay)
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
        step, index_step, taken = self._merge_step(len(records))
        log, pack = self._log, Q.pack
        pkeys = [pack(rec[8]) for rec in records]  # positions
        direct, waiting = self._index_plan(records, pkeys)

        def work(txn: lmdb.Transaction) -> None:
            put = txn.put
            # one C loop per database (a put call per record costs about twice as much)
            txn.cursor(db=log).putmulti(zip(pkeys, values), append=True)
            if direct:
                txn.cursor(db=self._streams).putmulti(direct)
            if step:  # one C loop per index, in key order
                txn.cursor(db=self._ids).putmulti(step)
                txn.cursor(db=self._streams).putmulti(index_step)
            if taken and taken == len(self._merge_queue):  # the merge's last step
                put(b"ids", pack(self._merging_through + 1), db=self._checkpoints)
            if commit_position is not None:
                put(b"commit", pack(commit_position), db=self._checkpoints)

        self._write_txn(work)
        if taken:
            self._merged(taken)
        self._remember_ids(records, waiting)
        self._indexed_through = records[-1].position  # readers may use their entries now
        if self._filter_from is not None:
            self._fill_filter(max(_FILTER_STEP, 8 * len(records)))

    def _index_plan(self, records: list[RecordedEvent], pkeys: list[bytes]
                    ) -> tuple[list[tuple[bytes, bytes]], list[RecordedEvent]]:
        """The ``streams`` entries a commit writes itself, and the records whose entries wait
        in memory for the merge. A run of at least ``_DIRECT_RUN`` records of one stream (a
        batch append) fills index pages by itself: written now, unless the stream has
        entries waiting (those must stay the newest of the stream); shorter runs wait."""
        recent, merging = self._index
        key_of, pack = self._stream_key, Q.pack
        direct: list[tuple[bytes, bytes]] = []
        waiting: list[RecordedEvent] = []
        held: set[str] = set()  # streams whose entries wait, from this commit
        start, n = 0, len(records)
        while start < n:
            stream = records[start][1]
            end = start + 1
            while end < n and records[end][1] == stream:
                end += 1
            if end - start >= _DIRECT_RUN and stream not in held and stream not in recent \
                    and stream not in merging:
                key = key_of(stream)
                direct += [(key + pack(records[i][2]), pkeys[i]) for i in range(start, end)]
            else:
                held.add(stream)
                waiting += records[start:end]
            start = end
        return direct, waiting

    def _fill_filter(self, count: int) -> None:
        """Add the next ``count`` ids of ``event_ids`` to the filter (after opening: a store
        opens without reading its whole id index; until the filter holds every id, lookups
        ask the index). Ids merged meanwhile are added by the merge itself."""
        with self._gate.reading(), self._env.begin() as txn:
            cursor = txn.cursor(db=self._ids)
            if not cursor.set_range(self._filter_from):
                self._filter_from = None
                return
            keys = list(islice(cursor.iternext(values=False), count + 1))
        self._id_filter.add_all([key[-36:].decode() for key in keys[:count]])  # stream key + id
        self._filter_from = keys[count] if len(keys) > count else None

    def _merge_step(self, new_records: int
                    ) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]], int]:
        """The ``event_ids`` and ``streams`` entries the next commit writes, and how many
        streams they cover.

        Ids and stream index entries wait in memory until ``ids_merge_threshold`` records
        are there; then they are frozen as one generation and merged a few streams per
        commit, in key order (both keys start with the stream key): every commit carries a
        small part of the merge, and a sorted merge writes each touched B-tree page once per
        generation, where a put per record at random places would dirty a page per record
        (64 single-event appends to 64 streams: 64 leaf pages of each index, most of a
        commit's bytes). The ``ids`` checkpoint moves past the generation in its last step's
        transaction; a crash before that only means merging some entries again after
        reopening (the log is their durable record until then)."""
        queue = self._merge_queue
        if not queue:
            return [], [], 0
        quota = max(self.ids_merge_step, new_records + new_records // 4)
        if self._recent_count + new_records >= self.ids_merge_threshold:
            quota = self.ids_merge_threshold * 2  # the next generation is due: finish this one
        key_of, pack, pack2, merging = self._stream_key, Q.pack, QQ.pack, self._merging_ids
        runs = self._index[1]
        add_to_filter = self._id_filter.add_all  # before the commit: a superset is safe
        step: list[tuple[bytes, bytes]] = []
        index_step: list[tuple[bytes, bytes]] = []
        taken = 0
        for stream in reversed(queue):  # streams in key order, each stream's ids sorted:
            key, ids = key_of(stream), merging[stream]  # the step is in key order
            step.extend([(key + event_id.encode(), pack2(*ids[event_id]))
                         for event_id in sorted(ids)])  # (UTF-8 keeps code point order)
            add_to_filter(ids)
            run = runs.get(stream)
            if run is not None:
                index_step.extend([(key + pack(version), pack(position))  # versions ascending
                                   for version, position in zip(run.versions, run.positions)])
                if run.tomb >= 0:
                    index_step.append((key + _TOMB_SUFFIX, pack(run.tomb)))  # after them all
            taken += 1
            if len(step) >= quota:
                break
        return step, index_step, taken

    def _merged(self, taken: int) -> None:
        """After the commit that wrote the last ``taken`` streams of the merge queue."""
        queue = self._merge_queue
        del queue[-taken:]
        if not queue:  # every entry of the generation is in the snapshots begun from now on
            self._merging_ids = {}
            self._index = (self._index[0], {})
            self._ids_through = self._merging_through

    def _remember_ids(self, records: list[RecordedEvent],
                      waiting: list[RecordedEvent] | None = None) -> None:
        """Keep the ids of newly durable records, and the stream index entries of
        ``waiting`` (by default all of them; readers use the entries once
        ``_indexed_through`` says so); start a merge when enough are waiting."""
        recent, runs = self._recent_ids, self._index[0]
        ids: dict[str, tuple[int, int]] = {}
        stream = None
        for rec in records:
            if rec.stream != stream:
                stream = rec.stream
                ids = recent.get(stream)
                if ids is None:
                    ids = recent[stream] = {}
            ids[rec.event_id] = (rec.version, rec.position)
        run = _Run()
        stream = None
        for rec in records if waiting is None else waiting:
            if rec.stream != stream:
                stream = rec.stream
                run = runs.get(stream)
                if run is None:
                    run = runs[stream] = _Run()
            version, position = rec.version, rec.position
            if version == TOMBSTONE_VERSION:
                run.tomb = position
            else:  # the position first: a reader bounds by position, counts by version
                run.positions.append(position)
                run.versions.append(version)
        self._recent_count += len(records)
        if self._recent_count >= self.ids_merge_threshold and not self._merge_queue:
            key_of = self._stream_key
            self._index = ({}, runs)
            self._merging_ids, self._recent_ids, self._recent_count = recent, {}, 0
            self._merge_queue = sorted(recent, key=key_of, reverse=True)
            self._merging_through = records[-1].position

    def _remove_after(self, position: int) -> None:
        self._indexed_through = min(self._indexed_through, position)  # first: readers stop
        # using entries of the records removed

        def work(txn: lmdb.Transaction) -> None:
            cursor = txn.cursor(db=self._log)
            if not cursor.set_range(Q.pack(position + 1)):
                return
            records = decode_records(cursor.iternext(keys=False))
            for rec in records:
                skey = self._stream_key(rec.stream)
                txn.delete(skey + Q.pack(rec.version), db=self._streams)
                # merged, or merged in part of a merge (maybe before a crash): look every id up
                id_key = skey + rec.event_id.encode()
                hit = txn.get(id_key, db=self._ids)
                if hit is not None and QQ.unpack(hit)[1] == rec.position:
                    txn.delete(id_key, db=self._ids)
                txn.delete(Q.pack(rec.position), db=self._log)
            if position < self._ids_through:
                txn.put(b"ids", Q.pack(position + 1), db=self._checkpoints)

        self._write_txn(work)
        # Every id still waiting goes back to recent (a merge in progress restarts later).
        kept = [(stream, event_id, hit) for generation in (self._merging_ids, self._recent_ids)
                for stream, ids in generation.items() for event_id, hit in ids.items()
                if hit[1] <= position]
        self._recent_ids, self._recent_count = {}, len(kept)
        for stream, event_id, hit in kept:
            self._recent_ids.setdefault(stream, {})[event_id] = hit
        self._merging_ids, self._merge_queue = {}, []
        kept_runs: dict[str, _Run] = {}
        for generation in reversed(self._index):  # the older first: versions ascending
            for stream, run in generation.items():
                n = run.visible(position)
                into = kept_runs.get(stream)
                if into is None:
                    into = kept_runs[stream] = _Run()
                into.positions += run.positions[:n]
                into.versions += run.versions[:n]
                if 0 <= run.tomb <= position:
                    into.tomb = run.tomb
        self._index = (kept_runs, {})  # new runs: a reader keeps the ones it began with
        self._ids_through = min(self._ids_through, position)

    def rewrite(self, values: list[tuple[int, bytes]], checkpoint: bytes) -> None:
        """Replace committed records in place and save scavenge's checkpoint, in one short
        durable transaction (storage/scavenge.py). It runs on scavenge's thread between the
        writer's commits; a map resize waits for it (the read gate), never inside it."""
        mark = max((position for position, _ in values), default=-1)
        if mark > self._scavenged_through:  # before any reader can see the records
            self._scavenged_through = mark

        def work(txn: lmdb.Transaction) -> None:
            for position, value in values:
                txn.put(Q.pack(position), value, db=self._log)
            txn.put(b"scavenge", checkpoint, db=self._checkpoints)
            txn.put(b"scavenged", Q.pack(self._scavenged_through + 1), db=self._checkpoints)

        while True:
            with self._gate.reading():
                txn = self._env.begin(write=True)
                try:
                    work(txn)
                    txn.commit()
                    return
                except lmdb.MapFullError:
                    txn.abort()
                except BaseException:
                    txn.abort()
                    raise
            self._grow()

    def scavenge_checkpoint(self) -> bytes | None:
        with self._gate.reading(), self._env.begin() as txn:
            return txn.get(b"scavenge", db=self._checkpoints)

    def live_bytes(self) -> int:
        """Bytes of the pages that hold the log and its indexes (what scavenge frees for
        reuse; the file itself shrinks only in a compacting backup)."""
        with self._gate.reading(), self._env.begin() as txn:
            total = 0
            for db in (self._log, self._streams, self._ids):
                s = txn.stat(db)
                total += (s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]) * s["psize"]
            return total

    def _save_commit_position(self, position: int) -> None:
        self._write_txn(lambda txn: txn.put(b"commit", Q.pack(position), db=self._checkpoints))

    def _save_scavenged(self, position: int) -> None:
        self._scavenged_through = max(self._scavenged_through, position)
        self._write_txn(lambda txn: txn.put(b"scavenged", Q.pack(self._scavenged_through + 1),
                                            db=self._checkpoints))

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
