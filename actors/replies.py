"""Turning storage results into client replies (one place, shared by every actor)."""

from __future__ import annotations

from typing import Any

from esnode.core.messages import ErrorReply, Reply
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
