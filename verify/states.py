"""What a read of a stream must answer at a given position of the final log: the model the
checker holds reads of deletes, tombstones and metadata against (invariant I11).

A stream's state changes only at its own records (a new last version, its tombstone) and at
the records of its metadata stream ``$$S`` (soft delete and undelete are metadata records too).
``timelines`` replays a final ``$all`` into, for each stream, the list of states it went
through with the position from which each held; ``answers`` says whether a read's recorded
answer is what a read of that state gives. The rules are written out here on purpose, apart
from the server's (``esnode.storage.rules``): the checker must not share the code it checks.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple

from esnode.verify.history import (
    DELETED_TB,
    METADATA_PREFIX,
    READ_METADATA,
    Event,
    Op,
)

NOT_FOUND, DELETED = "stream_not_found", "stream_deleted"


class StreamState(NamedTuple):
    """A stream as of one position of the log. ``meta`` is None when the content of its
    metadata record is not known (the final state could not read it)."""

    last: int = -1
    tombstoned: bool = False
    meta_version: int = -1
    meta: dict | None = {}  # shared by every default state: never mutated

    def visible(self) -> list[int] | str | None:
        """The versions a forward read of everything returns, or the error it raises (None:
        cannot tell)."""
        if self.tombstoned:
            return DELETED
        meta = self.meta
        if meta is None or "$maxAge" in meta:  # age depends on the reader's clock
            return None
        if self.last < 0 or meta.get("$tb") == DELETED_TB:
            return NOT_FOUND
        first = meta.get("$tb") or 0
        max_count = meta.get("$maxCount")
        if max_count and self.last - max_count + 1 > first:
            first = self.last - max_count + 1
        return list(range(first, self.last + 1))


EMPTY = StreamState()


class Timeline:
    """The states one stream went through along a log: ``states[k]`` held from
    ``positions[k]`` (the first, the empty stream, from -1) until the next one."""

    __slots__ = ("positions", "states")

    def __init__(self) -> None:
        self.positions: list[int] = [-1]
        self.states: list[StreamState] = [EMPTY]

    @property
    def last(self) -> StreamState:
        return self.states[-1]

    def add(self, position: int, state: StreamState) -> None:
        self.positions.append(position)
        self.states.append(state)

    def between(self, low: int, high: float) -> list[StreamState]:
        """The states that held at some position P with ``low <= P < high``."""
        positions = self.positions
        k = max(bisect_right(positions, low) - 1, 0)
        out = []
        while k < len(positions) and positions[k] < high:
            out.append(self.states[k])
            k += 1
        return out


def timelines(log: list[Event], streams: set[str],
              contents: dict[str, dict[int, dict]]) -> dict[str, Timeline]:
    """The states each of ``streams`` went through along ``log``; ``contents``: stream ->
    version of its metadata stream -> the metadata it holds."""
    out = {s: Timeline() for s in streams}
    for e in log:
        line = out.get(e.stream)
        if line is not None:
            line.add(e.position, line.last._replace(tombstoned=True) if e.is_tombstone
                     else line.last._replace(last=e.version))
        target = e.stream[len(METADATA_PREFIX):] if e.stream.startswith(METADATA_PREFIX) else ""
        line = out.get(target) if target else None
        if line is not None and not e.is_tombstone:
            line.add(e.position, line.last._replace(
                meta_version=e.version, meta=contents.get(target, {}).get(e.version)))
    return out


def answers(state: StreamState, op: Op) -> bool | None:
    """Whether ``op`` (a read of a stream backwards from its end, or of its metadata)
    answered as a read of ``state`` does; None when that cannot be told."""
    if state.tombstoned:
        return op.error == DELETED
    if op.kind == READ_METADATA:
        if op.error or op.last_version != state.meta_version:
            return False
        return None if state.meta is None else op.metadata == state.meta
    visible = state.visible()
    if visible is None:
        return None
    if type(visible) is str:  # an empty answer with no last version says "not found" too
        return op.error == visible or (visible == NOT_FOUND and not op.error
                                       and op.last_version == -1 and not op.events)
    if op.error or op.last_version != state.last:
        return False
    got = [e.version for e in op.events]
    want = visible[::-1][:len(got) if op.max_count is None else op.max_count]
    return got == want
