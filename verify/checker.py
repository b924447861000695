"""The checker: invariants I1–I10 (shared reference ``reliability.md``), plus I11 for deletes
and metadata, over a history and the final state of every node. Pure functions; O(n log n) in
the size of the history and logs, plus, for I11, the stream states each read's window spans.

An **observation** is any list of events somebody saw: a node's final ``$all``, a node's final
read of a stream, a read made during the run, a subscription's deliveries. The **reference
log** is the final ``$all`` served by the most nodes (the longest on a tie).

- I1  every ok append's events are on every node, at the acknowledged stream versions and with
      the last one at the acknowledged ``$all`` position (in ``$all`` and in the stream read);
      every ok delete and metadata change is on every node at its acknowledged position;
- I2  one event id per (stream, version) and per ``$all`` position, across every observation;
      every event a read served during the run (from the final logs' start on) is in every
      node's final ``$all`` at the position it was served at: nothing served is later truncated;
- I3  no event of a failed append is visible anywhere; no append is visible only in part; no
      failed metadata change is in any node's final metadata;
- I4  no two appends with the same exact expected version on one stream both took effect (ok,
      or unknown and present); one that took effect did so at version ``expected + 1``;
- I5  an event id is at most once in a stream;
- I6  on one stream, an append acknowledged before another was invoked has the lower version
      and position; a leader read (``requires_leader``) invoked after an ack sees it (of the
      streams the run deleted or gave metadata: I11);
- I7  a subscription's deliveries have strictly increasing positions and are exactly the
      reference log after its start (no gap, no duplicate, nothing the log does not hold);
- I8  at most one leader per epoch in every ``cluster_info`` sample taken;
- I9  ``$all`` order agrees with stream order: in every node's ``$all`` each stream's versions
      increase (gap-free for the streams of the run) and its stream reads agree with its
      ``$all``;
- I10 no operation stayed pending; every reachable node serves the same ``$all``; a majority
      of the nodes could be read;
- I11 reads show committed state only: every stream read and metadata read answers (events,
      last version, not found, deleted, metadata) as the reference log stood at some position
      the read could have been served at (``esnode.verify.states``), and every node's final
      reads of the streams the run deleted or gave metadata answer as its final log ends. A
      node that served a delete or metadata change it had not committed, later lost, fails it.

Positions a read "could have been served at" run from the position of the newest write to its
stream acknowledged before it was invoked (leader reads only: followers may lag) up to, but
excluding, the first record of any write invoked after it completed.

Unknown appends may have landed or not: both are accepted, but at most once (I5), atomically
(I3) and where their expected version allows (I4). Reads of ``$all`` never show epoch
records (``$epoch-information``), so "gap-free" means "the same records as the final read of
``$all``", not "consecutive positions".
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from esnode.verify.history import (
    APPEND,
    CLUSTER_INFO,
    DELETE,
    FAIL,
    METADATA_PREFIX,
    OK,
    PENDING,
    READ_ALL,
    READ_METADATA,
    READ_STREAM,
    SET_METADATA,
    SUBSCRIBE,
    UNKNOWN,
    Event,
    FinalState,
    History,
    Op,
)
from esnode.verify.states import answers, timelines

INVARIANTS = tuple(f"I{i}" for i in range(1, 12))
DESCRIPTIONS = {
    "I1": "acknowledged appends present at their acknowledged positions on every node",
    "I2": "one event per (stream, version) and per $all position; nothing served truncated",
    "I3": "no event of a failed append visible; appends all-or-nothing",
    "I4": "expected-version exclusivity",
    "I5": "an event id at most once per stream",
    "I6": "real-time order of acknowledged appends; leader reads see earlier acks",
    "I7": "subscriptions in order, gap-free, a prefix of the final log",
    "I8": "at most one leader per epoch",
    "I9": "$all order agrees with stream order",
    "I10": "convergence: nodes identical, no operation pending",
    "I11": "reads show committed state only (deletes, tombstones, metadata)",
}
EXACT_MIN = -1
"""Expected versions >= this are exact (``-1`` no stream, ``N >= 0``); -2 any, -4 exists."""


@dataclass
class Violation:
    invariant: str
    message: str
    evidence: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.invariant}: {self.message}"


@dataclass
class Result:
    operations: dict[str, int]
    """Every operation by outcome: ok / fail / unknown / pending."""
    appends: dict[str, int]
    """Appends by outcome, plus ``unknown_landed`` and ``unknown_not_landed``."""
    events_checked: int
    """Event records examined: every node's final logs and stream reads, reads, deliveries."""
    distinct_events: int
    """Distinct events in the reference log."""
    nodes: list[str]
    unreachable: dict[str, str]
    violations: list[Violation]

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_invariant(self) -> dict[str, int]:
        counts = Counter(v.invariant for v in self.violations)
        return {inv: counts[inv] for inv in INVARIANTS if counts[inv]}

    def to_json(self) -> dict:
        return {"ok": self.ok, "operations": self.operations, "appends": self.appends,
                "events_checked": self.events_checked,
                "distinct_events": self.distinct_events, "nodes": self.nodes,
                "unreachable": self.unreachable, "violations_by_invariant": self.by_invariant(),
                "violations": [asdict(v) for v in self.violations]}


