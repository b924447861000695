"""The event store's shared vocabulary: events, expected versions, outcomes and errors.

Everything here is plain data, shared by storage, the node's actors, the wire codec and the
client. Record types are NamedTuples rather than dataclasses on purpose: reads decode hundreds
of thousands of records per second and ``tuple.__new__`` is several times cheaper than a
dataclass ``__init__``; requests and outcomes are frozen, slotted dataclasses validated on
construction.
"""

from __future__ import annotations

import datetime as _dt
import json as _json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack

# --- expected versions (Event Store's numeric codes, so they travel as plain ints) -----------
ANY = -2
"""No concurrency check."""
NO_STREAM = -1
"""The stream must not exist (or be soft-deleted)."""
STREAM_EXISTS = -4
"""The stream (or its metadata stream) must exist."""

EXPECTED_VERSION_NAMES = {ANY: "any", NO_STREAM: "no_stream", STREAM_EXISTS: "stream_exists"}

ALL_STREAM = "$all"
METADATA_PREFIX = "$$"
TOMBSTONE_TYPE = "$streamDeleted"
METADATA_TYPE = "$metadata"
EPOCH_STREAM = "$epoch-information"
TRUNCATE_BEFORE_DELETED = 9223372036854775807
"""``$tb`` value written by a soft delete (Event Store's Int64.MaxValue)."""


def expected_version_name(expected: int) -> str:
    """Human form of an expected version, for error messages."""
    return EXPECTED_VERSION_NAMES.get(expected, str(expected))


def metadata_stream_of(stream: str) -> str:
    return METADATA_PREFIX + stream


def is_system_stream(stream: str) -> bool:
    return stream.startswith("$")


# --- events ---------------------------------------------------------------------------------
class EventData(NamedTuple):
    """An event proposed by a client. ``event_id`` is a canonical lowercase UUID string."""

    event_id: str
    event_type: str
    data: bytes = b""
    metadata: bytes = b""
    is_json: bool = True


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


class RecordedEvent(NamedTuple):
    """An event as stored: ``position`` is its place in the global log ($all order);
    ``created`` is the server's UTC creation time in microseconds since the Unix epoch."""

    event_id: str
    stream: str
    version: int
    event_type: str
    data: bytes
    metadata: bytes
    is_json: bool
    created: int
    position: int

    def json(self) -> Any:
        """``data`` decoded as JSON (``ValueError`` if it is not JSON)."""
        return _json.loads(self.data)

    @property
    def created_at(self) -> _dt.datetime:
        """``created`` as an aware UTC ``datetime``."""
        return _EPOCH + _dt.timedelta(microseconds=self.created)


_new = tuple.__new__
_unpackb = msgpack.unpackb


def decode_records(values: Iterable[bytes]) -> list[RecordedEvent]:
    """The read hot loop: stored values (msgpack arrays of the fields) to RecordedEvents."""
    unpackb = _unpackb
    return [_new(RecordedEvent, unpackb(v, use_list=False)) for v in values]


class EncodedEvents(Sequence):
    """A read page's records as stored: ``values[i]`` is the msgpack encoding of a
    RecordedEvent (an array of its nine fields), ``positions[i]`` its log position.

    The wire codec splices ``values`` into a reply as they are (no decode, no re-encode:
    the stored value already is the wire encoding); everything else sees a sequence of
    RecordedEvents, decoded once, on first use."""

    __slots__ = ("values", "positions", "_decoded")

    def __init__(self, values: list[bytes], positions: Sequence[int]) -> None:
        self.values = values
        self.positions = positions
        self._decoded: list[RecordedEvent] | None = None

    def decoded(self) -> list[RecordedEvent]:
        if self._decoded is None:
            self._decoded = decode_records(self.values)
        return self._decoded

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index):
        if type(index) is slice:  # still as stored: a reversed page is spliced as well
            return EncodedEvents(self.values[index], self.positions[index])
        if self._decoded is not None:
            return self._decoded[index]
        return _new(RecordedEvent, _unpackb(self.values[index], use_list=False))

    def __iter__(self):
        return iter(self.decoded())

    def __reversed__(self):
        return reversed(self.decoded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EncodedEvents):
            return self.values == other.values
        return isinstance(other, (list, tuple)) and self.decoded() == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EncodedEvents({self.decoded()!r})"


# --- requests handed to storage (one group commit takes many of them) ----------------------
@dataclass(frozen=True, slots=True)
class AppendRequest:
    stream: str
    expected_version: int
    events: tuple[EventData, ...]


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    """Soft delete (``tombstone=False``) or hard delete of a stream."""

    stream: str
    expected_version: int
    tombstone: bool = False


WriteRequest = AppendRequest | DeleteRequest


# --- outcomes ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AppendSuccess:
    """``first_version``/``last_version`` of the batch and ``position`` of its last record.
    ``idempotent`` is True when the batch had been written before and nothing new was written."""

    first_version: int
    last_version: int
    position: int
    idempotent: bool = False


@dataclass(frozen=True, slots=True)
class DeleteSuccess:
    position: int


# --- errors: each has a stable wire code and carries what the caller needs ------------------
class EsError(Exception):
    """Base of every error esnode reports to a caller. ``code`` is stable and goes on the wire."""

    code = "error"

    def details(self) -> dict:
        return {}


