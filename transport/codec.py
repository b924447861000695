"""msgpack wire codec for the external (client) protocol, version 1 (docs/protocol.md).

Decoding is strict and bounded: a frame is at most ``max_message_size`` bytes (also enforced
by the socket's ZMQ_MAXMSGSIZE), must be a msgpack array ``[version, op, corr, args]``, and
``op`` must be on the allow-list below. Anything else raises ``BadRequest`` (with the
correlation id when it could be read) and never crashes the node.
"""

from __future__ import annotations

from typing import Any

import msgpack
from esnode.core import messages as m
from esnode.core.filters import DEFAULT_CHECKPOINT_INTERVAL, EventFilter
from esnode.core.persistent import GroupSettings
from esnode.core.types import BadRequest, EncodedEvents, EsError, EventData

DEFAULT_MAX_MESSAGE_SIZE = 80 * 1024 * 1024
"""Largest frame accepted on the external socket (an append of up to 64 MiB plus framing)."""
MAX_FRAMES_PER_MESSAGE = 64
"""Requests (client to node) or replies and pushes (node to client) one message carries, a
frame each (docs/protocol.md): a sender puts what it has in one message, because each message
costs a wake-up of ZeroMQ's I/O thread."""
CLUSTER_MAGIC = "esnode-cluster"
"""First item of every internal (cluster) message (``transport/internal_codec.py``): a frame
starting with it on the external endpoint is refused as cluster traffic by name."""

_packer = msgpack.Packer(use_bin_type=True)
_packb = _packer.pack
_OK_HEAD = _packb("ok")
_EVENTS_HEAD = _packb("events")


def _events(raw: Any) -> tuple[EventData, ...]:
    if type(raw) is not list:
        raise BadRequest("events must be an array")
    out = []
    for ev in raw:
        if type(ev) is not list or len(ev) != 5:
            raise BadRequest("each event must be [id, type, data, metadata, is_json]")
        eid, etype, data, meta, is_json = ev
        if (type(eid) is not str or type(etype) is not str or not etype or type(data) is not bytes
                or type(meta) is not bytes or type(is_json) is not bool):
            raise BadRequest("event fields must be [str id, non-empty str type, bin data, "
                             "bin metadata, bool is_json]")
        out.append(EventData(eid, etype, data, meta, is_json))
    return tuple(out)


def _arg(args: dict, name: str, default: Any = ...) -> Any:
    if name in args:
        return args[name]
    if default is ...:
        raise BadRequest(f"missing argument {name!r}")
    return default


def _decode_append(a: dict) -> m.Append:
    return m.Append(_arg(a, "stream"), _arg(a, "expected_version", m.ANY),
                    _events(_arg(a, "events")), _arg(a, "requires_leader", False))


def _positions(a: dict) -> tuple:
    positions = _arg(a, "positions")
    if type(positions) is not list:
        raise BadRequest("positions must be a list")
    return tuple(positions)


# One decoder per allowed op: the external allow-list.
CLIENT_OPS: dict[str, Any] = {
    "append": _decode_append,
    "read_stream": lambda a: m.ReadStream(_arg(a, "stream"), _arg(a, "from_version", 0),
                                          _arg(a, "max_count", 500), _arg(a, "backwards", False),
                                          _arg(a, "requires_leader", False)),
    "read_all": lambda a: m.ReadAll(_arg(a, "from_position", 0), _arg(a, "max_count", 1000),
                                    _arg(a, "backwards", False), _arg(a, "requires_leader", False),
                                    EventFilter.from_wire(a.get("filter"))),
    "delete": lambda a: m.Delete(_arg(a, "stream"), _arg(a, "expected_version", m.ANY),
                                 _arg(a, "tombstone", False), _arg(a, "requires_leader", False)),
    "get_metadata": lambda a: m.GetMetadata(_arg(a, "stream"), _arg(a, "requires_leader", False)),
    "set_metadata": lambda a: m.SetMetadata(_arg(a, "stream"), _arg(a, "metadata"),
                                            _arg(a, "expected_version", m.ANY),
                                            _arg(a, "requires_leader", False)),
    "subscribe": lambda a: m.Subscribe(_arg(a, "stream"), _arg(a, "from", m.FROM_START),
                                       _arg(a, "credit", 1000),
                                       EventFilter.from_wire(a.get("filter")),
                                       _arg(a, "checkpoint_interval",
                                            DEFAULT_CHECKPOINT_INTERVAL)),
    "credit": lambda a: m.Credit(_arg(a, "subscription"), _arg(a, "n")),
    "unsubscribe": lambda a: m.Unsubscribe(_arg(a, "subscription")),
    "create_group": lambda a: m.CreateGroup(_arg(a, "stream"), _arg(a, "group"),
                                            GroupSettings.from_wire(_arg(a, "settings", {}))),
    "update_group": lambda a: m.UpdateGroup(_arg(a, "stream"), _arg(a, "group"),
                                            _arg(a, "settings")),
    "delete_group": lambda a: m.DeleteGroup(_arg(a, "stream"), _arg(a, "group")),
    "list_groups": lambda a: m.ListGroups(_arg(a, "stream", None)),
    "group_info": lambda a: m.GroupInfo(_arg(a, "stream"), _arg(a, "group")),
    "connect_group": lambda a: m.ConnectGroup(_arg(a, "stream"), _arg(a, "group"),
                                              _arg(a, "credit", 100)),
    "group_ack": lambda a: m.GroupAck(_arg(a, "subscription"), _positions(a)),
    "group_nack": lambda a: m.GroupNack(_arg(a, "subscription"), _positions(a),
                                        _arg(a, "action", "retry"), _arg(a, "reason", "")),
    "leave_group": lambda a: m.LeaveGroup(_arg(a, "subscription")),
    "replay_parked": lambda a: m.ReplayParked(_arg(a, "stream"), _arg(a, "group"),
                                              _arg(a, "max_count", m.MAX_READ_COUNT)),
    "cluster_info": lambda a: m.ClusterInfo(),
    "ping": lambda a: m.Ping(),
    "authenticate": lambda a: m.Authenticate(_arg(a, "user"), _arg(a, "password")),
    "admin": lambda a: m.Admin(_arg(a, "action"), _arg(a, "value", None)),
}