# --- helpers ------------------------------------------------------------------------------------
def reference_log(final: FinalState) -> tuple[str | None, list[Event]]:
    """The ``$all`` served by the most nodes (the longest on a tie): (a node serving it, log)."""
    if not final.logs:
        return None, []
    groups: dict[tuple, list[str]] = defaultdict(list)
    for node, log in sorted(final.logs.items()):
        groups[tuple((e.event_id, e.position) for e in log)].append(node)
    key = max(groups, key=lambda k: (len(groups[k]), len(k)))
    node = groups[key][0]
    return node, final.logs[node]


def observations(history: History, final: FinalState) -> list[tuple[str, list[Event], Op | None]]:
    out: list[tuple[str, list[Event], Op | None]] = []
    for node, log in sorted(final.logs.items()):
        out.append((f"final $all of {node}", log, None))
    for node, streams in sorted(final.streams.items()):
        for stream, events in sorted(streams.items()):
            out.append((f"final read of {stream} on {node}", events, None))
    for op in history:
        if op.kind in (READ_STREAM, READ_ALL, SUBSCRIBE) and op.events:
            out.append((f"op {op.id} ({op.kind} by {op.process})", op.events, op))
    return out


def _ev(e: Event) -> dict:
    return {"event_id": e.event_id, "stream": e.stream, "version": e.version,
            "position": e.position}


def _position(e: Event | None) -> int | None:
    return None if e is None else e.position


def _event_id(e: Event | None) -> str | None:
    return None if e is None else e.event_id


def _brief(op: Op | None) -> dict | None:
    return None if op is None else op.brief()


# --- the checks ---------------------------------------------------------------------------------
def check(history: History, final: FinalState | None) -> Result:
    """Check every invariant; the result lists each violation with its evidence."""
    final = final if final is not None else FinalState(converged_after=None)
    ops = list(history)
    appends = [op for op in ops if op.kind == APPEND]
    _, ref = reference_log(final)
    ref_by_id = {e.event_id: e for e in ref}
    obs = observations(history, final)
    violations: list[Violation] = []
    indexes = node_indexes(final)
    changed = state_streams(ops)
    violations += check_i1(appends, final, indexes, changed)
    violations += check_state_writes_kept(ops, final)
    violations += check_i2(obs)
    violations += check_reads_kept(ops, final, indexes)
    violations += check_i3(appends, obs, final, indexes)
    violations += check_failed_metadata_invisible(ops, final)
    landed = _landed(appends, ref_by_id)
    violations += check_i4(appends, landed)
    violations += check_i5(obs)
    violations += check_i6(ops, landed, changed)
    violations += check_i7(ops, ref, final.from_position)
    violations += check_i8(ops)
    violations += check_i9(final, {op.stream for op in appends}, changed)
    violations += check_i10(ops, final)
    violations += check_i11(ops, final, ref, landed, changed)

    counts = dict.fromkeys((OK, FAIL, UNKNOWN, PENDING), 0)
    append_counts = dict.fromkeys((OK, FAIL, UNKNOWN, PENDING), 0)
    for op in ops:
        counts[op.outcome] = counts.get(op.outcome, 0) + 1
        if op.kind == APPEND:
            append_counts[op.outcome] = append_counts.get(op.outcome, 0) + 1
    unknown = [op for op in appends if op.outcome == UNKNOWN]
    append_counts["unknown_landed"] = sum(1 for op in unknown if op.id in landed)
    append_counts["unknown_not_landed"] = len(unknown) - append_counts["unknown_landed"]
    return Result(counts, append_counts, sum(len(events) for _, events, _ in obs), len(ref),
                  sorted(final.logs), dict(final.unreachable), violations)


