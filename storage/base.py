"""What both backends share: the write path (group commit with per-request outcomes), the read
rules, replication support and checkpoints, over a few storage primitives.

A backend provides
- ``_read_view()``: a context manager yielding a consistent ``View`` of committed data (any
  thread); ``_writer_view()``: the same for the writer thread's planning;
- ``_commit(records, values, commit_position)``: store records and their index entries in
  one durable transaction;
- ``_remove_after(position)``, ``_save_commit_position(p)``, ``_save_vote(v)``,
  ``_read_raw(after, count, max_bytes)``.

Writes are planned first against an overlay (``_Batch``) of the committed state, so later
requests of one ``write`` see earlier ones and a failed request leaves no trace; then every
record of the call is committed at once.
"""

from __future__ import annotations

import bisect
import json
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from esnode.core.types import (
    ALL_STREAM,
    EPOCH_STREAM,
    METADATA_TYPE,
    TOMBSTONE_TYPE,
    TRUNCATE_BEFORE_DELETED,
    AllSlice,
    AppendRequest,
    AppendSuccess,
    BadRequest,
    DeleteRequest,
    DeleteSuccess,
    Epoch,
    EncodedEvents,
    EsError,
    EventData,
    IdempotencyConflict,
    RecordedEvent,
    StorageLimits,
    StreamDeleted,
    StreamMetadata,
    StreamNotFound,
    StreamSlice,
    Vote,
    WriteOutcome,
    WriteRequest,
    metadata_stream_of,
)
from esnode.storage.rules import (
    EMPTY_META,
    TOMBSTONE_VERSION,
    Head,
    age_cutoff,
    check_append,
    check_expected,
    check_expected_value,
    check_stream_name,
    decode_record,
    encode_record,
    encode_metadata,
    epoch_fields,
    first_visible,
    head_after,
    head_with_meta,
    is_clean_retry,
    metadata_target,
    parse_metadata_lenient,
)

_new = tuple.__new__
_HEAD_CACHE_LIMIT = 200_000


class View(Protocol):
    """Committed data as of one moment (an LMDB read transaction, or the memory store)."""

    def stream_last(self, stream: str) -> tuple[int, int, int]:
        """(last real version or -1, its position or -1, position of the stream's tombstone or
        -1): the positions let a read bounded by the commit position tell what it may see."""

    def stream_records(self, stream: str, first: int, count: int) -> list[RecordedEvent]:
        """``count`` records of ``stream`` from version ``first`` up (they must exist)."""

    def position_of(self, stream: str, version: int) -> int: ...

    def find_event(self, event_id: str, stream: str) -> tuple[int, int] | None:
        """(version, position) of ``event_id`` in ``stream``, if written there."""

    def any_known(self, event_ids: list[str], stream: str) -> bool:
        """Whether any of ``event_ids`` was written to ``stream``."""

    def log_records(self, first: int, count: int) -> list[RecordedEvent]:
        """Up to ``count`` records from position ``first`` up."""

    def log_values(self, first: int, count: int) -> list[bytes]:
        """``log_records``, as stored (undecoded)."""

    def stream_values(self, stream: str, first: int, count: int
                      ) -> tuple[Sequence[int], list[bytes]]:
        """``stream_records`` as stored (undecoded), with their positions."""


def load_head(view: View, stream: str, up_to: int | None = None) -> Head:
    """A stream's head derived from the indexes alone (so truncation needs no undo log).

    With ``up_to``, the head as it was when the log ended at that position: the last version,
    tombstone and metadata (hence soft delete, ``$tb``, ``$maxCount``, ``$maxAge``) written
    after it do not count. Reads pass the commit position, so a leader never answers with a
    delete or a metadata change it has written but not committed. Cheap: the latest records'
    positions come with the index lookups already made; only a head written past ``up_to``
    takes a short search back."""
    last, last_position, tomb = view.stream_last(stream)
    if up_to is not None:
        if last_position > up_to:
            last = last_at_or_before(view, stream, last, up_to)
        if tomb > up_to:
            tomb = -1
    meta_version, meta = load_metadata(view, stream, up_to)
    return _new(Head, (last, tomb >= 0, meta_version, meta))


