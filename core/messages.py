"""Typed client-facing messages (the external protocol's vocabulary).

Requests are validated on construction (``BadRequest`` on a wrong field) so nothing malformed
travels past the codec. Replies are typed too; the codec maps each to its wire form
(docs/protocol.md). Internal messages between actors live next to the actors that use them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from esnode.core.filters import DEFAULT_CHECKPOINT_INTERVAL, EventFilter
from esnode.core.persistent import NACK_ACTIONS, GroupSettings
from esnode.core.types import (
    ALL_STREAM,
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    BadRequest,
    EsError,
    EventData,
    RecordedEvent,
)

PROTOCOL_VERSION = 1

MAX_READ_COUNT = 10_000
"""Largest page a single read may ask for."""

MAX_SUBSCRIPTION_CREDIT = 10_000
"""Largest number of events a subscriber may have outstanding (unacknowledged) at once."""


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise BadRequest(message)


def _is_int(value: Any) -> bool:
    return type(value) is int


def _check_stream(stream: Any, allow_all: bool = False) -> None:
    _check(type(stream) is str and stream != "", "stream must be a non-empty string")
    if not allow_all:
        _check(stream != ALL_STREAM, "'$all' cannot be written or deleted")


def _check_expected(expected: Any) -> None:
    _check(_is_int(expected) and (expected >= NO_STREAM or expected in (ANY, STREAM_EXISTS)),
           "expected_version must be an integer >= -1, or -2 (any), or -4 (stream exists)")


def _check_count(count: Any) -> None:
    _check(_is_int(count) and 1 <= count <= MAX_READ_COUNT,
           f"max_count must be an integer between 1 and {MAX_READ_COUNT}")


# --- requests ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Append:
    stream: str
    expected_version: int
    events: tuple[EventData, ...]
    requires_leader: bool = False

    def __post_init__(self) -> None:
        _check_stream(self.stream)
        _check_expected(self.expected_version)
        _check(isinstance(self.events, tuple) and len(self.events) > 0,
               "an append needs at least one event")


@dataclass(frozen=True, slots=True)
class Delete:
    stream: str
    expected_version: int = ANY
    tombstone: bool = False
    requires_leader: bool = False

    def __post_init__(self) -> None:
        _check_stream(self.stream)
        _check_expected(self.expected_version)
        _check(type(self.tombstone) is bool, "tombstone must be a boolean")


@dataclass(frozen=True, slots=True)
class SetMetadata:
    stream: str
    metadata: dict
    expected_version: int = ANY
    requires_leader: bool = False

    def __post_init__(self) -> None:
        _check_stream(self.stream)
        _check_expected(self.expected_version)
        _check(isinstance(self.metadata, dict) and all(type(k) is str for k in self.metadata),
               "metadata must be a map with string keys")
        try:  # stored as a JSON event: refuse here what JSON cannot hold (found by fuzzing)
            json.dumps(self.metadata, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise BadRequest(f"metadata must be JSON (maps, arrays, strings, numbers, "
                             f"booleans, null): {exc}") from None


@dataclass(frozen=True, slots=True)
class ReadStream:
    stream: str
    from_version: int = 0
    max_count: int = 500
    backwards: bool = False
    requires_leader: bool = False

    def __post_init__(self) -> None:
        _check_stream(self.stream)
        _check(_is_int(self.from_version) and self.from_version >= -1,
               "from_version must be an integer >= 0 (or -1: from the end, backwards)")
        _check_count(self.max_count)
        _check(type(self.backwards) is bool, "backwards must be a boolean")


@dataclass(frozen=True, slots=True)
class ReadAll:
    from_position: int = 0
    max_count: int = 1000
    backwards: bool = False
    requires_leader: bool = False
    filter: EventFilter | None = None
    """Server-side filter: only matching events come back (``next_position`` says where the
    scan stopped, which may be past the last event returned)."""

    def __post_init__(self) -> None:
        _check(self.filter is None or type(self.filter) is EventFilter,
               "filter must be an EventFilter")
        _check(_is_int(self.from_position) and self.from_position >= -1,
               "from_position must be an integer >= 0 (or -1: from the end, backwards)")
        _check_count(self.max_count)
        _check(type(self.backwards) is bool, "backwards must be a boolean")


@dataclass(frozen=True, slots=True)
class GetMetadata:
    stream: str
    requires_leader: bool = False

    def __post_init__(self) -> None:
        _check_stream(self.stream)


FROM_START = "start"
FROM_END = "end"


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Catch-up subscription to a stream or ``$all``. ``from_`` is ``"start"``, ``"end"`` or a
    version/position: delivery starts AFTER it (exclusive, as Event Store). ``credit`` is how
    many events the server may send before the client grants more."""

    stream: str
    from_: int | str = FROM_START
    credit: int = 1000
    filter: EventFilter | None = None
    """``$all`` only: deliver matching events; a ``checkpoint`` push every
    ``checkpoint_interval`` scanned records says how far the scan got."""
    checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL

    def __post_init__(self) -> None:
        _check_stream(self.stream, allow_all=True)
        _check(self.filter is None or (type(self.filter) is EventFilter
                                       and self.stream == ALL_STREAM),
               "a filter applies to '$all' subscriptions only")
        _check(_is_int(self.checkpoint_interval) and 1 <= self.checkpoint_interval <= 1_000_000,
               "checkpoint_interval must be an integer between 1 and 1000000")
        _check(self.from_ in (FROM_START, FROM_END) or (_is_int(self.from_) and self.from_ >= 0),
               "from must be 'start', 'end' or an integer >= 0")
        _check(_is_int(self.credit) and 1 <= self.credit <= MAX_SUBSCRIPTION_CREDIT,
               f"credit must be an integer between 1 and {MAX_SUBSCRIPTION_CREDIT}")