def _landed(appends: list[Op], ref_by_id: dict[str, Event]) -> dict[int, list[Event]]:
    """Appends that took effect, by op id -> their events in the reference log: ok ones (as
    found, possibly missing: I1 reports that) and unknown ones whose first event is there."""
    out = {}
    for op in appends:
        if op.outcome in (OK, UNKNOWN, PENDING) and op.event_ids and op.event_ids[0] in ref_by_id:
            out[op.id] = [ref_by_id[i] for i in op.event_ids if i in ref_by_id]
    return out


def node_indexes(final: FinalState) -> dict[str, dict[str, Event]]:
    """node -> event id -> its event in that node's final ``$all``."""
    return {node: {e.event_id: e for e in log} for node, log in final.logs.items()}


def state_streams(ops: list[Op]) -> set[str]:
    """Streams the run deleted or gave metadata: their reads may legitimately hide events."""
    return {op.stream for op in ops if op.kind in (DELETE, SET_METADATA)}


def check_i1(appends: list[Op], final: FinalState,
             indexes: dict[str, dict[str, Event]] | None = None,
             changed: set[str] = frozenset()) -> list[Violation]:
    indexes = indexes if indexes is not None else node_indexes(final)
    out = []
    for op in appends:
        if op.outcome != OK or op.first_version is None:
            continue
        want_versions = list(range(op.first_version, op.last_version + 1))
        for node, log in sorted(final.logs.items()):
            index = indexes[node]
            found = [index.get(i) for i in op.event_ids]
            missing = [i for i, e in zip(op.event_ids, found) if e is None]
            if missing:
                out.append(Violation("I1", f"acknowledged append {op.id} to {op.stream} "
                                     f"(versions {op.first_version}..{op.last_version}, position "
                                     f"{op.position}) is missing {len(missing)} of "
                                     f"{len(op.event_ids)} event(s) on {node}",
                                     {"node": node, "ops": [op.brief()], "missing": missing}))
                continue
            versions = [e.version for e in found]
            streams = {e.stream for e in found}
            if (streams != {op.stream} or versions != want_versions
                    or found[-1].position != op.position):
                out.append(Violation("I1", f"acknowledged append {op.id} is on {node} but not "
                                     f"where it was acknowledged: {op.stream}@{want_versions} "
                                     f"position {op.position} acknowledged, "
                                     f"{sorted(streams)}@{versions} position {found[-1].position} "
                                     "found", {"node": node, "ops": [op.brief()],
                                               "records": [_ev(e) for e in found]}))
            stream_read = final.streams.get(node, {}).get(op.stream)
            if stream_read is not None and op.stream not in changed:  # else: I11
                by_version = {e.version: e for e in stream_read}
                wrong = [(v, i) for v, i in zip(want_versions, op.event_ids)
                         if _event_id(by_version.get(v)) != i]
                if wrong:
                    out.append(Violation("I1", f"acknowledged append {op.id} is not in the "
                                         f"final read of {op.stream} on {node} at versions "
                                         f"{want_versions}", {
                                             "node": node, "ops": [op.brief()],
                                             "records": [_ev(by_version[v]) for v, _ in wrong
                                                         if v in by_version]}))
    return out


def check_i2(obs: list[tuple[str, list[Event], Op | None]]) -> list[Violation]:
    out = []
    slots: dict[tuple[str, int], tuple[str, str, Event]] = {}
    positions: dict[int, tuple[str, str, Event]] = {}
    reported: set = set()
    for source, events, op in obs:
        for e in events:
            first = slots.setdefault((e.stream, e.version), (e.event_id, source, e))
            if first[0] != e.event_id and ("s", e.stream, e.version) not in reported:
                reported.add(("s", e.stream, e.version))
                out.append(Violation("I2", f"{e.stream}@{e.version} is event {first[0]} in "
                                     f"{first[1]} but {e.event_id} in {source}", {
                                         "records": [_ev(first[2]), _ev(e)],
                                         "sources": [first[1], source],
                                         "ops": [b for b in (_brief(op),) if b]}))
            firstp = positions.setdefault(e.position, (e.event_id, source, e))
            if firstp[0] != e.event_id and ("p", e.position) not in reported:
                reported.add(("p", e.position))
                out.append(Violation("I2", f"$all position {e.position} is event {firstp[0]} "
                                     f"({firstp[2].stream}@{firstp[2].version}) in {firstp[1]} but "
                                     f"{e.event_id} ({e.stream}@{e.version}) in {source}", {
                                         "records": [_ev(firstp[2]), _ev(e)],
                                         "sources": [firstp[1], source],
                                         "ops": [b for b in (_brief(op),) if b]}))
    return out