class WrongExpectedVersion(EsError):
    code = "wrong_expected_version"

    def __init__(self, stream: str, expected: int, current: int):
        super().__init__(
            f"wrong expected version for stream {stream!r}: expected "
            f"{expected_version_name(expected)}, current {expected_version_name(current)}"
        )
        self.stream, self.expected, self.current = stream, expected, current

    def details(self) -> dict:
        return {"stream": self.stream, "expected": self.expected, "current": self.current}


class StreamDeleted(EsError):
    code = "stream_deleted"

    def __init__(self, stream: str):
        super().__init__(f"stream {stream!r} is deleted")
        self.stream = stream

    def details(self) -> dict:
        return {"stream": self.stream}


class StreamNotFound(EsError):
    code = "stream_not_found"

    def __init__(self, stream: str):
        super().__init__(f"stream {stream!r} not found")
        self.stream = stream

    def details(self) -> dict:
        return {"stream": self.stream}


class IdempotencyConflict(EsError):
    """A batch whose event ids partly match an earlier write: neither a clean retry nor new."""

    code = "idempotency_conflict"

    def __init__(self, stream: str, message: str):
        super().__init__(f"stream {stream!r}: {message}")
        self.stream = stream

    def details(self) -> dict:
        return {"stream": self.stream}


class BadRequest(EsError):
    code = "bad_request"


class TooLarge(EsError):
    code = "too_large"


class StorageFull(EsError):
    """The disk is full: the write was not made and the store is consistent."""

    code = "storage_full"


class NotLeader(EsError):
    code = "not_leader"

    def __init__(self, leader: tuple[str, int] | None, message: str = "this node is not the leader"):
        super().__init__(message)
        self.leader = leader

    def details(self) -> dict:
        return {"leader": list(self.leader) if self.leader else None}


class NotReady(EsError):
    code = "not_ready"


class NoQuorum(EsError):
    code = "no_quorum"


class OutcomeUnknown(EsError):
    """The request may or may not have taken effect (timeout, leader change, lost connection).
    Retrying an append with the same event ids is safe."""

    code = "outcome_unknown"


class Unavailable(EsError):
    """No node could be reached."""

    code = "unavailable"


class TooBusy(EsError):
    """A per-connection limit (requests in flight, subscriptions) was reached; the request
    was not executed. Read the answers already owed, then send more."""

    code = "too_busy"


class GroupNotFound(EsError):
    """No persistent subscription group of that name on that stream."""

    code = "group_not_found"


class GroupExists(EsError):
    """A persistent subscription group of that name already exists on that stream."""

    code = "group_exists"


class NotAuthenticated(EsError):
    """No user, an unknown user or a wrong password (one message for both, so that a caller
    cannot learn which user names exist). HTTP 401."""

    code = "not_authenticated"


class AccessDenied(EsError):
    """An authenticated user the stream's ACL (or the default ACL) does not allow. HTTP 403."""

    code = "access_denied"


ERRORS_BY_CODE: dict[str, type[EsError]] = {
    cls.code: cls
    for cls in (
        EsError, WrongExpectedVersion, StreamDeleted, StreamNotFound, IdempotencyConflict,
        BadRequest, TooLarge, StorageFull, NotLeader, NotReady, NoQuorum, OutcomeUnknown,
        Unavailable, TooBusy, GroupNotFound, GroupExists, NotAuthenticated, AccessDenied,
    )
}

AppendOutcome = AppendSuccess | EsError
DeleteOutcome = DeleteSuccess | EsError
WriteOutcome = AppendSuccess | DeleteSuccess | EsError


# --- read results ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StreamSlice:
    """A page of a stream. ``next_version`` is where to continue in the same direction;
    ``is_end`` says the read reached the end (forwards: the head; backwards: version 0);
    ``last_version`` is the stream's current last version."""

    stream: str
    events: list[RecordedEvent] | EncodedEvents
    next_version: int
    last_version: int
    is_end: bool


@dataclass(frozen=True, slots=True)
class AllSlice:
    """A page of the global log. ``next_position`` is where to continue (forwards: inclusive,
    backwards: exclusive, as Event Store's $all reads)."""

    events: list[RecordedEvent] | EncodedEvents
    next_position: int
    is_end: bool


@dataclass(frozen=True, slots=True)
class StreamMetadata:
    """A stream's metadata: reserved keys parsed, every custom key kept as given in ``raw``."""

    stream: str
    version: int  # version of the metadata stream, -1 when none was ever written
    raw: dict = field(default_factory=dict)

    @property
    def max_count(self) -> int | None:
        return self.raw.get("$maxCount")

    @property
    def max_age(self) -> int | None:
        return self.raw.get("$maxAge")

    @property
    def truncate_before(self) -> int | None:
        return self.raw.get("$tb")


# --- storage limits ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StorageLimits:
    """What one append may carry; over a limit the request fails with ``BadRequest`` (names)
    or ``TooLarge`` (counts and sizes), naming the limit. Sizes count an event's type (UTF-8)
    plus its data plus its metadata, as Event Store does."""

    max_stream_name_bytes: int = 1000
    max_append_events: int = 10_000
    max_event_bytes: int = 16 * 1024 * 1024
    max_append_bytes: int = 64 * 1024 * 1024


# --- replication support -----------------------------------------------------------------------
class Epoch(NamedTuple):
    """A leader term: ``number`` increases with every elected leader; ``start_position`` is
    the log position of the epoch's first record."""

    number: int
    start_position: int
    leader_id: str


class Vote(NamedTuple):
    """The last election vote a node cast, made durable before it is sent."""

    term: int
    candidate_id: str