@dataclass(frozen=True, slots=True)
class Credit:
    """Grant a subscription ``n`` more events (flow control)."""

    subscription: int
    n: int

    def __post_init__(self) -> None:
        _check(_is_int(self.subscription), "subscription must be an integer")
        _check(_is_int(self.n) and 1 <= self.n <= MAX_SUBSCRIPTION_CREDIT,
               f"n must be an integer between 1 and {MAX_SUBSCRIPTION_CREDIT}")


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    subscription: int

    def __post_init__(self) -> None:
        _check(_is_int(self.subscription), "subscription must be an integer")


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Log this connection in (docs/security.md): answered by the transport, never passed on;
    the password is kept out of reprs so it never reaches a log line."""

    user: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        _check(type(self.user) is str and type(self.password) is str,
               "user and password must be strings")


# --- persistent subscription groups (docs/subscriptions.md) --------------------------------
def _check_group(stream: Any, group: Any) -> None:
    _check_stream(stream, allow_all=True)
    _check(type(group) is str and 0 < len(group) <= 256 and "::" not in group,
           "group must be a non-empty string (at most 256 characters, no '::')")


def _check_positions(positions: Any) -> None:
    _check(isinstance(positions, tuple) and 0 < len(positions) <= MAX_SUBSCRIPTION_CREDIT
           and all(_is_int(p) and p >= 0 for p in positions),
           f"positions must be 1 to {MAX_SUBSCRIPTION_CREDIT} event positions")


@dataclass(frozen=True, slots=True)
class CreateGroup:
    stream: str
    group: str
    settings: GroupSettings

    def __post_init__(self) -> None:
        _check_group(self.stream, self.group)


@dataclass(frozen=True, slots=True)
class UpdateGroup:
    """``changes``: the settings to change (the others keep their values)."""

    stream: str
    group: str
    changes: dict

    def __post_init__(self) -> None:
        _check_group(self.stream, self.group)
        GroupSettings.from_wire(self.changes)  # valid on their own


@dataclass(frozen=True, slots=True)
class DeleteGroup:
    stream: str
    group: str

    def __post_init__(self) -> None:
        _check_group(self.stream, self.group)


@dataclass(frozen=True, slots=True)
class ListGroups:
    stream: str | None = None

    def __post_init__(self) -> None:
        if self.stream is not None:
            _check_stream(self.stream, allow_all=True)


@dataclass(frozen=True, slots=True)
class GroupInfo:
    stream: str
    group: str

    def __post_init__(self) -> None:
        _check_group(self.stream, self.group)


@dataclass(frozen=True, slots=True)
class ConnectGroup:
    """Join a group as a consumer that takes at most ``credit`` events in flight at once
    (an ack, nack or timeout frees a place: no credit messages)."""

    stream: str
    group: str
    credit: int = 100

    def __post_init__(self) -> None:
        _check_group(self.stream, self.group)
        _check(_is_int(self.credit) and 1 <= self.credit <= MAX_SUBSCRIPTION_CREDIT,
               f"credit must be an integer between 1 and {MAX_SUBSCRIPTION_CREDIT}")


@dataclass(frozen=True, slots=True)
class GroupAck:
    """Settle events (by position) delivered to this connection; answered once durable."""

    subscription: int
    positions: tuple[int, ...]

    def __post_init__(self) -> None:
        _check(_is_int(self.subscription), "subscription must be an integer")
        _check_positions(self.positions)


@dataclass(frozen=True, slots=True)
class GroupNack:
    subscription: int
    positions: tuple[int, ...]
    action: str = "retry"
    reason: str = ""

    def __post_init__(self) -> None:
        _check(_is_int(self.subscription), "subscription must be an integer")
        _check_positions(self.positions)
        _check(self.action in NACK_ACTIONS,
               f"action must be one of {', '.join(NACK_ACTIONS)}")
        _check(type(self.reason) is str and len(self.reason) <= 1000,
               "reason must be a string of at most 1000 characters")


@dataclass(frozen=True, slots=True)
class LeaveGroup:
    subscription: int

    def __post_init__(self) -> None:
        _check(_is_int(self.subscription), "subscription must be an integer")


@dataclass(frozen=True, slots=True)
class ReplayParked:
    """Put the group's parked events back in line (each once), oldest first."""

    stream: str
    group: str
    max_count: int = MAX_READ_COUNT

    def __post_init__(self) -> None:
        _check_group(self.stream, self.group)
        _check_count(self.max_count)