def check_reads_kept(ops: list[Op], final: FinalState,
                     indexes: dict[str, dict[str, Event]] | None = None) -> list[Violation]:
    """I2: an event a read (of a stream or of ``$all``) served during the run is in every
    node's final ``$all`` at the same position: a node must never serve a record that is later
    truncated (a read past the commit position). Events before ``final.from_position`` are not
    in the final logs and are not checked; subscriptions are checked by I7. One violation per
    read: the first of its events that was lost."""
    nodes = sorted((indexes if indexes is not None else node_indexes(final)).items())
    out = []
    for op in ops:
        if op.kind not in (READ_STREAM, READ_ALL):
            continue
        lost = next(((e, node, index.get(e.event_id)) for e in op.events
                     if e.position >= final.from_position for node, index in nodes
                     if _position(index.get(e.event_id)) != e.position), None)
        if lost is None:
            continue
        e, node, kept = lost
        out.append(Violation("I2", f"op {op.id} ({op.kind} by {op.process}, node {op.node}) "
                             f"was served {e.event_id} as {e.stream}@{e.version} at position "
                             f"{e.position}, but the final $all of {node} has "
                             + ("no such event" if kept is None
                                else f"it at position {kept.position}")
                             + " (a served record was truncated)", {
                                 "node": node, "ops": [op.brief()],
                                 "records": [_ev(x) for x in (e, kept) if x]}))
    return out


def check_i3(appends: list[Op], obs: list[tuple[str, list[Event], Op | None]],
             final: FinalState,
             indexes: dict[str, dict[str, Event]] | None = None) -> list[Violation]:
    indexes = indexes if indexes is not None else node_indexes(final)
    out = []
    failed = {i: op for op in appends if op.outcome == FAIL for i in op.event_ids}
    reported: set = set()
    for source, events, reader in obs:
        for e in events:
            op = failed.get(e.event_id)
            if op is not None and (op.id, source) not in reported:
                reported.add((op.id, source))
                out.append(Violation("I3", f"event {e.event_id} of failed append {op.id} "
                                     f"({op.error}) is visible in {source} at "
                                     f"{e.stream}@{e.version}, position {e.position}", {
                                         "ops": [b for b in (op.brief(), _brief(reader)) if b],
                                         "records": [_ev(e)], "source": source}))
    for op in appends:
        if len(op.event_ids) < 2:
            continue
        for node, log in sorted(final.logs.items()):
            index = indexes[node]
            present = [i for i in op.event_ids if i in index]
            if 0 < len(present) < len(op.event_ids):
                out.append(Violation("I3", f"append {op.id} ({op.outcome}) is only partly on "
                                     f"{node}: {len(present)} of {len(op.event_ids)} events",
                                     {"node": node, "ops": [op.brief()],
                                      "records": [_ev(index[i]) for i in present]}))
    return out


def check_i4(appends: list[Op], landed: dict[int, list[Event]]) -> list[Violation]:
    out = []
    groups: dict[tuple[str, int], list[Op]] = defaultdict(list)
    for op in appends:
        if op.expected_version is None or op.expected_version < EXACT_MIN:
            continue
        took_effect = op.outcome == OK or op.id in landed
        if not took_effect:
            continue
        groups[(op.stream, op.expected_version)].append(op)
        first = op.first_version if op.outcome == OK else (
            landed[op.id][0].version if landed.get(op.id) else None)
        if first is not None and first != op.expected_version + 1:
            out.append(Violation("I4", f"append {op.id} with expected version "
                                 f"{op.expected_version} took effect at version {first} of "
                                 f"{op.stream} (must be {op.expected_version + 1})", {
                                     "ops": [op.brief()],
                                     "records": [_ev(e) for e in landed.get(op.id, [])]}))
    for (stream, expected), group in sorted(groups.items()):
        if len(group) > 1:
            out.append(Violation("I4", f"{len(group)} appends to {stream} with expected version "
                                 f"{expected} all took effect: "
                                 + ", ".join(f"{op.id} ({op.outcome})" for op in group), {
                                     "ops": [op.brief() for op in group],
                                     "records": [_ev(e) for op in group
                                                 for e in landed.get(op.id, [])]}))
    return out


def check_i5(obs: list[tuple[str, list[Event], Op | None]]) -> list[Violation]:
    out = []
    seen: dict[tuple[str, str], dict[int, tuple[str, Event]]] = defaultdict(dict)
    for source, events, _ in obs:
        for e in events:
            seen[(e.stream, e.event_id)].setdefault(e.version, (source, e))
    for (stream, event_id), versions in seen.items():
        if len(versions) > 1:
            out.append(Violation("I5", f"event id {event_id} is {len(versions)} times in "
                                 f"{stream}: versions {sorted(versions)}", {
                                     "records": [_ev(e) for _, e in versions.values()],
                                     "sources": [s for s, _ in versions.values()]}))
    return out


