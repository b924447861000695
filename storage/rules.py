"""The write and read rules of the event store, in one place for both backends.

Pure functions over plain values: no I/O, no clock, no randomness. ``base.StoreBase`` drives
them; the LMDB and memory backends only store and find records.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

import msgpack

from esnode.core.types import (
    ALL_STREAM,
    ANY,
    EPOCH_STREAM,
    METADATA_PREFIX,
    NO_STREAM,
    STREAM_EXISTS,
    TRUNCATE_BEFORE_DELETED,
    AppendRequest,
    BadRequest,
    EventData,
    RecordedEvent,
    StorageLimits,
    StreamDeleted,
    TooLarge,
    WrongExpectedVersion,
)

TOMBSTONE_VERSION = TRUNCATE_BEFORE_DELETED
"""Stream version given to a tombstone record (Event Store's ``EventNumber.DeletedStream``):
it sorts after every real version, so a stream's last index entry tells if it is deleted."""

EMPTY_META: dict = {}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
_new = tuple.__new__


# --- stream heads ------------------------------------------------------------------------------
class Head(NamedTuple):
    """What the write rules need to know about a stream. Immutable: replaced, never mutated.

    ``last``: last real version (-1: none); ``tombstoned``: hard-deleted;
    ``meta_version``: last version of ``$$stream`` (-1: none); ``meta``: its parsed content."""

    last: int
    tombstoned: bool
    meta_version: int
    meta: dict

    @property
    def soft_deleted(self) -> bool:
        return self.meta.get("$tb") == TRUNCATE_BEFORE_DELETED


NO_HEAD = Head(-1, False, -1, EMPTY_META)


def head_after(head: Head, rec: RecordedEvent) -> Head:
    """The stream's head once ``rec`` (a record of that stream) is written."""
    if rec.version == TOMBSTONE_VERSION:
        return _new(Head, (head.last, True, head.meta_version, head.meta))
    return _new(Head, (rec.version, head.tombstoned, head.meta_version, head.meta))


def head_with_meta(head: Head, rec: RecordedEvent) -> Head:
    """The head of the stream whose metadata stream received ``rec``."""
    if rec.version == TOMBSTONE_VERSION:
        return head
    return _new(Head, (head.last, head.tombstoned, rec.version, parse_metadata_lenient(rec.data)))


def metadata_target(stream: str) -> str | None:
    """``S`` for a metadata stream ``$$S``, else None."""
    return stream[2:] if stream.startswith(METADATA_PREFIX) and len(stream) > 2 else None


# --- metadata ----------------------------------------------------------------------------------
_POSITIVE_KEYS = ("$maxCount", "$maxAge")


def parse_metadata(data: bytes) -> dict:
    """Parse and check a ``$metadata`` event's data; ``BadRequest`` when it is not a JSON object
    or a reserved key has a wrong value. Custom keys are kept as given."""
    try:
        meta = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"stream metadata must be a JSON object: {exc}") from None
    if not isinstance(meta, dict):
        raise BadRequest("stream metadata must be a JSON object")
    for key in _POSITIVE_KEYS:
        if key in meta and not _is_int(meta[key], 1):
            raise BadRequest(f"metadata {key} must be an integer >= 1, got {meta[key]!r}")
    if "$tb" in meta and not _is_int(meta["$tb"], 0):
        raise BadRequest(f"metadata $tb must be an integer >= 0, got {meta['$tb']!r}")
    return meta


def parse_metadata_lenient(data: bytes) -> dict:
    """Metadata as stored: anything that does not parse counts as empty (it was checked when
    written; a replicated or legacy record must never stop the node)."""
    try:
        return parse_metadata(data)
    except BadRequest:
        return EMPTY_META


def encode_metadata(meta: dict) -> bytes:
    return json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()


def _is_int(value: object, minimum: int) -> bool:
    return type(value) is int and value >= minimum


def first_visible(meta: dict, last: int) -> int:
    """Lowest version a read may return, from ``$tb`` and ``$maxCount``."""
    first = meta.get("$tb") or 0
    max_count = meta.get("$maxCount")
    if max_count and last - max_count + 1 > first:
        first = last - max_count + 1
    return first


