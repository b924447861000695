"""Errors the client raises, beyond the server's (``esnode.core.types``, re-exported here).

Every error is an ``EsError`` with a stable ``code``. Timeouts follow one rule: a write that was
not answered in time raises ``WriteTimeout`` (an ``OutcomeUnknown``: the write may or may not
have happened, and retrying an append with the same event ids is safe); a read raises
``OperationTimeout``. Both are also ``TimeoutError``s.
"""

from __future__ import annotations

from esnode.core.types import (
    ERRORS_BY_CODE,
    AccessDenied,
    BadRequest,
    EsError,
    GroupExists,
    GroupNotFound,
    IdempotencyConflict,
    NoQuorum,
    NotAuthenticated,
    NotLeader,
    NotReady,
    OutcomeUnknown,
    StorageFull,
    StreamDeleted,
    StreamNotFound,
    TooBusy,
    TooLarge,
    Unavailable,
    WrongExpectedVersion,
)


class OperationTimeout(EsError, TimeoutError):
    """A read (or other request that changes nothing) got no answer in time."""

    code = "timeout"


class WriteTimeout(OutcomeUnknown, TimeoutError):
    """A write got no answer in time: it may or may not have happened."""


class ConnectionLost(EsError):
    """A read's connection was lost (the node stopped answering heartbeats) or replaced (the
    client moved to another node) before the answer came; retried automatically."""

    code = "connection_lost"


class WriteConnectionLost(OutcomeUnknown):
    """A write's connection was lost (the node closed it or stopped answering heartbeats)
    before the answer came: it may or may not have happened. Retried at once, after
    re-discovery, with the same event ids."""


class WriteUnavailable(Unavailable, OutcomeUnknown):
    """A write got an unknown outcome (no answer, lost connection, leader change), and then no
    node could be found to retry it on: it may or may not have happened. Both an
    ``Unavailable`` and an ``OutcomeUnknown``."""

    code = "unavailable"


class ClientClosed(EsError):
    """The client was closed (or its I/O thread died) before the request was answered."""

    code = "client_closed"


class ProtocolError(EsError):
    """The node sent something this client does not understand."""

    code = "protocol_error"


def error_from_body(body: dict) -> EsError:
    """Rebuild the typed error of an ``error``/``dropped`` body (docs/protocol.md): the class
    comes from ``ERRORS_BY_CODE`` (``EsError`` for a code this client does not know, with that
    ``code``), the text is the server's message and each extra field becomes an attribute."""
    code = body.get("code")
    cls = ERRORS_BY_CODE.get(code, EsError) if type(code) is str else EsError
    error = cls.__new__(cls)
    Exception.__init__(error, str(body.get("message", code)))
    if cls is EsError and type(code) is str:
        error.code = code
    for key, value in body.items():
        if type(key) is str and key.isidentifier() and not hasattr(cls, key):
            setattr(error, key, value)
    if cls is NotLeader:
        leader = body.get("leader")
        error.leader = (leader[0], leader[1]) \
            if isinstance(leader, (list, tuple)) and len(leader) == 2 else None
    return error


__all__ = [
    "AccessDenied", "BadRequest", "ClientClosed", "ConnectionLost", "EsError", "GroupExists", "GroupNotFound",
    "IdempotencyConflict",
    "NoQuorum", "NotAuthenticated", "NotLeader",
    "NotReady", "OperationTimeout", "OutcomeUnknown", "ProtocolError", "StorageFull",
    "StreamDeleted", "StreamNotFound", "TooBusy", "TooLarge", "Unavailable", "WriteTimeout",
    "WriteUnavailable", "WrongExpectedVersion", "error_from_body",
]