def check_i6(ops: list[Op], landed: dict[int, list[Event]],
             changed: set[str] = frozenset()) -> list[Violation]:
    """Leader reads of streams in ``changed`` (deleted, or given metadata) are left to
    ``check_i11``, whose model of deletes and metadata also tells stale reads of them."""
    out = []
    by_stream: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind == APPEND:
            by_stream[op.stream].append(op)

    def span(op: Op) -> tuple[int, int, int] | None:
        """(first version, last version, last position) where the append took effect."""
        if op.outcome == OK and op.first_version is not None:
            return op.first_version, op.last_version, op.position
        events = landed.get(op.id)
        if events:
            return events[0].version, events[-1].version, events[-1].position
        return None

    reads_of: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if (op.kind == READ_STREAM and op.outcome == OK and op.requires_leader
                and op.last_version is not None and op.stream not in changed):
            reads_of[op.stream].append(op)
    all_acked: list[Op] = []
    for stream, stream_ops in by_stream.items():
        acked = [op for op in stream_ops if op.outcome == OK and span(op)]
        all_acked += acked
        effective = [op for op in stream_ops if span(op)]
        for op, best in latest_acked_before(acked, effective, lambda o: o.last_version):
            first, _, position = span(op)
            if best is not op and (best.last_version >= first or best.position >= position):
                out.append(Violation("I6", f"on {stream}, append {best.id} was acknowledged "
                                     f"(versions ..{best.last_version}, position "
                                     f"{best.position}) before append {op.id} was invoked, "
                                     f"but {op.id} took effect at versions {first}.., position "
                                     f"{position}", {"ops": [best.brief(), op.brief()]}))
        for read, best in latest_acked_before(acked, reads_of.get(stream, []),
                                              lambda o: o.last_version):
            if read.last_version < best.last_version:
                out.append(Violation("I6", f"leader read {read.id} of {stream} (node "
                                     f"{read.node}) saw last version {read.last_version}, but "
                                     f"append {best.id} had been acknowledged at version "
                                     f"{best.last_version} before the read was invoked",
                                     {"ops": [best.brief(), read.brief()]}))
    # backwards leader reads of $all from the end: the newest event is at or past every ack
    reads = [op for op in ops if op.kind == READ_ALL and op.outcome == OK
             and op.requires_leader and op.from_position == -1 and op.events]
    for read, best in latest_acked_before(all_acked, reads, lambda o: o.position):
        newest = max(e.position for e in read.events)
        if newest < best.position:
            out.append(Violation("I6", f"leader read {read.id} of $all from the end saw "
                                 f"position {newest} at most, but append {best.id} had been "
                                 f"acknowledged at position {best.position} before",
                                 {"ops": [best.brief(), read.brief()]}))
    return out


def latest_acked_before(acked: list[Op], later: list[Op],
                        key: Callable[[Op], int]) -> Iterator[tuple[Op, Op]]:
    """For each op of ``later`` (by invocation time): (op, the op of ``acked`` with the
    highest ``key`` among those acknowledged before it was invoked), when there is one."""
    acked = sorted(acked, key=lambda o: o.t_complete)
    i, best = 0, None
    for op in sorted(later, key=lambda o: o.t_invoke):
        while i < len(acked) and acked[i].t_complete < op.t_invoke:
            if best is None or key(acked[i]) > key(best):
                best = acked[i]
            i += 1
        if best is not None:
            yield op, best


def check_i7(ops: list[Op], ref: list[Event], log_start: int) -> list[Violation]:
    out = []
    for sub in ops:
        if sub.kind != SUBSCRIBE or not sub.events:
            continue
        start = -1 if sub.from_position is None else sub.from_position
        last = None
        for k, e in enumerate(sub.events):
            if last is not None and e.position <= last.position:
                out.append(Violation("I7", f"subscription {sub.id} delivered position {e.position} "
                                     f"after {last.position} (delivery {k})", {
                                         "ops": [sub.brief()],
                                         "records": [_ev(last), _ev(e)]}))
                break
            last = e
        else:
            delivered = [e for e in sub.events if e.position >= log_start]
            expected = [e for e in ref if e.position > start]
            for k, e in enumerate(delivered):
                if k >= len(expected):
                    out.append(Violation("I7", f"subscription {sub.id} delivered "
                                         f"{len(delivered) - k} event(s) past the end of the "
                                         f"final log, from {e.stream}@{e.version} (position "
                                         f"{e.position})", {
                                             "ops": [sub.brief()], "records": [_ev(e)]}))
                    break
                want = expected[k]
                if (e.event_id, e.position) != (want.event_id, want.position):
                    what = ("skipped" if e.position > want.position
                            else "delivered something not in the final log instead of")
                    out.append(Violation("I7", f"subscription {sub.id} {what} {want.stream}@"
                                         f"{want.version} (position {want.position}): delivery "
                                         f"{k} is "
                                         f"{e.stream}@{e.version} (position {e.position})", {
                                             "ops": [sub.brief()],
                                             "records": [_ev(want), _ev(e)],
                                             "delivery": k}))
                    break
    return out