def age_cutoff(meta: dict, now_us: int | None) -> int | None:
    """Oldest ``created`` a read may return under ``$maxAge`` (None: no age limit)."""
    max_age = meta.get("$maxAge")
    if not max_age or now_us is None:
        return None
    return now_us - max_age * 1_000_000


# --- validation --------------------------------------------------------------------------------
def check_stream_name(stream: object, limits: StorageLimits) -> None:
    if type(stream) is not str or not stream:
        raise BadRequest("stream name must be a non-empty string")
    if stream == ALL_STREAM:
        raise BadRequest("'$all' is not a stream that can be written")
    try:
        size = len(stream.encode())
    except UnicodeEncodeError:
        raise BadRequest("stream name is not valid UTF-8") from None
    if size > limits.max_stream_name_bytes:
        raise BadRequest(f"stream name is {size} bytes, over the limit max_stream_name_bytes="
                         f"{limits.max_stream_name_bytes}")


def check_expected_value(expected: object) -> None:
    if type(expected) is not int or (expected < 0 and expected not in (ANY, NO_STREAM,
                                                                        STREAM_EXISTS)):
        raise BadRequest(f"invalid expected version {expected!r}")


_HEX_AS_X = bytes.maketrans(b"0123456789abcdefx", b"xxxxxxxxxxxxxxxx!")  # a hex digit: "x"
_UUID_LINE = b"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\n"
_TUPLES = frozenset((EventData, tuple))


def _checked_ids(events: tuple, max_event: int, max_total: int) -> tuple[str, ...] | None:
    """The event ids when every event passes ``check_append``'s checks of one event and their
    total size is within ``max_total``, checked a field at a time in C loops (a Python loop
    over the events costs twice as much); None when one may not (the caller then checks
    event by event, which raises the precise error)."""
    n = len(events)
    if not set(map(type, events)) <= _TUPLES:
        return None
    try:
        ids, types, datas, metas, flags = zip(*events, strict=True)  # each event: 5 fields
    except ValueError:
        return None
    if (list(map(type, ids)).count(str) != n or list(map(type, types)).count(str) != n
            or list(map(type, datas)).count(bytes) != n
            or list(map(type, metas)).count(bytes) != n
            or list(map(type, flags)).count(bool) != n or not all(types)):
        return None
    try:  # canonical lowercase UUIDs, exactly: a hex digit where the pattern has "x"
        if ("\n".join(ids) + "\n").encode().translate(_HEX_AS_X) != _UUID_LINE * n:
            return None
        total = len("".join(types).encode()) + sum(map(len, datas)) + sum(map(len, metas))
    except UnicodeEncodeError:
        return None
    if total > max_event or total > max_total:  # (within max_event: so is every event)
        return None
    return ids


def check_append(req: AppendRequest, limits: StorageLimits) -> None:
    """Everything about an append that does not depend on stored state."""
    stream = req.stream
    check_stream_name(stream, limits)
    if stream == EPOCH_STREAM:
        raise BadRequest(f"{EPOCH_STREAM!r} is written by the cluster only")
    check_expected_value(req.expected_version)
    events = req.events
    count = len(events)
    if count == 0:
        raise BadRequest("an append needs at least one event")
    if count > limits.max_append_events:
        raise TooLarge(f"append of {count} events is over the limit max_append_events="
                       f"{limits.max_append_events}")
    max_event = limits.max_event_bytes
    ids = _checked_ids(events, max_event, limits.max_append_bytes) if count >= 4 else None
    if ids is None:  # a few events (the loop costs less), or something is wrong (or close to
        # a limit): check event by event
        total = 0
        for e in events:
            if not isinstance(e, tuple) or len(e) != 5:
                raise BadRequest(f"not an EventData: {type(e).__name__}")
            eid, etype, data, meta, is_json = e
            if type(eid) is not str or not _UUID(eid):
                raise BadRequest(f"event id {eid!r} is not a canonical lowercase UUID string")
            if type(etype) is not str or not etype:
                raise BadRequest(f"event {eid}: event type must be a non-empty string")
            if type(data) is not bytes or type(meta) is not bytes or type(is_json) is not bool:
                raise BadRequest(f"event {eid}: data and metadata must be bytes, is_json a bool")
            size = len(etype.encode()) + len(data) + len(meta)
            if size > max_event:
                raise TooLarge(f"event {eid} is {size} bytes, over the limit max_event_bytes="
                               f"{max_event}")
            total += size
        if total > limits.max_append_bytes:
            raise TooLarge(f"append of {total} bytes is over the limit max_append_bytes="
                           f"{limits.max_append_bytes}")
        ids = [e[0] for e in events] if count > 1 else ()
    if count > 1 and len(set(ids)) != count:
        raise BadRequest("an append carries the same event id more than once")
    if metadata_target(stream) is not None:
        for e in events:
            parse_metadata(e.data)