def load_metadata(view: View, stream: str, up_to: int | None = None) -> tuple[int, dict]:
    """(version of the stream's metadata stream, -1 if none; its parsed content), as of
    ``up_to`` (see ``load_head``)."""
    meta_stream = metadata_stream_of(stream)
    version, position, _ = view.stream_last(meta_stream)
    if up_to is not None and position > up_to:
        version = last_at_or_before(view, meta_stream, version, up_to)
    if version < 0:
        return -1, EMPTY_META
    return version, parse_metadata_lenient(view.stream_records(meta_stream, version, 1)[0].data)


def last_at_or_before(view: View, stream: str, last: int, position: int) -> int:
    """Highest version of ``stream`` whose record is at or before ``position`` (-1: none),
    ``last``'s being after it. Gallops back from the end (an uncommitted tail is short), then
    bisects: positions grow with versions."""
    bad, step = last, 1
    good = last - 1
    while good >= 0 and view.position_of(stream, good) > position:
        bad, step = good, step * 2
        good = last - step
    good = max(good, -1)
    while bad - good > 1:
        mid = (good + bad) // 2
        if view.position_of(stream, mid) <= position:
            good = mid
        else:
            bad = mid
    return good


def _epoch_position(epoch: Epoch) -> int:
    return epoch.start_position


def _without_epochs(values: list[bytes], positions: range, epochs: list[Epoch], i: int,
                    high: int) -> tuple[list[bytes], list[int]]:
    """A stored page of the log (``values`` at ``positions``) without the records of
    ``epochs[i:]`` below ``high``, found by their positions: nothing is decoded."""
    hidden = set()
    for epoch in epochs[i:]:
        if epoch.start_position >= high:
            break
        hidden.add(epoch.start_position)
    kept = [k for k, p in enumerate(positions) if p not in hidden]
    return [values[k] for k in kept], [positions[k] for k in kept]


class _Batch:
    """The records one ``write`` call adds, and the state they lead to (an overlay)."""

    __slots__ = ("store", "view", "heads", "ids", "records", "epochs", "next_position")

    def __init__(self, store: StoreBase, view: View):
        self.store = store
        self.view = view
        self.heads: dict[str, Head] = {}
        self.ids: dict[tuple[str, str], tuple[int, int]] = {}
        self.records: list[RecordedEvent] = []
        self.epochs: list[Epoch] = []
        self.next_position = store._writer_position + 1

    def head(self, stream: str) -> Head:
        head = self.heads.get(stream)
        if head is None:
            head = self.store._cached_head(self.view, stream)
        return head

    def find(self, event_id: str, stream: str) -> tuple[int, int] | None:
        hit = self.ids.get((event_id, stream))
        if hit is None:
            hit = self.view.find_event(event_id, stream)
        return hit

    def any_known(self, event_ids: list[str], stream: str) -> bool:
        ids = self.ids
        return (any((i, stream) in ids for i in event_ids)
                or self.view.any_known(event_ids, stream))

    def add(self, event_id: str, stream: str, version: int, event_type: str, data: bytes,
            metadata: bytes, is_json: bool, created: int) -> int:
        position = self.next_position
        self.add_record(_new(RecordedEvent, (event_id, stream, version, event_type, data,
                                             metadata, is_json, created, position)))
        return position

    def add_record(self, rec: RecordedEvent) -> None:
        self.next_position = rec.position + 1
        self.records.append(rec)
        stream = rec.stream
        self.heads[stream] = head_after(self.head(stream), rec)
        self.ids[(rec.event_id, stream)] = (rec.version, rec.position)
        target = metadata_target(stream)
        if target is not None:
            self.heads[target] = head_with_meta(self.head(target), rec)
        elif stream == EPOCH_STREAM and rec.version != TOMBSTONE_VERSION:
            number, leader = epoch_fields(rec)
            self.epochs.append(Epoch(number, rec.position, leader))