class DecodeError(BadRequest):
    """A frame that could not be decoded; ``corr`` is set when the correlation id was read."""

    def __init__(self, message: str, corr: int | None = None):
        super().__init__(message)
        self.corr = corr


def decode_request(frame: bytes, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
                   ) -> tuple[int, Any]:
    """Decode one client frame into ``(corr, request)`` or raise ``DecodeError``."""
    if len(frame) > max_message_size:
        raise DecodeError(f"message of {len(frame)} bytes exceeds the limit of {max_message_size}")
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise DecodeError(f"malformed msgpack: {type(exc).__name__}") from None
    if type(msg) is list and msg and msg[0] == CLUSTER_MAGIC:
        raise DecodeError("a cluster message: this external endpoint accepts only client "
                          "requests; cluster traffic goes to the internal endpoint")
    if type(msg) is not list or len(msg) != 4:
        raise DecodeError("a request must be an array [version, op, corr, args]")
    version, op, corr, args = msg
    if type(corr) is not int:
        raise DecodeError("corr must be an integer")
    if version != m.PROTOCOL_VERSION:
        raise DecodeError(f"unsupported protocol version {version!r}; this node speaks "
                          f"{m.PROTOCOL_VERSION}", corr)
    decoder = CLIENT_OPS.get(op) if type(op) is str else None
    if decoder is None:
        raise DecodeError(f"unknown operation {op!r}", corr)
    if type(args) is not dict:
        raise DecodeError("args must be a map", corr)
    try:
        return corr, decoder(args)
    except BadRequest as exc:
        raise DecodeError(f"{op}: {exc}", corr) from None
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"{op}: bad arguments ({exc})", corr) from None


def encode_request(op: str, corr: int, args: dict) -> bytes:
    return _packb([m.PROTOCOL_VERSION, op, corr, args])


def error_body(error: EsError) -> dict:
    body = {"code": error.code, "message": str(error)}
    body.update(error.details())
    return body


def encode_reply(corr: int, message: Any) -> bytes:
    """Encode a server message (``core.messages.ServerMessage``) for the wire."""
    cls = type(message)
    if cls is m.Reply:
        body = message.body
        if type(body) is dict and type(body.get("events")) is EncodedEvents:
            return _spliced_reply(corr, body)
        return _packb([corr, "ok", body])
    if cls is m.ErrorReply:
        return _packb([corr, "error", error_body(message.error)])
    if cls is m.EventsPushed:
        events = message.events
        if type(events) is EncodedEvents:  # as stored: spliced, the same bytes as packed
            return b"".join([b"\x93", _packb(corr), _EVENTS_HEAD,
                             _packer.pack_array_header(len(events.values)), *events.values])
        return _packb([corr, "events", events])
    if cls is m.CaughtUp:
        return _packb([corr, "caught_up", {"position": message.position}])
    if cls is m.GroupEventsPushed:
        return _packb([corr, "group_events", [[*e, n] for e, n in message.events]])
    if cls is m.Checkpoint:
        return _packb([corr, "checkpoint", {"position": message.position}])
    if cls is m.RelayedReply:
        return _packb([corr, message.kind, message.body])
    if cls is m.SubscriptionDropped:
        return _packb([corr, "dropped", error_body(message.error)])
    raise TypeError(f"not a server message: {cls.__name__}")


def _spliced_reply(corr: int, body: dict) -> bytes:
    """``[corr, "ok", body]`` whose ``events`` are stored values: an array header and the
    values joined are the same bytes as packing the decoded events (each stored value was
    packed by the same msgpack settings), without decoding or re-encoding them."""
    parts = [b"\x93", _packb(corr), _OK_HEAD, _packer.pack_map_header(len(body))]
    for key, value in body.items():
        parts.append(_packb(key))
        if type(value) is EncodedEvents:
            parts.append(_packer.pack_array_header(len(value.values)))
            parts.extend(value.values)
        else:
            parts.append(_packb(value))
    return b"".join(parts)
