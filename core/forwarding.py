"""Wire messages for forwarding client writes from any node to the leader.

A follower's gateway sends ``ForwardAppend``/``ForwardDelete`` to the leader over the internal
network; the leader answers ``ForwardReply`` once the write is committed (or failed), carrying
the client reply exactly as the client will see it (``kind`` and ``body`` of
docs/protocol.md), so the follower relays it without re-interpreting it.
"""

from __future__ import annotations

from dataclasses import dataclass

from esnode.core.types import EventData


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _user_ok(user: object) -> bool:
    return user is None or (type(user) is str and 0 < len(user) <= 256)


@dataclass(frozen=True, slots=True)
class ForwardAppend:
    origin: str
    forward_id: int
    stream: str
    expected_version: int
    events: tuple[EventData, ...]
    user: str | None = None
    """Who the receiving node authenticated (None: anonymous, or access control off): the
    leader checks the write again with its own, possibly newer, ACLs."""

    def __post_init__(self) -> None:
        _check(type(self.forward_id) is int and type(self.stream) is str and self.stream != ""
               and type(self.expected_version) is int and isinstance(self.events, tuple)
               and len(self.events) > 0 and all(isinstance(e, EventData) for e in self.events)
               and _user_ok(self.user), "malformed ForwardAppend")


@dataclass(frozen=True, slots=True)
class ForwardDelete:
    origin: str
    forward_id: int
    stream: str
    expected_version: int
    tombstone: bool
    user: str | None = None

    def __post_init__(self) -> None:
        _check(type(self.forward_id) is int and type(self.stream) is str and self.stream != ""
               and type(self.expected_version) is int and type(self.tombstone) is bool
               and _user_ok(self.user), "malformed ForwardDelete")


@dataclass(frozen=True, slots=True)
class ForwardReply:
    sender_id: str
    forward_id: int
    kind: str
    body: dict

    def __post_init__(self) -> None:
        _check(type(self.forward_id) is int and self.kind in ("ok", "error")
               and isinstance(self.body, dict), "malformed ForwardReply")


FORWARD_MESSAGES = (ForwardAppend, ForwardDelete, ForwardReply)

SENDER_FIELDS = ("candidate_id", "voter_id", "leader_id", "replica_id", "sender_id", "origin")
"""The field of each cluster message that names its sender: the shell checks it against the
peer the transport received the message from (a node cannot speak for another)."""


def claimed_sender(message: object) -> str | None:
    for name in SENDER_FIELDS:
        value = getattr(message, name, None)
        if value is not None:
            return value
    return None
