"""What the client hands back and takes in, beyond ``esnode.core.types``: the ``new_event``
helper and the typed results of ``cluster_info`` and ``ping``."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from esnode.core.persistent import GroupSettings
from esnode.core.types import EventData


def new_event(event_type: str, data: Any = b"", metadata: Any = b"", id: str | uuid.UUID | None = None,  # noqa: A002
              is_json: bool | None = None) -> EventData:
    """An ``EventData`` ready to append.

    ``data`` and ``metadata`` may be ``bytes`` (sent as they are) or anything JSON can encode
    (a dict, list, str, number: encoded as compact UTF-8 JSON). ``is_json`` defaults to True
    unless ``data`` is bytes. ``id`` defaults to a fresh uuid4; give your own to make retries
    idempotent across processes.
    """
    if not isinstance(event_type, str) or not event_type:
        raise ValueError("event_type must be a non-empty string")
    if is_json is None:
        is_json = not isinstance(data, (bytes, bytearray, memoryview))
    event_id = str(uuid.UUID(str(id))) if id is not None else str(uuid.uuid4())
    return EventData(event_id, event_type, _payload(data), _payload(metadata), is_json)


def _payload(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if value is None:
        return b""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One cluster member as the node sees it (docs/protocol.md, ``cluster_info``)."""

    name: str
    state: str
    alive: bool
    external: tuple[str, int] | None
    epoch: int = 0
    writer_position: int = -1
    commit_position: int = -1
    priority: int = 0

    @classmethod
    def from_wire(cls, raw: dict) -> MemberInfo:
        ext = raw.get("external")
        return cls(raw["name"], raw["state"], bool(raw.get("alive", False)),
                   (ext[0], ext[1]) if ext else None, raw.get("epoch", 0),
                   raw.get("writer_position", -1), raw.get("commit_position", -1),
                   raw.get("priority", 0))


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """The answering node's view of the cluster; ``leader`` is a member name or None."""

    cluster: str
    node: str
    leader: str | None
    members: tuple[MemberInfo, ...]
    state: str = ""
    incarnation: str | None = None
    """The answering node's run: it changes when the node restarts."""

    @classmethod
    def from_wire(cls, body: dict) -> ClusterInfo:
        return cls(body["cluster"], body["node"], body.get("leader"),
                   tuple(MemberInfo.from_wire(m) for m in body["members"]), body.get("state", ""),
                   body.get("incarnation"))


@dataclass(frozen=True, slots=True)
class Pong:
    """A ping's answer: the node's name and state (``Leader``, ``Follower``, ...)."""

    node: str
    state: str
    incarnation: str | None = None
    """The node's run: it changes when the node restarts."""


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """A persistent subscription group as the node describes it. ``live``: its state
    machine runs on this (leader) node, and the counters below are filled in."""

    stream: str
    group: str
    settings: GroupSettings
    live: bool = False
    consumers: int = 0
    in_flight: int = 0
    ready: int = 0
    checkpoint: int = -1
    cursor: int | None = None
    parked: int = 0

    @classmethod
    def from_wire(cls, body: dict) -> GroupStatus:
        return cls(body["stream"], body["group"], GroupSettings.from_wire(body["settings"]),
                   body.get("live", False), body.get("consumers", 0), body.get("in_flight", 0),
                   body.get("ready", 0), body.get("checkpoint", -1), body.get("cursor"),
                   body.get("parked", 0))