def check_i8(ops: list[Op]) -> list[Violation]:
    claims: dict[int, dict[str, list[Op]]] = defaultdict(lambda: defaultdict(list))
    for op in ops:
        if op.kind != CLUSTER_INFO or op.outcome != OK or not op.info:
            continue
        for name, state, epoch, *_ in op.info.get("members", []):
            if state == "Leader" and epoch is not None and epoch >= 0:
                claims[epoch][name].append(op)
    out = []
    for epoch, leaders in sorted(claims.items()):
        if len(leaders) > 1:
            evidence = [{"leader": name, "samples": [op.brief() | {"info": op.info}
                                                     for op in samples[:3]]}
                        for name, samples in sorted(leaders.items())]
            out.append(Violation("I8", f"epoch {epoch} had {len(leaders)} leaders: "
                                 + ", ".join(sorted(leaders)), {"claims": evidence}))
    return out


def check_i9(final: FinalState, run_streams: set[str],
             changed: set[str] = frozenset()) -> list[Violation]:
    out = []
    for node, log in sorted(final.logs.items()):
        last_position = None
        last_version: dict[str, Event] = {}
        at: dict[tuple[str, int], Event] = {}
        reported: set[str] = set()
        for e in log:
            if last_position is not None and e.position <= last_position:
                out.append(Violation("I9", f"$all of {node} is out of order: position "
                                     f"{e.position} after {last_position}", {"node": node,
                                                                 "records": [_ev(e)]}))
            last_position = e.position
            prev = last_version.get(e.stream)
            if e.stream not in reported:
                if prev is None:  # a tombstone may end a stream whose appends all failed
                    bad = e.stream in run_streams and e.version != 0 and not e.is_tombstone
                else:
                    bad = e.version <= prev.version or (
                        e.stream in run_streams and e.version != prev.version + 1
                        and not e.is_tombstone)
                if bad:
                    reported.add(e.stream)
                    out.append(Violation("I9", f"in the $all of {node}, {e.stream}@{e.version} "
                                         f"(position {e.position}) follows "
                                         + (f"{e.stream}@{prev.version} (position "
                                            f"{prev.position})" if prev
                                            else "nothing of that stream"),
                                         {"node": node, "records": [_ev(x) for x in (prev, e)
                                                                    if x]}))
            last_version[e.stream] = e
            at[(e.stream, e.version)] = e
        for stream, events in sorted(final.streams.get(node, {}).items()):
            versions = [e.version for e in events]
            if (stream in run_streams and stream not in changed
                    and versions != list(range(len(versions)))):
                out.append(Violation("I9", f"final read of {stream} on {node} is not versions "
                                     f"0..{len(versions) - 1} in order: {versions[:20]}",
                                     {"node": node}))
            for e in events:
                other = at.get((e.stream, e.version))
                if other is not None and (other.event_id, other.position) != (e.event_id,
                                                                                e.position):
                    out.append(Violation("I9", f"on {node}, {stream}@{e.version} reads as "
                                         f"{e.event_id} at "
                                         f"position {e.position} but $all has {other.event_id} at "
                                         f"{other.position}", {"node": node,
                                                         "records": [_ev(e), _ev(other)]}))
                    break
    return out


