"""Calls: one request each (validated with the node's own rules, ``core.messages``) together
with the decoder of its reply. No I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from esnode.client.model import ClusterInfo, GroupStatus, Pong
from esnode.core import messages as m
from esnode.core.filters import DEFAULT_CHECKPOINT_INTERVAL, EventFilter
from esnode.core.persistent import GroupSettings
from esnode.core.types import (
    ANY,
    AllSlice,
    AppendSuccess,
    DeleteSuccess,
    EventData,
    RecordedEvent,
    StreamMetadata,
    StreamSlice,
)

DEFAULT_SUBSCRIPTION_WINDOW = 1000
"""Events a subscription may have in flight or buffered before the consumer takes them."""



# --- calls --------------------------------------------------------------------------------------
class Call(NamedTuple):
    """One request: ``op`` and ``args`` go on the wire; ``decode`` turns the ``ok`` body into
    the typed result; ``write`` says an unanswered call has an unknown outcome; ``what``
    names it in error messages."""

    op: str
    args: dict
    decode: Callable[[Any], Any]
    write: bool = False
    what: str = ""
    idempotent: bool = True
    """Sending it again after an unknown outcome cannot do it twice (reads; appends, whose
    event ids the node deduplicates). Deletes and metadata writes are not."""
    retry: bool = True
    """False: never sent again, not even after a refusal (a group ack belongs to one
    connection: on another node it means nothing)."""


_event = RecordedEvent._make
_new = tuple.__new__


def _events(raw: list) -> list[RecordedEvent]:
    """The read hot loop of a client: ``tuple.__new__`` is ~10 % cheaper per event than
    ``RecordedEvent._make`` (no length check: the node sends the nine fields)."""
    return [_new(RecordedEvent, e) for e in raw]


def _as_lists(value: Any) -> Any:
    """A user's own JSON-like value as it was set: replies are unpacked with arrays as tuples
    (client/_protocol.py), users set lists."""
    if type(value) is tuple:
        return [_as_lists(v) for v in value]
    if type(value) is dict:
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def _append_success(body: dict) -> AppendSuccess:
    return AppendSuccess(body["first_version"], body["last_version"], body["position"],
                         body.get("idempotent", False))


def _leader(args: dict, requires_leader: bool) -> dict:
    if requires_leader:
        args["requires_leader"] = True
    return args


def append(stream: str, events: Iterable[EventData] | EventData, expected_version: int = ANY,
           requires_leader: bool = False) -> Call:
    if isinstance(events, EventData):
        events = (events,)
    req = m.Append(stream, expected_version, tuple(events), requires_leader)
    return Call("append", _leader({"stream": stream, "expected_version": expected_version,
                                   "events": req.events}, requires_leader),
                _append_success, True, f"append to {stream!r}")


def read_stream(stream: str, from_version: int = 0, max_count: int = 500,
                backwards: bool = False, requires_leader: bool = False) -> Call:
    m.ReadStream(stream, from_version, max_count, backwards)

    def decode(body: dict) -> StreamSlice:
        return StreamSlice(stream, _events(body["events"]), body["next_version"],
                           body["last_version"], body["is_end"])

    return Call("read_stream", _leader({"stream": stream, "from_version": from_version,
                                        "max_count": max_count, "backwards": backwards},
                                       requires_leader), decode, False, f"read of {stream!r}")


def _all_slice(body: dict) -> AllSlice:
    return AllSlice(_events(body["events"]), body["next_position"], body["is_end"])


def read_all(from_position: int = 0, max_count: int = 1000, backwards: bool = False,
             requires_leader: bool = False, filter: EventFilter | None = None) -> Call:
    m.ReadAll(from_position, max_count, backwards, filter=filter)
    args = {"from_position": from_position, "max_count": max_count, "backwards": backwards}
    if filter is not None:
        args["filter"] = filter.to_wire()
    return Call("read_all", _leader(args, requires_leader), _all_slice, False, "read of $all")


def delete(stream: str, expected_version: int = ANY, tombstone: bool = False,
           requires_leader: bool = False) -> Call:
    m.Delete(stream, expected_version, tombstone)
    return Call("delete", _leader({"stream": stream, "expected_version": expected_version,
                                   "tombstone": tombstone}, requires_leader),
                lambda body: DeleteSuccess(body["position"]), True,
                f"{'tombstone' if tombstone else 'delete'} of {stream!r}", False)


def get_metadata(stream: str, requires_leader: bool = False) -> Call:
    m.GetMetadata(stream)
    return Call("get_metadata", _leader({"stream": stream}, requires_leader),
                lambda b: StreamMetadata(b["stream"], b["version"], _as_lists(b["metadata"])),
                False, f"metadata read of {stream!r}")


def set_metadata(stream: str, metadata: dict, expected_version: int = ANY,
                 requires_leader: bool = False) -> Call:
    m.SetMetadata(stream, metadata, expected_version)
    return Call("set_metadata", _leader({"stream": stream, "metadata": metadata,
                                         "expected_version": expected_version}, requires_leader),
                _append_success, True, f"metadata write of {stream!r}", False)


class Subscribed(NamedTuple):
    """A subscription's confirmation: its id, where it starts (exclusive; ``"end"``
    resolved to a number; None from a node that does not say) and the node's incarnation."""

    id: int
    from_: int | None = None
    incarnation: str | None = None


