"""The history of a verification run: every operation as it was invoked and how it ended, plus
the final state read from every node afterwards.

An ``Op`` is one logical operation of one client (``process``): an append (with all the
retries made for it, which keep its event ids), a delete (soft or tombstone), a metadata change,
a stream read, a metadata read, a ``$all`` read, a subscription (with the events it delivered,
in order) or a ``cluster_info`` sample of one node. Times are
``time.monotonic()`` seconds of the recording process. The outcome is

- ``ok``: it happened, with the results recorded (an append's acknowledged versions and
  ``$all`` position, a read's events);
- ``fail``: it definitely did not happen (``WrongExpectedVersion``, ``NoQuorum``, ... on the
  only attempt, or on every attempt);
- ``unknown``: it may or may not have happened (``OutcomeUnknown``/``WriteTimeout``, or a
  definite error on a retry after an attempt whose outcome was unknown);
- ``pending``: it never ended (a violation of I10 when checked).

Events are ``Event``s (event id, stream, version, position: what the checker needs of a
record); on disk they are 4-item lists ``[event_id, stream, version, position]``.

On disk a history is JSON lines: one ``{"type": "meta", ...}`` line, one ``{"type": "op",
...}`` line per operation and one ``{"type": "final", ...}`` line with the final state, so a
saved run can be checked again with ``esnode verify --check FILE``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO

OK, FAIL, UNKNOWN, PENDING = "ok", "fail", "unknown", "pending"
OUTCOMES = (OK, FAIL, UNKNOWN, PENDING)

APPEND, READ_STREAM, READ_ALL, SUBSCRIBE, CLUSTER_INFO = (
    "append", "read_stream", "read_all", "subscribe", "cluster_info")
DELETE, SET_METADATA, READ_METADATA = "delete", "set_metadata", "read_metadata"
KINDS = (APPEND, DELETE, SET_METADATA, READ_STREAM, READ_METADATA, READ_ALL, SUBSCRIBE,
         CLUSTER_INFO)
WRITES = (APPEND, DELETE, SET_METADATA)

FORMAT = "esnode-verify-history/1"

TOMBSTONE_VERSION = 2**63 - 1
"""The stream version of a tombstone record (``$streamDeleted``)."""
DELETED_TB = TOMBSTONE_VERSION
"""``$tb`` of a soft-deleted stream's metadata."""
METADATA_PREFIX = "$$"


@dataclass(frozen=True, slots=True)
class Event:
    """One record as an observer saw it: what the checker needs of a ``RecordedEvent``."""

    event_id: str
    stream: str
    version: int
    position: int

    def to_json(self) -> list:
        return [self.event_id, self.stream, self.version, self.position]

    @property
    def is_tombstone(self) -> bool:
        return self.version == TOMBSTONE_VERSION


def compact(event: Any) -> Event:
    """The ``Event`` of a ``RecordedEvent``, a protocol array (9 items) or a saved 4-item list."""
    if type(event) is Event:
        return event
    if isinstance(event, (list, tuple)) and not hasattr(event, "event_id"):
        if len(event) == 9:
            return Event(event[0], event[1], event[2], event[8])
        if len(event) == 4:
            return Event(*event)
        raise ValueError(f"not an event: {event!r}")
    return Event(event.event_id, event.stream, event.version, event.position)


def _events_json(events: list[Event]) -> list[list]:
    return [e.to_json() for e in events]