GROUP_REQUESTS = (CreateGroup, UpdateGroup, DeleteGroup, ListGroups, GroupInfo, ConnectGroup,
                  GroupAck, GroupNack, LeaveGroup, ReplayParked)
"""Handled by the persistent subscriptions actor."""

ADMIN_ACTIONS = ("resign", "set_priority", "shutdown", "scavenge", "scavenge_stop",
                 "scavenge_status", "stats")


@dataclass(frozen=True, slots=True)
class Admin:
    """An operator's request to the node that receives it (docs/operations.md); ``value``:
    the priority of ``set_priority``."""

    action: str
    value: int | None = None

    def __post_init__(self) -> None:
        if self.action not in ADMIN_ACTIONS:
            raise BadRequest(f"unknown admin action {self.action!r} (known: "
                             f"{', '.join(ADMIN_ACTIONS)})")
        if self.action == "set_priority" and type(self.value) is not int:
            raise BadRequest("set_priority needs an integer value")


ClientRequest = (Append | Delete | SetMetadata | ReadStream | ReadAll | GetMetadata | Subscribe
                 | Credit | Unsubscribe | ClusterInfo | Ping | CreateGroup | UpdateGroup
                 | DeleteGroup | ListGroups | GroupInfo | ConnectGroup | GroupAck | GroupNack
                 | LeaveGroup | ReplayParked | Admin)
WRITE_REQUESTS = (Append, Delete, SetMetadata)


# --- replies ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer: ``body`` is the operation's result map (docs/protocol.md)."""

    body: dict


@dataclass(frozen=True, slots=True)
class ErrorReply:
    error: EsError


@dataclass(frozen=True, slots=True)
class EventsPushed:
    """Events delivered to a subscription (each costs one credit)."""

    events: list[RecordedEvent]


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """The subscription has delivered everything that existed and is now live."""

    position: int


@dataclass(frozen=True, slots=True)
class GroupEventsPushed:
    """Events delivered to a group consumer, each with its retry count (one credit each)."""

    events: list[tuple[RecordedEvent, int]]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A filtered subscription scanned the log up to ``position`` (inclusive) and delivered
    every match up to there: a consumer may save it as where to resume."""

    position: int


@dataclass(frozen=True, slots=True)
class SubscriptionDropped:
    error: EsError


@dataclass(frozen=True, slots=True)
class RelayedReply:
    """A reply produced by another node (the leader, for a forwarded write), relayed as is."""

    kind: str
    body: dict


ServerMessage = (Reply | ErrorReply | EventsPushed | GroupEventsPushed | CaughtUp | Checkpoint
                 | SubscriptionDropped | RelayedReply)


@dataclass(frozen=True, slots=True)
class ClientEnvelope:
    """A request with its reply address: the transport-level peer and the client's
    correlation id; ``principal`` is who sent it (``core.acl.Principal``) when the face
    authenticated the peer, ``None`` when it did not (anonymous, when authorization is on)."""

    peer: bytes
    corr: int
    request: Any
    principal: Any = None