def check_i10(ops: list[Op], final: FinalState) -> list[Violation]:
    out = []
    pending = [op for op in ops if op.outcome == PENDING]
    if pending:
        out.append(Violation("I10", f"{len(pending)} operation(s) never ended", {
            "ops": [op.brief() for op in pending[:20]]}))
    total = len(final.logs) + len(final.unreachable)
    if total and len(final.logs) <= total // 2:
        out.append(Violation("I10", f"only {len(final.logs)} of {total} nodes could be read "
                             "after the run", {"unreachable": dict(final.unreachable)}))
    if not final.logs and not final.unreachable and any(op.kind == APPEND for op in ops):
        out.append(Violation("I10", "no final state was read from any node", {}))
    logs = sorted(final.logs.items())
    if len(logs) > 1:
        first_node, first = logs[0]
        a = [(e.event_id, e.position) for e in first]
        for node, log in logs[1:]:
            b = [(e.event_id, e.position) for e in log]
            if a != b:
                k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                waited = (f"within {final.deadline:g}s" if final.converged_after is None
                          else "")
                out.append(Violation("I10", f"$all differs between {first_node} ({len(a)} "
                                     f"events) and {node} ({len(b)}) from index {k} {waited}"
                                     .rstrip(), {
                                         "nodes": [first_node, node], "index": k,
                                         "records": [_ev(x) for x in (first[k:k + 1]
                                                                       + log[k:k + 1])]}))
    return out


# --- deletes and metadata -----------------------------------------------------------------------
def metadata_contents(final: FinalState, node: str | None = None) -> dict[str, dict[int, dict]]:
    """stream -> version of its metadata stream -> the metadata there, as ``node`` (or, for
    None, any node: the reference log's records are on every node that holds them) read it."""
    out: dict[str, dict[int, dict]] = defaultdict(dict)
    for name, streams in sorted(final.metadata.items()):
        if node is None or name == node:
            for stream, records in streams.items():
                for version, raw in records:
                    out[stream].setdefault(version, raw)
    return out


def _what(op: Op) -> str:
    if op.kind == SET_METADATA:
        return "metadata change"
    return "tombstone" if op.tombstone else "soft delete"


def check_state_writes_kept(ops: list[Op], final: FinalState) -> list[Violation]:
    """I1 for deletes and metadata changes: each acknowledged one is on every node at its
    acknowledged position (a soft delete or a metadata change as a record of ``$$S``, a
    metadata change at its acknowledged version and with what it wrote; a tombstone as
    ``S``'s tombstone)."""
    writes = [op for op in ops if op.kind in (DELETE, SET_METADATA) and op.outcome == OK
              and op.position is not None and op.position >= final.from_position]
    out = []
    for node, log in sorted(final.logs.items()) if writes else ():
        at = {e.position: e for e in log}
        contents = metadata_contents(final, node)
        for op in writes:
            rec = at.get(op.position)
            if op.kind == DELETE and op.tombstone:
                ok = rec is not None and rec.stream == op.stream and rec.is_tombstone
            else:
                ok = rec is not None and rec.stream == METADATA_PREFIX + op.stream and (
                    op.kind == DELETE or rec.version == op.last_version)
            content = None
            if ok and op.kind == SET_METADATA:
                content = contents.get(op.stream, {}).get(rec.version)
                ok = content is None or content == op.metadata  # None: content not read
            if not ok:
                found = ("no record" if rec is None else f"{rec.stream}@{rec.version}"
                         + (f" holding {content}" if content is not None else ""))
                out.append(Violation("I1", f"acknowledged {_what(op)} {op.id} of {op.stream} "
                                     f"(position {op.position}) is not on {node}: it has "
                                     f"{found} at that position", {
                                         "node": node, "ops": [op.brief()],
                                         "records": [_ev(rec)] if rec else []}))
    return out


def check_failed_metadata_invisible(ops: list[Op], final: FinalState) -> list[Violation]:
    """I3 for metadata: a metadata change that failed is in no node's final metadata (every
    change the workload makes carries a unique key, so it is recognized by its content)."""
    out = []
    for op in ops:
        if op.kind != SET_METADATA or op.outcome != FAIL or not op.metadata:
            continue
        for node, streams in sorted(final.metadata.items()):
            versions = [v for v, raw in streams.get(op.stream, []) if raw == op.metadata]
            if versions:
                out.append(Violation("I3", f"failed metadata change {op.id} of {op.stream} "
                                     f"({op.error}) is on {node} as {METADATA_PREFIX}"
                                     f"{op.stream}@{versions[0]}", {
                                         "node": node, "ops": [op.brief()]}))
    return out