# --- expected version (client-api.md §1.3) ----------------------------------------------------
def check_expected(stream: str, expected: int, head: Head) -> None:
    """Raise ``StreamDeleted`` or ``WrongExpectedVersion`` unless ``expected`` allows a write
    to a stream whose head is ``head``."""
    if head.tombstoned:
        raise StreamDeleted(stream)
    if expected == ANY:
        return
    if expected == NO_STREAM:
        if head.last == -1 or head.soft_deleted:
            return
    elif expected == STREAM_EXISTS:
        if head.soft_deleted:
            raise StreamDeleted(stream)
        if head.last >= 0 or head.meta_version >= 0:
            return
    elif expected == head.last:
        return
    raise WrongExpectedVersion(stream, expected, head.last)


# --- idempotency -------------------------------------------------------------------------------
def is_clean_retry(found: list[tuple[int, int] | None]) -> bool:
    """``found``: for each event id of a batch, (version, position) of the same id already in
    the stream, or None. A clean retry has every id at consecutive versions in batch order."""
    first = found[0]
    if first is None:
        return False
    version = first[0]
    for i, hit in enumerate(found):
        if hit is None or hit[0] != version + i:
            return False
    return True


# --- record encoding ---------------------------------------------------------------------------
# A record is a msgpack array of the RecordedEvent fields in order (position included), so a
# follower rebuilds every index from the bytes alone and a read decodes it with one call.
_packb = msgpack.Packer(use_bin_type=True).pack
_unpackb = msgpack.unpackb


def encode_record(rec: RecordedEvent) -> bytes:
    return _packb(rec)


def is_scavenged(rec: RecordedEvent) -> bool:
    """A record whose data scavenge reclaimed (storage/scavenge.py): it keeps its position,
    stream, version and id, so indexes and replication stay as they were, but no read shows
    it. Its data is nil, which no client can send."""
    return rec.data is None


def decode_record(raw: bytes) -> RecordedEvent:
    """Decode and check one record (used on replicated input, not in read loops)."""
    try:
        fields = _unpackb(raw, use_list=False)
    except Exception as exc:
        raise ValueError(f"undecodable record: {exc}") from None
    if type(fields) is not tuple or len(fields) != len(RecordedEvent._fields):
        raise ValueError("a record must be an array of the RecordedEvent fields")
    rec = _new(RecordedEvent, fields)
    ok = (type(rec.event_id) is str and type(rec.stream) is str and type(rec.version) is int
          and type(rec.event_type) is str and (type(rec.data) is bytes or rec.data is None)
          and type(rec.metadata) is bytes and type(rec.is_json) is bool
          and type(rec.created) is int and type(rec.position) is int)
    if not ok:
        raise ValueError(f"record at {rec.position!r} has a field of the wrong type")
    return rec


def epoch_fields(rec: RecordedEvent) -> tuple[int, str]:
    """(number, leader_id) of an epoch record; ``ValueError`` if it is not one."""
    try:
        data = json.loads(rec.data)
        number, leader = data["number"], data["leader_id"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError(f"bad epoch record at position {rec.position}") from None
    if type(number) is not int or type(leader) is not str:
        raise ValueError(f"bad epoch record at position {rec.position}")
    return number, leader