class StoreBase:
    """The ``EventStore`` port over a backend's primitives (see the module docstring)."""

    def __init__(self, limits: StorageLimits | None = None):
        self.limits = limits or StorageLimits()
        self._heads: dict[str, Head] = {}  # writer thread only
        self._epochs: list[Epoch] = []  # replaced, never mutated: readers may hold it
        self._writer_position = -1
        self._commit_position = -1
        self._vote: Vote | None = None
        # Every scavenged record is at or below this position: reads above it may send the
        # stored values as they are (nothing to hide); reads that reach it decode.
        self._scavenged_through = -1

    # --- backend hooks -----------------------------------------------------------------------
    def _read_view(self) -> AbstractContextManager[View]:
        raise NotImplementedError

    def _writer_view(self) -> AbstractContextManager[View]:
        return self._read_view()

    def _commit(self, records: list[RecordedEvent], values: list[bytes] | None,
                commit_position: int | None) -> None:
        raise NotImplementedError

    def _remove_after(self, position: int) -> None:
        raise NotImplementedError

    def _save_commit_position(self, position: int) -> None:
        raise NotImplementedError

    def _save_vote(self, vote: Vote) -> None:
        raise NotImplementedError

    def _save_scavenged(self, position: int) -> None:
        """Raise the scavenged mark to ``position`` (durably, in a durable backend), before
        any scavenged record at or below it can be read."""
        self._scavenged_through = max(self._scavenged_through, position)

    def _read_raw(self, after_position: int, max_count: int,
                  max_bytes: int) -> list[tuple[int, bytes]]:
        raise NotImplementedError

    def _load_state(self) -> None:
        """After opening: epochs from the log's epoch records."""
        with self._read_view() as view:
            last = view.stream_last(EPOCH_STREAM)[0]
            records = view.stream_records(EPOCH_STREAM, 0, last + 1) if last >= 0 else []
        self._epochs = [Epoch(number, r.position, leader)
                        for r in records for number, leader in [epoch_fields(r)]]

    # --- writes ----------------------------------------------------------------------------
    def _cached_head(self, view: View, stream: str) -> Head:
        head = self._heads.get(stream)
        if head is None:
            if len(self._heads) >= _HEAD_CACHE_LIMIT:
                self._heads.clear()
            head = self._heads[stream] = load_head(view, stream)
        return head

    def write(self, requests: Sequence[WriteRequest], now_us: int,
              before_commit: Callable[[list[tuple[int, bytes]]], None] | None = None
              ) -> list[WriteOutcome]:
        with self._writer_view() as view:
            batch = _Batch(self, view)
            outcomes: list[WriteOutcome] = []
            for request in requests:
                try:
                    if type(request) is AppendRequest:
                        outcomes.append(self._plan_append(batch, request, now_us))
                    elif type(request) is DeleteRequest:
                        outcomes.append(self._plan_delete(batch, request, now_us))
                    else:
                        raise BadRequest(f"not a write request: {type(request).__name__}")
                except EsError as exc:
                    outcomes.append(exc)
        if batch.records:
            values = None
            if before_commit is not None:
                values = [encode_record(rec) for rec in batch.records]
                before_commit([(rec.position, v) for rec, v in zip(batch.records, values)])
            self._commit(batch.records, values, None)
            self._apply(batch)
        return outcomes

    def _plan_append(self, batch: _Batch, req: AppendRequest, now_us: int) -> AppendSuccess:
        check_append(req, self.limits)
        stream, events = req.stream, req.events
        head = batch.head(stream)
        if head.tombstoned:
            raise StreamDeleted(stream)
        hit = batch.find(events[0][0], stream)
        if hit is not None:  # the decision goes by the first event id, as Event Store's
            found = [hit] + [batch.find(e[0], stream) for e in events[1:]]
            if is_clean_retry(found):
                return AppendSuccess(hit[0], found[-1][0], found[-1][1], True)
            raise IdempotencyConflict(
                stream, "the batch partly matches events written before (same event ids, other "
                "order or other events): retry exactly the batch first sent, or use new ids")
        check_expected(stream, req.expected_version, head)
        if len(events) > 1 and batch.any_known([e[0] for e in events[1:]], stream):
            raise IdempotencyConflict(  # a new first id, but a later one was written before
                stream, "the batch reuses event ids written to this stream before, but is not "
                "a retry of an earlier batch (its first event id is new)")
        version = head.last
        if head.soft_deleted:  # recreate: only the new events are visible
            meta = dict(head.meta)
            meta["$tb"] = version + 1
            batch.add(str(uuid.uuid4()), metadata_stream_of(stream), head.meta_version + 1,
                      METADATA_TYPE, encode_metadata(meta), b"", True, now_us)
        first = version + 1
        if metadata_target(stream) is not None:  # updates another stream's head: the long way
            for event_id, event_type, data, metadata, is_json in events:
                version += 1
                position = batch.add(event_id, stream, version, event_type, data, metadata,
                                     is_json, now_us)
            return AppendSuccess(first, version, position)
        # the hot path: the same effects as batch.add per event, without a call per event
        position = batch.next_position
        records, ids = batch.records, batch.ids
        for event_id, event_type, data, metadata, is_json in events:
            version += 1
            records.append(_new(RecordedEvent, (event_id, stream, version, event_type, data,
                                                metadata, is_json, now_us, position)))
            ids[(event_id, stream)] = (version, position)
            position += 1
        batch.next_position = position
        head = batch.head(stream)
        batch.heads[stream] = _new(Head, (version, False, head.meta_version, head.meta))
        return AppendSuccess(first, version, position - 1)

    def _plan_delete(self, batch: _Batch, req: DeleteRequest, now_us: int) -> DeleteSuccess:
        stream = req.stream
        check_stream_name(stream, self.limits)
        if stream == EPOCH_STREAM:
            raise BadRequest(f"{EPOCH_STREAM!r} cannot be deleted")
        check_expected_value(req.expected_version)
        head = batch.head(stream)
        check_expected(stream, req.expected_version, head)
        if req.tombstone:
            position = batch.add(str(uuid.uuid4()), stream, TOMBSTONE_VERSION, TOMBSTONE_TYPE,
                                 b"", b"", False, now_us)
        else:
            meta = dict(head.meta)
            meta["$tb"] = TRUNCATE_BEFORE_DELETED
            position = batch.add(str(uuid.uuid4()), metadata_stream_of(stream),
                                 head.meta_version + 1, METADATA_TYPE, encode_metadata(meta),
                                 b"", True, now_us)
        return DeleteSuccess(position)

    def _apply(self, batch: _Batch) -> None:
        """Publish a committed batch to the in-memory state."""
        self._heads.update(batch.heads)
        if batch.epochs:
            self._epochs = self._epochs + batch.epochs
        self._writer_position = batch.next_position - 1

    def set_metadata(self, stream: str, expected_version: int, metadata: dict,
                     now_us: int) -> WriteOutcome:
        try:
            data = json.dumps(metadata, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            return BadRequest(f"stream metadata must be JSON: {exc}")
        event = EventData(str(uuid.uuid4()), METADATA_TYPE, data, b"", True)
        return self.write([AppendRequest(metadata_stream_of(stream), expected_version,
                                         (event,))], now_us)[0]

    # --- reads -----------------------------------------------------------------------------
    def read_stream(self, stream: str, from_version: int, max_count: int,
                    backwards: bool = False, up_to_position: int | None = None,
                    now_us: int | None = None, encoded: bool = False) -> StreamSlice:
        if type(stream) is not str or not stream or stream == ALL_STREAM:
            raise BadRequest(f"cannot read stream {stream!r} (use read_all for $all)")
        if type(max_count) is not int or max_count < 0:
            raise BadRequest(f"max_count must be an integer >= 0, got {max_count!r}")
        if type(from_version) is not int or from_version < (-1 if backwards else 0):
            raise BadRequest(f"invalid from_version {from_version!r}")
        with self._read_view() as view:
            head = load_head(view, stream, up_to_position)
            if head.tombstoned:
                raise StreamDeleted(stream)
            last = head.last
            if last < 0 or head.soft_deleted:
                raise StreamNotFound(stream)
            first = first_visible(head.meta, last)
            if backwards:
                start = last if from_version < 0 or from_version > last else from_version
                count = max(0, min(max_count, start - max(first, 0) + 1))
                low = start - count + 1
                next_version = low - 1
                is_end = next_version < first
            else:
                low = start = max(from_version, first)
                count = max(0, min(max_count, last - start + 1))
                next_version = start + count
                is_end = next_version > last
            cutoff = age_cutoff(head.meta, now_us)
            if encoded and cutoff is None and count:
                positions, values = view.stream_values(stream, low, count)
                if positions[0] > self._scavenged_through:  # nothing to hide: as stored
                    if backwards:
                        values.reverse()
                        positions = positions[::-1]
                    return StreamSlice(stream, EncodedEvents(values, positions), next_version,
                                       last, is_end)
            events = view.stream_records(stream, low, count) if count else []
            if backwards:
                events.reverse()
        if cutoff is not None:
            events = [e for e in events if e.created >= cutoff]
        events = [e for e in events if e.data is not None]  # scavenged (only when the
        # metadata was relaxed afterwards: scavenge takes only what reads hide)
        return StreamSlice(stream, events, next_version, last, is_end)

    def read_all(self, from_position: int, max_count: int, backwards: bool = False,
                 up_to_position: int | None = None, encoded: bool = False) -> AllSlice:
        if type(max_count) is not int or max_count < 0:
            raise BadRequest(f"max_count must be an integer >= 0, got {max_count!r}")
        if type(from_position) is not int or from_position < (-1 if backwards else 0):
            raise BadRequest(f"invalid from_position {from_position!r}")
        end = self._writer_position  # read before the view: the view holds at least this much
        if up_to_position is not None and up_to_position < end:
            end = up_to_position
        if backwards:
            high = end + 1 if from_position < 0 or from_position > end else from_position
            low = max(0, high - max_count)
            next_position, is_end = low, low == 0
        else:
            low = from_position
            high = low + max(0, min(max_count, end - low + 1))
            next_position, is_end = high, high > end
        epochs = self._epochs
        i = bisect.bisect_left(epochs, low, key=_epoch_position) if epochs else 0
        has_epoch = i < len(epochs) and epochs[i].start_position < high
        with self._read_view() as view:
            if encoded and low > self._scavenged_through:  # nothing scavenged: as stored
                values = view.log_values(low, high - low) if high > low else []
                n = len(values)
                positions: Sequence[int] = range(low, low + n)
                if has_epoch:  # hidden: the epochs know their records' positions
                    values, positions = _without_epochs(values, positions, epochs, i, high)
                if backwards:
                    values.reverse()
                    positions = positions[::-1]
                else:
                    next_position = low + n
                    is_end = next_position > end
                return AllSlice(EncodedEvents(values, positions), next_position, is_end)
            records = view.log_records(low, high - low) if high > low else []
        if backwards:
            records.reverse()
        else:
            next_position = low + len(records)
            is_end = next_position > end
        if has_epoch:  # $all reads hide epoch records, as Event Store's do
            records = [r for r in records if r.stream != EPOCH_STREAM]
        records = [r for r in records if r.data is not None]  # scavenged: gone, as in Event Store
        return AllSlice(records, next_position, is_end)

    def get_metadata(self, stream: str, up_to_position: int | None = None) -> StreamMetadata:
        check_stream_name(stream, self.limits)
        with self._read_view() as view:
            tomb = view.stream_last(stream)[2]
            if tomb >= 0 and (up_to_position is None or tomb <= up_to_position):
                raise StreamDeleted(stream)
            version, meta = load_metadata(view, stream, up_to_position)
        return StreamMetadata(stream, version, dict(meta))

    def stream_version(self, stream: str, up_to_position: int | None = None) -> int:
        with self._read_view() as view:
            last, position, _ = view.stream_last(stream)
            if up_to_position is not None and position > up_to_position:
                last = last_at_or_before(view, stream, last, up_to_position)
            return last

    # --- positions -----------------------------------------------------------------------------
    @property
    def writer_position(self) -> int:
        return self._writer_position

    @property
    def commit_position(self) -> int:
        return self._commit_position

    # --- replication support -----------------------------------------------------------------
    def read_raw(self, after_position: int, max_count: int,
                 max_bytes: int = 1 << 20) -> list[tuple[int, bytes]]:
        if after_position >= self._writer_position or max_count <= 0:
            return []
        return self._read_raw(max(after_position, -1), max_count, max_bytes)

    def write_raw(self, records: Sequence[tuple[int, bytes]],
                  commit_position: int | None = None) -> None:
        commit = None
        if commit_position is not None and commit_position > self._commit_position:
            commit = commit_position
        if not records:
            if commit is not None:
                self.set_commit_position(commit)
            return
        expected = self._writer_position + 1
        scavenged = -1
        with self._writer_view() as view:
            batch = _Batch(self, view)
            heads, ids, out = batch.heads, batch.ids, batch.records
            for position, raw in records:
                rec = decode_record(raw)
                if rec.data is None:  # a record the leader scavenged
                    scavenged = position
                if position != expected or rec.position != position:
                    raise ValueError(f"record at position {position} (encoded {rec.position}) "
                                     f"does not continue the log at {expected}")
                expected += 1
                stream, version = rec.stream, rec.version
                if version != TOMBSTONE_VERSION and version != batch.head(stream).last + 1:
                    raise ValueError(f"record at position {position} has version {version} "
                                     f"of {stream!r}: not the next one")
                if version == TOMBSTONE_VERSION or stream.startswith("$"):
                    batch.add_record(rec)  # tombstones, metadata and epochs: the long way
                    continue
                # the hot path: what add_record does for an ordinary event, inline
                head = batch.head(stream)
                heads[stream] = _new(Head, (version, head.tombstoned, head.meta_version,
                                            head.meta))
                ids[(rec.event_id, stream)] = (version, position)
                out.append(rec)
                batch.next_position = expected
        if scavenged > self._scavenged_through:
            self._save_scavenged(scavenged)
        self._commit(batch.records, [raw for _, raw in records], commit)
        self._apply(batch)
        if commit is not None:
            self._commit_position = commit

    def truncate_after(self, position: int) -> None:
        if position < -1:
            raise ValueError(f"cannot truncate after position {position}")
        if position < self._commit_position:
            raise ValueError(f"refusing to truncate after {position}: below the commit position "
                             f"{self._commit_position}")
        if position >= self._writer_position:
            return
        self._remove_after(position)
        self._heads.clear()
        self._epochs = [e for e in self._epochs if e.start_position <= position]
        self._writer_position = position

    def set_commit_position(self, position: int) -> None:
        if position > self._commit_position:
            self._save_commit_position(position)
            self._commit_position = position

    def epochs(self) -> list[Epoch]:
        return list(self._epochs)

    def write_epoch(self, number: int, leader_id: str, now_us: int) -> Epoch:
        if type(number) is not int or type(leader_id) is not str:
            raise ValueError("an epoch needs an int number and a str leader id")
        if self._epochs and number <= self._epochs[-1].number:
            raise ValueError(f"epoch {number} does not follow epoch {self._epochs[-1].number}")
        data = json.dumps({"number": number, "leader_id": leader_id}).encode()
        with self._writer_view() as view:
            batch = _Batch(self, view)
            position = batch.add(str(uuid.uuid4()), EPOCH_STREAM,
                                 batch.head(EPOCH_STREAM).last + 1, EPOCH_STREAM, data, b"",
                                 True, now_us)
        self._commit(batch.records, None, None)
        self._apply(batch)
        return self._epochs[-1]

    def last_vote(self) -> Vote | None:
        return self._vote

    def write_vote(self, vote: Vote) -> None:
        term, candidate = vote
        vote = Vote(int(term), str(candidate))
        self._save_vote(vote)
        self._vote = vote

    def close(self) -> None:
        pass