def _write_positions(ops: list[Op], landed: dict[int, list[Event]]
                     ) -> tuple[Callable[[Op], int], Callable[[float], float]]:
    """(newest acknowledged write to a read's stream before the read was invoked, first record
    of any write invoked after a given time) as two lookups over the writes of the run."""
    acked: dict[str, list[tuple[float, int]]] = defaultdict(list)
    invoked: list[tuple[float, int]] = []
    for op in ops:
        if op.kind not in (APPEND, DELETE, SET_METADATA):
            continue
        if op.outcome == OK and op.position is not None:
            acked[op.stream].append((op.t_complete, op.position))
        first = (min(e.position for e in landed[op.id]) if landed.get(op.id)
                 else op.position if op.kind != APPEND and op.outcome == OK else None)
        if first is not None:
            invoked.append((op.t_invoke, first))
    newest: dict[str, tuple[list[float], list[int]]] = {}
    for stream, pairs in acked.items():
        pairs.sort()
        best, highs = -1, []
        for _, position in pairs:
            best = max(best, position)
            highs.append(best)
        newest[stream] = ([t for t, _ in pairs], highs)
    invoked.sort()
    times = [t for t, _ in invoked]
    lows: list[float] = [float("inf")] * (len(invoked) + 1)
    for k in range(len(invoked) - 1, -1, -1):
        lows[k] = min(lows[k + 1], invoked[k][1])

    def acked_before(read: Op) -> int:
        found = newest.get(read.stream)
        if not found:
            return -1
        k = bisect_left(found[0], read.t_invoke)
        return found[1][k - 1] if k else -1

    def first_after(t: float) -> float:
        return lows[bisect_right(times, t)]

    return acked_before, first_after


def _answer(op: Op) -> str:
    if op.error:
        return op.error
    if op.kind == READ_METADATA:
        return f"metadata version {op.last_version}: {op.metadata}"
    return (f"last version {op.last_version}, versions "
            f"{[e.version for e in op.events][:20]}")


def check_i11(ops: list[Op], final: FinalState, ref: list[Event],
              landed: dict[int, list[Event]], changed: set[str]) -> list[Violation]:
    out = []
    reads = [op for op in ops if op.kind in (READ_STREAM, READ_METADATA) and op.outcome == OK
             and op.stream and op.t_complete is not None]
    if reads:
        lines = timelines(ref, {op.stream for op in reads}, metadata_contents(final))
        acked_before, first_after = _write_positions(ops, landed)
        for op in reads:
            line = lines[op.stream]
            low = acked_before(op) if op.requires_leader else -1
            if op.events:  # it was served them: it read at or after them
                low = max(low, max(e.position for e in op.events))
            high = first_after(op.t_complete)
            seen = line.between(low, high)
            if any(answers(s, op) is not False for s in seen):
                continue
            window = {"from": low, "before": None if high == float("inf") else high}
            evidence = {"ops": [op.brief()], "window": window,
                        "states": [s._asdict() for s in seen][:5]}
            what = f"{op.kind} {op.id} of {op.stream} (by {op.process}, node {op.node})"
            if not any(answers(s, op) is not False for s in line.between(-1, high)):
                out.append(Violation("I11", f"{what} answered {_answer(op)}: the final log "
                                     "never gave that (a delete, tombstone, metadata change or "
                                     "event it saw was never committed)", evidence))
            elif op.stream in changed:  # plain streams: I6 tells stale leader reads
                out.append(Violation("I11", f"leader {what} answered {_answer(op)}: the final "
                                     f"log gave that only before position {low}, written by a "
                                     "write acknowledged before the read was invoked (it saw a "
                                     "change that was never committed, or a stale state)",
                                     evidence))
    out += _check_final_reads(final, changed)
    return out


def _check_final_reads(final: FinalState, changed: set[str]) -> list[Violation]:
    """I11 on the final state: every node's final read of a stream the run deleted or gave
    metadata is what its own final log leaves visible."""
    out = []
    for node, reads in sorted(final.streams.items()):
        streams = changed & set(reads)
        if node not in final.logs or not streams:
            continue
        lines = timelines(final.logs[node], streams, metadata_contents(final, node))
        for stream in sorted(streams):
            state = lines[stream].last
            want = state.visible()
            got = [e.version for e in reads[stream]]
            if want is not None and got != (want if type(want) is list else []):
                out.append(Violation("I11", f"final read of {stream} on {node} is versions "
                                     f"{got[:20]}, but its final $all leaves "
                                     + (want if type(want) is str else f"versions {want[:20]}")
                                     + " visible", {"node": node, "state": state._asdict()}))
    return out


def describe(v: Violation, limit: int = 600) -> str:
    """One violation with its evidence, for people."""
    import json

    text = json.dumps(v.evidence, default=str)
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{v.invariant}: {v.message}\n    evidence: {text}"


def summary(result: Result) -> dict[str, Any]:
    return {"operations": result.operations, "appends": result.appends,
            "events_checked": result.events_checked, "violations": len(result.violations)}
