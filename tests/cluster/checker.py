"""A history checker for process-level cluster tests (reliability.md I1, I2, I3, I5, I6, I9).

A test records every append it makes as an ``Op`` in a ``History``: **ok** (acknowledged, with
its position in ``$all`` and its stream versions), **fail** (the node said it was definitely
not made: ``no_quorum``, ``not_leader``, ``not_ready``) or **unknown** (``outcome_unknown``, or
no answer in time). After the faults are healed it reads ``$all`` from nodes and calls
``check``:

- I1: every ok append's events are present on every node, the last one at the acknowledged
  position, with the acknowledged stream versions;
- I2: one event id per (stream, version), on each node and across nodes;
- I3: no event of a failed append is visible anywhere;
- I5: no event id appears twice (an unknown append is present at most once, and atomically:
  all of its events or none);
- I6: on one stream, an append acknowledged before another was invoked has the lower position;
- I9: ``$all`` is ordered by position and agrees with each stream's order, versions 0, 1, ...
  with no gap;
- converged nodes hold identical ``$all``.

Events are protocol arrays ``[id, stream, version, type, data, metadata, is_json, created,
position]``.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

DEFINITE_FAILURES = frozenset({"no_quorum", "not_leader", "not_ready"})
"""Error codes that mean the write was not made."""

OK, FAIL, UNKNOWN, PENDING = "ok", "fail", "unknown", "pending"


@dataclass
class Op:
    stream: str
    event_ids: tuple[str, ...]
    via: str
    t_invoke: float = field(default_factory=time.monotonic)
    t_complete: float | None = None
    outcome: str = PENDING
    position: int | None = None
    first_version: int | None = None
    last_version: int | None = None
    error: str = ""
    idempotent: bool = False

    def __repr__(self) -> str:
        ids = ",".join(i[:8] for i in self.event_ids)
        return (f"Op({self.outcome} {self.stream} [{ids}] via {self.via} pos={self.position} "
                f"v={self.first_version}..{self.last_version} {self.error})")


class History:
    """Thread-safe record of appends and their outcomes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ops: list[Op] = []

    def invoke(self, stream: str, event_ids: Iterable[str], via: str) -> Op:
        op = Op(stream, tuple(event_ids), via)
        with self._lock:
            self.ops.append(op)
        return op

    @staticmethod
    def complete(op: Op, kind: str | None, body: dict | None, why: str = "") -> str:
        """Record a raw reply ``(kind, body)``, or no reply (``kind`` None: unknown)."""
        op.t_complete = time.monotonic()
        if kind == "ok":
            op.outcome, op.position = OK, body["position"]
            op.first_version, op.last_version = body["first_version"], body["last_version"]
            op.idempotent = bool(body.get("idempotent"))
        elif kind == "error" and body.get("code") in DEFINITE_FAILURES:
            op.outcome, op.error = FAIL, body["code"]
        elif kind == "error" and body.get("code") == "outcome_unknown":
            op.outcome, op.error = UNKNOWN, body["code"]
        elif kind is None:
            op.outcome, op.error = UNKNOWN, why or "no reply"
        else:
            op.outcome, op.error = "unexpected", f"{kind}: {body}"
        return op.outcome

    def of(self, outcome: str) -> list[Op]:
        with self._lock:
            return [op for op in self.ops if op.outcome == outcome]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        with self._lock:
            for op in self.ops:
                out[op.outcome] += 1
        return dict(out)


class CheckFailed(AssertionError):
    pass


def _check_log(name: str, log: list[list], problems: list[str]) -> dict[str, list]:
    """One node's ``$all`` on its own: order, unique ids, unique and gap-free versions."""
    by_id: dict[str, list] = {}
    last_position = -1
    next_version: dict[str, int] = {}
    for e in log:
        eid, stream, version, position = e[0], e[1], e[2], e[8]
        if position <= last_position:
            problems.append(f"{name}: $all not ordered: position {position} after "
                            f"{last_position}")
        last_position = position
        if eid in by_id:
            problems.append(f"{name}: event id {eid} twice: at {by_id[eid][8]} "
                            f"({by_id[eid][1]}@{by_id[eid][2]}) and {position} "
                            f"({stream}@{version}) (I5)")
        by_id[eid] = e
        expected = next_version.get(stream, 0)
        if version != expected:
            problems.append(f"{name}: {stream}@{version} at {position} follows version "
                            f"{expected - 1}: stream order disagrees with $all or has a gap "
                            f"or duplicate (I2/I9)")
        next_version[stream] = version + 1
    return by_id


