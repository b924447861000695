"""Authorization of client requests: which ACL operation each request needs, and the check
against the stream's ``$acl`` and the defaults of ``$settings`` (docs/security.md).

One function for both faces (ZeroMQ and HTTP go through the same gateway) so that a request
is checked the same way wherever it arrives; the leader checks forwarded writes again with
the user they carry. Reads of ``$acl``/``$settings`` go to the store at the commit position,
so an ACL change takes effect for the next request after it commits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from esnode.core import messages as m
from esnode.core.acl import (
    ADMINS,
    ANONYMOUS,
    OPS,
    SETTINGS_STREAM,
    DefaultAcls,
    Principal,
    SYSTEM_DEFAULT,
    StreamAcl,
    allowed,
)
from esnode.core.forwarding import ForwardAppend, ForwardDelete
from esnode.core.types import (
    ALL_STREAM,
    AccessDenied,
    BadRequest,
    EsError,
    NotAuthenticated,
    StreamDeleted,
    StreamNotFound,
)

if TYPE_CHECKING:
    from esnode.core.users import LiveUsers
    from esnode.storage.port import EventStore

OPS_OR_ADMINS = frozenset({ADMINS, OPS})
ADMINS_ONLY = SYSTEM_DEFAULT
"""What a malformed ``$acl`` or ``$settings`` allows (fail closed)."""

_VERBS = {"$r": "read", "$w": "write to", "$d": "delete", "$mr": "read the metadata of",
          "$mw": "write the metadata of"}

_STREAM_OPERATION = {
    m.Append: "$w", m.Delete: "$d", m.SetMetadata: "$mw", m.GetMetadata: "$mr",
    m.ReadStream: "$r", m.Subscribe: "$r", m.ConnectGroup: "$r", m.GroupInfo: "$r",
}
_ANONYMOUS_OK = (m.Ping, m.ClusterInfo)
"""Liveness and discovery (as Event Store's gossip): they reveal no event."""
_AUTHENTICATED_OK = (m.Credit, m.Unsubscribe, m.GroupAck, m.GroupNack, m.LeaveGroup)
"""Act on a subscription the same connection opened, which was checked then."""
_GROUP_ADMIN = (m.CreateGroup, m.UpdateGroup, m.DeleteGroup, m.ReplayParked)
"""Persistent group management: ``$ops`` or ``$admins`` (Event Store's policy)."""


def requirement(request: object) -> tuple[str, str] | None:
    """(operation, stream) the request needs, or None when it is not about one stream.

    A request on a metadata stream (``$$name``) is a metadata operation on ``name``, as in
    Event Store: writing ``$$name`` directly cannot bypass ``$mw``."""
    cls = type(request)
    if cls is m.ReadAll:
        return "$r", ALL_STREAM
    if cls is m.ListGroups:
        return "$r", request.stream or ALL_STREAM
    op = _STREAM_OPERATION.get(cls)
    if op is None:
        return None
    stream = request.stream
    if stream.startswith("$$") and op in ("$r", "$w"):
        return ("$mr" if op == "$r" else "$mw"), stream[2:]
    return op, stream


class Authorizer:
    """``check(principal, request)``: None when allowed, else the error to answer."""

    def __init__(self, store: EventStore, committed: Callable[[], int]) -> None:
        self._store = store
        self._committed = committed

    def screen(self, envelopes: list[m.ClientEnvelope]
               ) -> tuple[list[m.ClientEnvelope], list[tuple[bytes, int, m.ErrorReply]]]:
        """The envelopes allowed through, and the error replies for the others."""
        passed, refused = [], []
        for env in envelopes:
            error = self.check(env.principal or ANONYMOUS, env.request)
            if error is None:
                passed.append(env)
            else:
                refused.append((env.peer, env.corr, m.ErrorReply(error)))
        return passed, refused

    def check_forward(self, message: ForwardAppend | ForwardDelete,
                      users: LiveUsers) -> EsError | None:
        """The leader's second check of a write another node forwarded: the user it names,
        as this node's user table knows it now, against this node's ACLs."""
        user = users.refresh().get(message.user) if message.user is not None else None
        if message.user is not None and (user is None or user.disabled):
            return NotAuthenticated(f"not authenticated: user {message.user!r} is unknown or "
                                    f"disabled on the leader")
        principal = Principal.of(user) if user is not None else ANONYMOUS
        if type(message) is ForwardAppend:
            request = m.Append(message.stream, message.expected_version, message.events)
        else:
            request = m.Delete(message.stream, message.expected_version, message.tombstone)
        return self.check(principal, request)

    def check(self, principal: Principal, request: object) -> EsError | None:
        cls = type(request)
        if cls in _ANONYMOUS_OK:
            return None
        if principal.name is None:
            return NotAuthenticated("not authenticated: this request needs a user "
                                    "(give a user name and password)")
        if cls in _AUTHENTICATED_OK:
            return None
        if cls in _GROUP_ADMIN:
            if principal.groups & OPS_OR_ADMINS:
                return None
            return AccessDenied(f"access denied: user {principal.name!r} may not manage "
                                f"persistent subscription groups (needs $ops or $admins)")
        need = requirement(request)
        if need is None:  # a request type not known here: admins only (fail closed)
            return None if principal.is_admin else AccessDenied(
                f"access denied: {cls.__name__} is for $admins")
        operation, stream = need
        if principal.is_admin or allowed(principal, operation, stream, self._acl(stream),
                                         self._defaults()):
            return None
        return AccessDenied(f"access denied: user {principal.name!r} may not "
                            f"{_VERBS[operation]} stream {stream!r}")

    def _acl(self, stream: str) -> StreamAcl | None:
        """The stream's ``$acl``; a malformed one allows nobody but admins (fail closed)."""
        if stream == ALL_STREAM:
            return None
        try:
            raw = self._store.get_metadata(stream, up_to_position=self._committed()).raw
            return StreamAcl.parse(raw.get("$acl"))
        except (StreamDeleted, StreamNotFound):
            return None
        except BadRequest:
            return ADMINS_ONLY

    def _defaults(self) -> DefaultAcls:
        """``$settings``' last event; malformed settings fall back to admins only."""
        try:
            page = self._store.read_stream(SETTINGS_STREAM, -1, 1, backwards=True,
                                           up_to_position=self._committed())
        except (StreamDeleted, StreamNotFound):
            return DefaultAcls()
        if not page.events:
            return DefaultAcls()
        try:
            settings = json.loads(page.events[0].data)
            if isinstance(settings, dict):
                return DefaultAcls.parse(settings)
        except (ValueError, BadRequest):
            pass
        return DefaultAcls(ADMINS_ONLY, ADMINS_ONLY)