def _subscribed(body: dict) -> Subscribed:
    return Subscribed(body["subscription"], body.get("from"), body.get("incarnation"))


def subscribe(stream: str, from_: int | str = m.FROM_START,
              window: int = DEFAULT_SUBSCRIPTION_WINDOW, filter: EventFilter | None = None,
              checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL) -> Call:
    m.Subscribe(stream, from_, window, filter, checkpoint_interval)
    args = {"stream": stream, "from": from_, "credit": window}
    if filter is not None:
        args["filter"] = filter.to_wire()
        args["checkpoint_interval"] = checkpoint_interval
    return Call("subscribe", args, _subscribed, False, f"subscription to {stream!r}")


def cluster_info() -> Call:
    return Call("cluster_info", {}, ClusterInfo.from_wire, False, "cluster_info")


def authenticate(user: str, password: str) -> Call:
    """Log the connection in (sent first on every connection when credentials are set)."""
    return Call("authenticate", {"user": user, "password": password}, _ignore, False,
                f"log in as {user!r}")


def ping() -> Call:
    return Call("ping", {}, lambda b: Pong(b["node"], b["state"], b.get("incarnation")),
                False, "ping")


def _ignore(body: Any) -> None:
    return None




# --- persistent subscription groups -------------------------------------------------------------
class GroupEvent(NamedTuple):
    """An event delivered by a persistent subscription group: ``retry_count`` says how often
    it was delivered before (0 the first time). Ack or nack it through the subscription."""

    event: RecordedEvent
    retry_count: int

    @property
    def position(self) -> int:
        return self.event.position


def _group(stream: str, group: str) -> dict:
    m.GroupInfo(stream, group)
    return {"stream": stream, "group": group}


def create_group(stream: str, group: str, settings: GroupSettings) -> Call:
    m.CreateGroup(stream, group, settings)
    return Call("create_group", _group(stream, group) | {"settings": settings.to_wire()},
                _ignore, True, f"creation of group {group!r} on {stream!r}", False)


def update_group(stream: str, group: str, changes: dict) -> Call:
    m.UpdateGroup(stream, group, changes)
    return Call("update_group", _group(stream, group) | {"settings": changes}, _ignore, True,
                f"update of group {group!r} on {stream!r}", False)


def delete_group(stream: str, group: str) -> Call:
    return Call("delete_group", _group(stream, group), _ignore, True,
                f"deletion of group {group!r} on {stream!r}", False)


def list_groups(stream: str | None = None) -> Call:
    m.ListGroups(stream)
    return Call("list_groups", {} if stream is None else {"stream": stream},
                lambda body: [GroupStatus.from_wire(g) for g in body["groups"]], False,
                "list of groups")


def group_info(stream: str, group: str) -> Call:
    return Call("group_info", _group(stream, group), GroupStatus.from_wire, False,
                f"info of group {group!r} on {stream!r}")


def connect_group(stream: str, group: str, window: int) -> Call:
    m.ConnectGroup(stream, group, window)
    return Call("connect_group", _group(stream, group) | {"credit": window}, _subscribed,
                False, f"connection to group {group!r} on {stream!r}")


def group_ack(subscription: int, positions: tuple[int, ...]) -> Call:
    m.GroupAck(subscription, positions)
    return Call("group_ack", {"subscription": subscription, "positions": list(positions)},
                _ignore, True, "ack", False, False)


def group_nack(subscription: int, positions: tuple[int, ...], action: str,
               reason: str) -> Call:
    m.GroupNack(subscription, positions, action, reason)
    return Call("group_nack", {"subscription": subscription, "positions": list(positions),
                               "action": action, "reason": reason}, _ignore, True, "nack", False,
                False)


def leave_group(subscription: int) -> Call:
    return Call("leave_group", {"subscription": subscription}, _ignore, False, "leave")


def replay_parked(stream: str, group: str, max_count: int = m.MAX_READ_COUNT) -> Call:
    m.ReplayParked(stream, group, max_count)
    return Call("replay_parked", _group(stream, group) | {"max_count": max_count},
                lambda body: body["replayed"], False,
                f"replay of the parked events of group {group!r} on {stream!r}")