def check(history: History, logs: dict[str, list[list]], converged: bool = True,
          streams: Iterable[str] | None = None,
          reads: dict[tuple[str, str], tuple[int, str, int]] | None = None) -> None:
    """Raise ``CheckFailed`` listing every violation; ``logs`` maps node name to its ``$all``.

    ``streams``: only events of these streams are checked for gap-free versions (default: the
    streams the history wrote). ``reads``: events nodes served during the run ((id, node) ->
    (position, stream, version)); each must be in every final log at that place: a
    node must never serve a record that is later truncated (a precommitted read)."""
    problems: list[str] = []
    for name, log in logs.items():
        final = {e[0]: (e[8], e[1], e[2]) for e in log}
        for (eid, node), (position, stream, version) in (reads or {}).items():
            if final.get(eid) != (position, stream, version):
                problems.append(f"{node} served {eid} as {stream}@{version} at {position}, "
                                f"but {name} ends with {final.get(eid)} (precommitted read)")
    watched = set(streams) if streams is not None else {op.stream for op in history.ops}
    indexes = {}
    for name, log in logs.items():
        indexes[name] = _check_log(name, [e for e in log if e[1] in watched], problems)

    # I2 across nodes: (stream, version) -> one event id
    slots: dict[tuple[str, int], tuple[str, str]] = {}
    for name, index in indexes.items():
        for eid, e in index.items():
            key = (e[1], e[2])
            seen = slots.setdefault(key, (eid, name))
            if seen[0] != eid:
                problems.append(f"{e[1]}@{e[2]} is {seen[0]} on {seen[1]} but {eid} on {name} "
                                "(I2)")

    for op in history.ops:
        if op.outcome == "unexpected":
            problems.append(f"unexpected reply: {op!r}")
        for name, index in indexes.items():
            present = [eid for eid in op.event_ids if eid in index]
            if op.outcome == OK:
                if len(present) != len(op.event_ids):
                    problems.append(f"{name}: acknowledged {op!r} is missing "
                                    f"{len(op.event_ids) - len(present)} event(s) (I1)")
                    continue
                events = [index[eid] for eid in op.event_ids]
                if events[-1][8] != op.position:
                    problems.append(f"{name}: acknowledged {op!r} is at position "
                                    f"{events[-1][8]} (I1)")
                versions = [e[2] for e in events]
                if versions != list(range(op.first_version, op.last_version + 1)):
                    problems.append(f"{name}: acknowledged {op!r} has versions {versions} (I1)")
                if any(e[1] != op.stream for e in events):
                    problems.append(f"{name}: acknowledged {op!r} is in another stream (I1)")
            elif op.outcome == FAIL:
                if present:
                    problems.append(f"{name}: failed {op!r} is visible (I3)")
            elif op.outcome in (UNKNOWN, PENDING):
                if present and len(present) != len(op.event_ids):
                    problems.append(f"{name}: only part of {op!r} is present")

    # I6 per stream: acknowledged before invoked => lower position
    by_stream: dict[str, list[Op]] = defaultdict(list)
    for op in history.ops:
        if op.outcome == OK:
            by_stream[op.stream].append(op)
    for stream, ops in by_stream.items():
        done = sorted(ops, key=lambda o: o.t_complete)
        started = sorted(ops, key=lambda o: o.t_invoke)
        i, best = 0, None
        for op in started:
            while i < len(done) and done[i].t_complete < op.t_invoke:
                if best is None or done[i].position > best.position:
                    best = done[i]
                i += 1
            if best is not None and best.position >= op.position and not op.idempotent:
                problems.append(f"{stream}: {best!r} was acknowledged before {op!r} was "
                                "invoked but is not before it (I6)")

    if converged and len(logs) > 1:
        names = list(logs)
        first = [(e[8], e[0]) for e in logs[names[0]]]
        for name in names[1:]:
            other = [(e[8], e[0]) for e in logs[name]]
            if other != first:
                diverge = next((i for i, (a, b) in enumerate(zip(first, other)) if a != b),
                               min(len(first), len(other)))
                problems.append(f"$all differs between {names[0]} ({len(first)} events) and "
                                f"{name} ({len(other)}) from index {diverge}")

    if problems:
        shown = "\n  ".join(problems[:40])
        more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
        raise CheckFailed(f"{len(problems)} history violation(s); outcomes "
                          f"{history.counts()}:\n  {shown}{more}")
