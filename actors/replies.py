"""Turning storage results into client replies (one place, shared by every actor)."""

from __future__ import annotations

from typing import Any

from esnode.core.messages import ErrorReply, RelayedReply, Reply
from esnode.core.types import (
    AllSlice,
    AppendSuccess,
    DeleteSuccess,
    EsError,
    StreamMetadata,
    StreamSlice,
)


def reply_for(result: Any) -> Reply | ErrorReply:
    cls = type(result)
    if cls is AppendSuccess:
        return Reply({"first_version": result.first_version, "last_version": result.last_version,
                      "position": result.position, "idempotent": result.idempotent})
    if cls is StreamSlice:
        return Reply({"events": result.events, "next_version": result.next_version,
                      "last_version": result.last_version, "is_end": result.is_end})
    if cls is AllSlice:
        return Reply({"events": result.events, "next_position": result.next_position,
                      "is_end": result.is_end})
    if cls is DeleteSuccess:
        return Reply({"position": result.position})
    if cls is StreamMetadata:
        return Reply({"stream": result.stream, "version": result.version, "metadata": result.raw})
    if isinstance(result, EsError):
        return ErrorReply(result)
    raise TypeError(f"no reply for {cls.__name__}")


def unwrap(message: Any) -> dict:
    """The body of a reply, whether answered here or relayed from the leader (a forwarded
    write); raises the typed error of an error reply. Every face (ZeroMQ relays bodies as
    they are; HTTP needs them typed) reads replies through this one function."""
    cls = type(message)
    if cls is Reply:
        return message.body
    if cls is ErrorReply:
        raise message.error
    if cls is RelayedReply:
        if message.kind == "ok":
            return message.body
        from esnode.client.errors import error_from_body

        raise error_from_body(message.body)
    raise TypeError(f"not a reply: {cls.__name__}")