def _fields_of(obj: Any) -> dict:
    """A dataclass's fields, shallow (``asdict`` would deep-copy every event)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


@dataclass
class Op:
    """One operation. Fields that do not apply to its kind stay at their defaults."""

    id: int
    process: str
    kind: str
    t_invoke: float
    t_complete: float | None = None
    outcome: str = PENDING
    # inputs
    stream: str | None = None
    expected_version: int | None = None
    event_ids: list[str] = field(default_factory=list)
    requires_leader: bool = False
    from_position: int | None = None
    """read_all: where it read from; subscribe: delivery starts after it (-1: the start)."""
    tombstone: bool = False
    """delete: a tombstone (else a soft delete)."""
    max_count: int | None = None
    """read_stream: the page size asked for (reads go backwards from the end)."""
    metadata: dict | None = None
    """set_metadata: the metadata written; read_metadata: the metadata read."""
    # results
    node: str | None = None
    first_version: int | None = None
    last_version: int | None = None
    """append: the acknowledged last version; read_stream: the stream's last version;
    set_metadata and read_metadata: the version of the metadata stream."""
    position: int | None = None
    """append and set_metadata: the acknowledged position of the last record; delete: of its
    record."""
    idempotent: bool = False
    attempts: int = 0
    error: str = ""
    """fail / unknown: why; a read that ended ok: ``stream_not_found`` / ``stream_deleted``
    when that was its answer."""
    events: list[Event] = field(default_factory=list)
    """read results / subscription deliveries, in the order received."""
    info: dict | None = None
    """cluster_info: ``{"node", "state", "leader", "members": [[name, state, epoch, alive]]}``."""

    def __post_init__(self) -> None:
        self.events = [compact(e) for e in self.events]

    def brief(self) -> dict:
        """The fields that matter for this op (as evidence in a violation)."""
        out = {"id": self.id, "process": self.process, "kind": self.kind,
               "outcome": self.outcome, "t_invoke": round(self.t_invoke, 6),
               "t_complete": None if self.t_complete is None else round(self.t_complete, 6)}
        for name in ("stream", "expected_version", "node", "first_version", "last_version",
                     "position", "from_position", "max_count", "metadata", "error"):
            value = getattr(self, name)
            if value not in (None, ""):
                out[name] = value
        for name in ("idempotent", "requires_leader", "tombstone"):
            if getattr(self, name):
                out[name] = True
        if self.event_ids:
            out["event_ids"] = list(self.event_ids)
        if self.kind in (READ_STREAM, READ_ALL, SUBSCRIBE):
            out["events"] = len(self.events)
        return out

    def to_json(self) -> dict:
        out = _fields_of(self)
        out["events"] = _events_json(self.events)
        return out

    @classmethod
    def from_json(cls, raw: dict) -> Op:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


class History:
    """A thread-safe list of operations; ``invoke`` starts one, ``ok``/``fail``/``unknown``
    end it."""

    def __init__(self, ops: Iterable[Op] = (), meta: dict | None = None) -> None:
        self._lock = threading.Lock()
        self.ops: list[Op] = list(ops)
        self.meta: dict = dict(meta or {})
        self._next = max((op.id for op in self.ops), default=-1) + 1

    def invoke(self, process: str, kind: str, **inputs: Any) -> Op:
        with self._lock:
            op = Op(self._next, process, kind, time.monotonic(), **inputs)
            self._next += 1
            self.ops.append(op)
        return op

    @staticmethod
    def end(op: Op, outcome: str, **results: Any) -> Op:
        for key, value in results.items():
            setattr(op, key, value)
        op.outcome = outcome
        op.t_complete = time.monotonic()
        return op

    def counts(self, kind: str | None = None) -> dict[str, int]:
        out = dict.fromkeys(OUTCOMES, 0)
        with self._lock:
            for op in self.ops:
                if kind is None or op.kind == kind:
                    out[op.outcome] += 1
        return out

    def __iter__(self) -> Iterator[Op]:
        with self._lock:
            return iter(list(self.ops))

    def __len__(self) -> int:
        return len(self.ops)


@dataclass
class FinalState:
    """What every node served after the run.

    ``logs``: node -> its ``$all`` from ``from_position`` on (inclusive), as read last;
    ``streams``: node -> stream -> the stream's visible events (forward; none when it is not
    found or deleted); ``metadata``: node -> stream -> ``[[version, metadata], ...]``, the
    content of every record of its metadata stream (for the streams whose metadata the run
    changed); ``unreachable``: node -> why it could not be read; ``converged_after``: seconds
    the reader waited until every reachable node served the same ``$all`` (None: not within
    ``deadline`` seconds)."""

    from_position: int = 0
    logs: dict[str, list[Event]] = field(default_factory=dict)
    streams: dict[str, dict[str, list[Event]]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    converged_after: float | None = 0.0
    deadline: float = 0.0
    metadata: dict[str, dict[str, list[list]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.logs = {node: [compact(e) for e in log] for node, log in self.logs.items()}
        self.streams = {node: {s: [compact(e) for e in events] for s, events in reads.items()}
                        for node, reads in self.streams.items()}

    def to_json(self) -> dict:
        out = _fields_of(self)
        out["logs"] = {node: _events_json(log) for node, log in self.logs.items()}
        out["streams"] = {node: {s: _events_json(events) for s, events in reads.items()}
                          for node, reads in self.streams.items()}
        return out

    @classmethod
    def from_json(cls, raw: dict) -> FinalState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def dump(history: History, final: FinalState | None, out: TextIO) -> None:
    out.write(json.dumps({"type": "meta", "format": FORMAT, **history.meta}) + "\n")
    for op in history:
        out.write(json.dumps({"type": "op", **op.to_json()}) + "\n")
    if final is not None:
        out.write(json.dumps({"type": "final", **final.to_json()}) + "\n")


def save(history: History, final: FinalState | None, path: str | Path) -> None:
    """Write the history (and the final state) as JSON lines."""
    with open(path, "w", encoding="utf-8") as out:
        dump(history, final, out)


def parse(lines: Iterable[str]) -> tuple[History, FinalState | None]:
    meta: dict = {}
    ops: list[Op] = []
    final: FinalState | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            kind = raw.pop("type")
        except (ValueError, KeyError, AttributeError):
            raise ValueError(f"line {number}: not a history record") from None
        if kind == "meta":
            meta = raw
        elif kind == "op":
            ops.append(Op.from_json(raw))
        elif kind == "final":
            final = FinalState.from_json(raw)
        else:
            raise ValueError(f"line {number}: unknown record type {kind!r}")
    meta.pop("format", None)
    return History(ops, meta), final


def load(path: str | Path) -> tuple[History, FinalState | None]:
    """Read a history saved by ``save``."""
    with open(path, encoding="utf-8") as lines:
        return parse(lines)
