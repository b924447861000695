"""The checker on hand-made histories: each invariant I1–I10 broken on purpose must be
reported (with evidence), and clean histories — unknown outcomes that landed and ones that
did not, epoch records hidden from $all — must pass. Plus a hypothesis model that generates
clean histories, and the same histories with an acknowledged event dropped from one node."""

from __future__ import annotations

import copy
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esnode.verify.checker import check
from esnode.verify.states import timelines
from esnode.verify.history import (
    APPEND,
    CLUSTER_INFO,
    DELETE,
    FAIL,
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
    dump,
    parse,
)

NODES = ("n1", "n2", "n3")


class Builder:
    """Ops with explicit times; ``final(log)`` builds every node's final state from one log."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def op(self, kind: str, outcome: str, t0: float, t1: float | None, **fields) -> Op:
        op = Op(len(self.ops), fields.pop("process", "c0"), kind, t0, t1, outcome, **fields)
        self.ops.append(op)
        return op

    def append(self, outcome, t0, t1, stream, ids, expected=-2, at=None, **fields) -> Op:
        """``at``: (first_version, last_version, position) acknowledged."""
        if at is not None:
            fields.update(first_version=at[0], last_version=at[1], position=at[2])
        return self.op(APPEND, outcome, t0, t1, stream=stream, expected_version=expected,
                       event_ids=list(ids), **fields)

    def history(self) -> History:
        return History(self.ops)


def final_from(log: list[list], nodes=NODES, from_position: int = 0) -> FinalState:
    streams: dict[str, list] = {}
    for e in log:
        streams.setdefault(e[1], []).append(e)
    return FinalState(from_position, {n: copy.deepcopy(log) for n in nodes},
                      {n: copy.deepcopy(streams) for n in nodes})


# The clean scenario: position 12 is an epoch record (hidden from $all reads).
LOG = [["a1", "s", 0, 10], ["f1", "p", 0, 11], ["c1", "s", 1, 13], ["c2", "s", 2, 14],
       ["d1", "s", 3, 15]]


def clean() -> tuple[Builder, FinalState]:
    b = Builder()
    b.append(OK, 0.0, 1.0, "s", ["a1"], -1, (0, 0, 10))
    b.append(FAIL, 0.5, 1.5, "s", ["b1"], -1, error="wrong_expected_version", process="c1")
    b.append(OK, 1.2, 2.0, "p", ["f1"], -2, (0, 0, 11), process="c1")
    b.append(OK, 2.1, 3.0, "s", ["c1", "c2"], 0, (1, 2, 14))
    b.append(UNKNOWN, 3.1, 4.0, "s", ["d1"], 2, error="outcome_unknown")       # landed
    b.append(UNKNOWN, 3.2, 4.5, "p", ["e1"], -2, error="outcome_unknown", process="c1")  # not
    b.op(READ_STREAM, OK, 3.05, 3.1, stream="s", requires_leader=True, last_version=2,
         events=[["c2", "s", 2, 14], ["c1", "s", 1, 13]])
    b.op(READ_ALL, OK, 3.05, 3.1, from_position=-1, requires_leader=True,
         events=[["c2", "s", 2, 14]])
    b.op(SUBSCRIBE, OK, 0.0, 5.0, stream="$all", from_position=-1, process="sub0",
         events=copy.deepcopy(LOG[:4]))
    b.op(CLUSTER_INFO, OK, 0.1, 0.2, node="n1", process="sampler",
         info={"node": "n1", "state": "Leader", "leader": "n1",
               "members": [["n1", "Leader", 1, True], ["n2", "Follower", 1, True]]})
    b.op(CLUSTER_INFO, OK, 3.1, 3.2, node="n2", process="sampler",
         info={"node": "n2", "state": "Leader", "leader": "n2",
               "members": [["n1", "Leader", 1, False], ["n2", "Leader", 2, True]]})
    return b, final_from(LOG)


def fired(b: Builder, final: FinalState) -> set[str]:
    result = check(b.history(), final)
    for v in result.violations:
        assert v.message and isinstance(v.evidence, dict) and v.evidence, v
    return set(result.by_invariant())


def test_the_clean_history_passes_with_an_unknown_that_landed_and_one_that_did_not():
    b, final = clean()
    result = check(b.history(), final)
    assert result.ok, [str(v) for v in result.violations]
    assert result.appends["unknown_landed"] == 1 and result.appends["unknown_not_landed"] == 1
    assert result.operations == {"ok": 8, "fail": 1, "unknown": 2, "pending": 0}
    assert result.distinct_events == 5 and result.events_checked > 5 * 3


def test_the_unknown_append_is_also_fine_when_nothing_landed():
    b, _ = clean()
    assert fired(b, final_from([e for e in LOG if e[0] != "d1"])) == set()


def test_a_saved_history_reads_back_identically():
    b, final = clean()
    out = io.StringIO()
    dump(b.history(), final, out)
    history, again = parse(out.getvalue().splitlines())
    assert [op.to_json() for op in history] == [op.to_json() for op in b.ops]
    assert again == final
    assert check(history, again).ok


# --- each invariant, broken -------------------------------------------------------------------
def test_i1_an_acked_event_missing_from_one_node():
    b, final = clean()
    final.logs["n3"] = [e for e in final.logs["n3"] if e.event_id != "c2"]
    final.streams["n3"]["s"] = [e for e in final.streams["n3"]["s"]
                               if e.event_id != "c2"]
    assert "I1" in fired(b, final)
    v = next(v for v in check(b.history(), final).violations if v.invariant == "I1")
    assert v.evidence["node"] == "n3" and v.evidence["missing"] == ["c2"]


def test_i1_an_acked_event_at_another_position_than_acknowledged():
    b, final = clean()
    b.ops[3].position = 12
    assert fired(b, final) == {"I1"}


def test_i2_two_event_ids_for_one_stream_version():
    b, final = clean()
    b.op(READ_STREAM, OK, 5.0, 5.1, stream="s", last_version=1,
         events=[["zz", "s", 1, 13]])
    assert fired(b, final) == {"I2"}


def test_i2_a_read_served_a_record_that_was_later_truncated():
    b, final = clean()
    b.op(READ_ALL, OK, 3.5, 3.6, from_position=-1, node="n2",   # an uncommitted tail
         events=[["d1", "s", 3, 15], ["zz", "s", 4, 16]])
    b.op(READ_STREAM, OK, 3.5, 3.6, stream="s", node="n2", last_version=3,
         events=[["d1", "s", 3, 17]])                           # another position
    result = check(b.history(), final)
    assert set(result.by_invariant()) == {"I2"} and len(result.violations) == 2
    assert "no such event" in str(result.violations[0])
    assert "at position 15" in str(result.violations[1])
    assert result.violations[0].evidence["records"] == [
        {"event_id": "zz", "stream": "s", "version": 4, "position": 16}]
    b.ops[-2].events = [Event("old", "pre", 0, 3), Event("d1", "s", 3, 15)]  # before the logs
    b.ops[-1].events = [Event("d1", "s", 3, 15)]
    assert fired(b, final_from(LOG, from_position=5)) == set()


def test_i3_an_event_of_a_failed_append_is_visible():
    b, final = clean()
    final = final_from(LOG + [["b1", "s", 4, 16]])
    assert fired(b, final) == {"I3"}


def test_i3_an_append_visible_only_in_part():
    b, _ = clean()
    b.append(UNKNOWN, 5.0, 6.0, "p", ["g1", "g2"], -2)
    assert fired(b, final_from(LOG + [["g1", "p", 1, 16]])) == {"I3"}


def test_i4_two_appends_with_the_same_expected_version_both_ok():
    b, _ = clean()
    b.append(OK, 5.0, 6.0, "s", ["g1"], 0, (4, 4, 16))
    assert "I4" in fired(b, final_from(LOG + [["g1", "s", 4, 16]]))


def test_i4_an_unknown_append_that_landed_where_its_expected_version_forbids():
    b, _ = clean()
    b.ops[4].expected_version = 1    # d1 landed at version 3: expected 2 was the only way
    assert fired(b, final_from(LOG)) == {"I4"}


def test_i5_an_event_id_twice_in_a_stream():
    b, _ = clean()
    assert "I5" in fired(b, final_from(LOG + [["f1", "p", 1, 16]]))


def test_i6_an_append_acked_before_another_was_invoked_lands_after_it():
    b = Builder()
    b.append(OK, 0.0, 1.0, "q", ["x"], -2, (1, 1, 12))
    b.append(OK, 2.0, 3.0, "q", ["y"], -2, (0, 0, 10))
    assert fired(b, final_from([["y", "q", 0, 10], ["x", "q", 1, 12]])) == {"I6"}
    b.ops[0].t_complete = 2.5      # overlapping: either order is fine
    assert fired(b, final_from([["y", "q", 0, 10], ["x", "q", 1, 12]])) == set()


def test_i6_a_leader_read_misses_an_earlier_ack():
    b, final = clean()
    b.op(READ_STREAM, OK, 3.5, 3.6, stream="s", requires_leader=True, last_version=1,
         events=[["c1", "s", 1, 13]])
    assert fired(b, final) == {"I6"}
    b.ops[-1].requires_leader = False   # a follower may lag: not a violation
    assert fired(b, final) == set()


def test_i6_a_leader_read_of_all_misses_an_earlier_ack():
    b, final = clean()
    b.op(READ_ALL, OK, 3.5, 3.6, from_position=-1, requires_leader=True,
         events=[["a1", "s", 0, 10]])
    assert fired(b, final) == {"I6"}


@pytest.mark.parametrize("deliveries", [
    [LOG[0], LOG[2]],                  # skipped f1
    [LOG[0], LOG[1], LOG[1]],          # duplicate
    [LOG[1], LOG[0]],                  # out of order
    [LOG[0], ["zz", "s", 1, 12]],      # not in the final log
    LOG + [["later", "s", 4, 20]],     # past the end of the final log
], ids=["gap", "duplicate", "order", "foreign", "beyond"])
def test_i7_subscription_deliveries_that_are_not_a_prefix_of_the_final_log(deliveries):
    b, final = clean()
    b.op(SUBSCRIBE, OK, 0.0, 5.0, stream="$all", from_position=-1, events=copy.deepcopy(
        deliveries))
    assert "I7" in fired(b, final)


def test_i7_a_subscription_from_a_position_starts_after_it():
    b, final = clean()
    b.op(SUBSCRIBE, OK, 0.0, 5.0, stream="$all", from_position=11, events=copy.deepcopy(
        LOG[2:]))
    assert fired(b, final) == set()
    b.ops[-1].from_position = 10
    assert fired(b, final) == {"I7"}


def test_i8_two_leaders_in_one_epoch():
    b, final = clean()
    b.op(CLUSTER_INFO, OK, 3.3, 3.4, node="n3", process="sampler",
         info={"node": "n3", "state": "Leader", "leader": "n3",
               "members": [["n3", "Leader", 2, True]]})
    assert fired(b, final) == {"I8"}


def test_i9_all_order_disagrees_with_stream_order():
    b, _ = clean()
    log = copy.deepcopy(LOG)
    log[2][2], log[3][2] = 2, 1                 # $all has s@2 before s@1
    final = final_from(log)
    for n in NODES:                             # the stream reads keep version order
        final.streams[n]["s"].sort(key=lambda e: e.version)
    assert "I9" in fired(b, final)


def test_i9_a_gap_in_a_stream_of_the_run():
    b, _ = clean()
    b.append(UNKNOWN, 5.0, 6.0, "p", ["g1"], -2)
    assert fired(b, final_from(LOG + [["g1", "p", 2, 16]])) == {"I9"}


def test_i9_a_tombstone_on_a_stream_whose_appends_never_landed_is_fine():
    """Seen in the loss-of-both-followers run: the doomed stream's only append was lost with
    the old leader's uncommitted tail, then the stream was tombstoned on the new leader."""
    b, _ = clean()
    b.append(UNKNOWN, 5.0, 6.0, "t", ["t1"], -2, error="outcome_unknown")
    final = final_from(LOG + [["tomb-t", "t", 2**63 - 1, 16]])
    for n in NODES:
        del final.streams[n]["t"]  # a tombstoned stream reads as deleted
    assert "I9" not in fired(b, final)
    assert "I9" in fired(b, final_from(LOG + [["t2", "t", 1, 16]]))  # not a tombstone


def test_i10_an_operation_that_never_ended():
    b, final = clean()
    b.append(PENDING, 5.0, None, "p", ["g1"], -2)
    assert fired(b, final) == {"I10"}


def test_i10_nodes_that_did_not_converge():
    b, final = clean()
    final.logs["n3"] = final.logs["n3"][:-1]   # d1 (an unknown append) only on n1, n2
    final.streams["n3"]["s"] = final.streams["n3"]["s"][:-1]
    final.converged_after = None
    assert fired(b, final) == {"I10"}


def test_i10_a_minority_of_nodes_readable():
    b, final = clean()
    for n in ("n2", "n3"):
        del final.logs[n], final.streams[n]
        final.unreachable[n] = "unavailable"
    assert fired(b, final) == {"I10"}


# --- hypothesis: random clean histories from a sequential model ----------------------------------
action = st.tuples(
    st.sampled_from(["exact", "stale", "any", "read", "read_all"]),
    st.integers(0, 2),                                   # stream
    st.integers(1, 3),                                   # events
    st.sampled_from([OK, OK, "landed", UNKNOWN, FAIL]),  # what happens to a write
    st.floats(0.1, 4.0),                                 # duration
    st.booleans(),                                       # an epoch record before it
)


def model_history(actions) -> tuple[Builder, FinalState]:
    """Apply the actions in invocation order to a model of streams: the log is the order of
    invocation, so every real-time constraint holds; outcomes are ok, unknown (landed or not)
    or a definite failure that changed nothing."""
    b = Builder()
    log: list[list] = []
    versions = {f"m{k}": -1 for k in range(3)}
    position = 0
    for step, (kind, k, n, fate, duration, epoch) in enumerate(actions):
        t0, t1 = float(step), step + duration
        stream = f"m{k}"
        if epoch:
            position += 1                  # an epoch record: never shown by $all reads
        if kind == "read":
            b.op(READ_STREAM, OK, t0, t1, stream=stream, requires_leader=True,
                 last_version=versions[stream],
                 events=[e for e in log if e[1] == stream][-5:][::-1])
            continue
        if kind == "read_all":
            b.op(READ_ALL, OK, t0, t1, from_position=-1, requires_leader=True,
                 events=log[-5:][::-1])
            continue
        expected = {"exact": versions[stream], "stale": versions[stream] - 1, "any": -2}[kind]
        ids = [f"e{step}-{i}" for i in range(n)]
        lands = (fate in (OK, "landed") and (expected in (-2, versions[stream])))
        if lands:
            first = versions[stream] + 1
            for i, eid in enumerate(ids):
                log.append([eid, stream, first + i, position])
                position += 1
            versions[stream] += n
        if lands and fate == OK:
            b.append(OK, t0, t1, stream, ids, expected, (first, versions[stream], position - 1))
        elif lands or fate == UNKNOWN:
            b.append(UNKNOWN, t0, t1, stream, ids, expected, error="outcome_unknown")
        else:
            b.append(FAIL, t0, t1, stream, ids, expected, error="wrong_expected_version")
    b.op(SUBSCRIBE, OK, 0.0, float(len(actions)), stream="$all", from_position=-1,
         events=copy.deepcopy(log[:len(log) // 2]))
    return b, final_from(log)


@settings(max_examples=150, deadline=None)
@given(st.lists(action, max_size=40))
def test_random_clean_histories_pass(actions):
    b, final = model_history(actions)
    result = check(b.history(), final)
    assert result.ok, [str(v) for v in result.violations]


@settings(max_examples=100, deadline=None)
@given(st.lists(action, min_size=1, max_size=40), st.data())
def test_dropping_an_acked_event_from_one_node_is_always_caught(actions, data):
    b, final = model_history(actions)
    acked = [i for op in b.ops if op.kind == APPEND and op.outcome == OK for i in op.event_ids]
    if not acked:
        return
    victim = data.draw(st.sampled_from(acked))
    node = data.draw(st.sampled_from(NODES))
    final.logs[node] = [e for e in final.logs[node] if e.event_id != victim]
    assert "I1" in set(check(b.history(), final).by_invariant())


# --- deletes and metadata (I11, and I1 / I3 for them) -------------------------------------------
TOMB = 2**63 - 1
META = {"$maxCount": 2, "verify": "c0-1"}
DELETED = {**META, "$tb": TOMB}
UNDELETED = {**META, "$tb": 4}
# s: three events, $maxCount 2, a fourth, a soft delete, recreated by a fifth; u: tombstoned
STATE_LOG = [["u1", "u", 0, 9], ["a1", "s", 0, 10], ["a2", "s", 1, 11], ["a3", "s", 2, 12],
             ["m0", "$$s", 0, 13], ["a4", "s", 3, 14], ["d0", "$$s", 1, 15],
             ["r0", "$$s", 2, 16], ["a5", "s", 4, 17], ["t0", "u", TOMB, 18]]


def stated() -> tuple[Builder, FinalState]:
    """A clean history of appends, a metadata change, a soft delete, a recreation and a
    tombstone, with leader and follower reads that each saw a committed state."""
    b = Builder()
    b.append(OK, 0.0, 0.1, "u", ["u1"], -2, (0, 0, 9))
    b.append(OK, 0.2, 1.0, "s", ["a1", "a2", "a3"], -2, (0, 2, 12))
    b.op(SET_METADATA, OK, 1.1, 1.2, stream="s", expected_version=-2, metadata=META,
         first_version=0, last_version=0, position=13)
    b.append(OK, 1.3, 1.4, "s", ["a4"], -2, (3, 3, 14))
    b.op(DELETE, OK, 1.5, 1.6, stream="s", expected_version=-2, position=15)
    b.append(OK, 1.7, 1.8, "s", ["a5"], -2, (4, 4, 17))
    b.op(DELETE, OK, 2.0, 2.1, stream="u", expected_version=-2, tombstone=True, position=18)
    leader = {"requires_leader": True, "process": "c2"}
    b.op(READ_STREAM, OK, 1.25, 1.26, stream="s", last_version=2, max_count=20,
         events=[["a3", "s", 2, 12], ["a2", "s", 1, 11]], **leader)       # cut by $maxCount
    b.op(READ_METADATA, OK, 1.25, 1.26, stream="s", last_version=0, metadata=META, **leader)
    b.op(READ_STREAM, OK, 1.65, 1.66, stream="s", last_version=-1, max_count=20,
         error="stream_not_found", **leader)
    b.op(READ_STREAM, OK, 1.65, 1.66, stream="s", last_version=2, max_count=20,   # a follower
         events=[["a3", "s", 2, 12], ["a2", "s", 1, 11], ["a1", "s", 0, 10]], process="c1")
    b.op(READ_STREAM, OK, 1.9, 1.95, stream="s", last_version=4, max_count=20,
         events=[["a5", "s", 4, 17]], **leader)
    b.op(READ_STREAM, OK, 2.2, 2.3, stream="u", max_count=20, error="stream_deleted", **leader)
    b.op(READ_METADATA, OK, 2.2, 2.3, stream="u", error="stream_deleted", **leader)
    final = FinalState(9, {n: copy.deepcopy(STATE_LOG) for n in NODES},
                       {n: {"s": [["a5", "s", 4, 17]], "u": []} for n in NODES},
                       metadata={n: {"s": [[0, META], [1, DELETED], [2, UNDELETED]], "u": []}
                                 for n in NODES})
    return b, final


def test_deletes_tombstones_and_metadata_read_as_committed_pass():
    b, final = stated()
    result = check(b.history(), final)
    assert result.ok, [str(v) for v in result.violations]
    out = io.StringIO()
    dump(b.history(), final, out)
    history, again = parse(out.getvalue().splitlines())
    assert again == final and [op.to_json() for op in history] == [op.to_json() for op in b.ops]
    assert check(history, again).ok


def test_i11_a_leader_read_that_saw_a_delete_that_never_committed():
    """The issue's case: the leader answered stream_not_found for a delete whose outcome was
    unknown and that the final log does not hold."""
    b, final = stated()
    b.op(DELETE, UNKNOWN, 1.25, 1.5, stream="s", expected_version=-2, error="outcome_unknown")
    b.op(READ_STREAM, OK, 1.26, 1.27, stream="s", last_version=-1, max_count=20,
         error="stream_not_found", requires_leader=True)
    result = check(b.history(), final)
    assert set(result.by_invariant()) == {"I11"}, [str(v) for v in result.violations]
    (v,) = result.violations
    assert "stream_not_found" in v.message and v.evidence["ops"][0]["id"] == len(b.ops) - 1
    assert v.evidence["window"] == {"from": 13, "before": 14}


def test_i11_a_read_that_saw_metadata_that_never_committed():
    b, final = stated()
    b.op(READ_METADATA, OK, 1.26, 1.27, stream="s", last_version=1,
         metadata={"$maxCount": 1, "verify": "lost"})
    assert fired(b, final) == {"I11"}


def test_i11_a_page_cut_by_a_max_count_that_never_committed():
    b, final = stated()
    b.op(SET_METADATA, UNKNOWN, 1.05, 2.0, stream="s", expected_version=-2,
         metadata={"$maxCount": 1, "verify": "lost"}, error="outcome_unknown")
    b.op(READ_STREAM, OK, 1.06, 1.07, stream="s", last_version=2, max_count=20,
         events=[["a3", "s", 2, 12]])
    assert fired(b, final) == {"I11"}


def test_i11_a_leader_read_that_missed_an_acknowledged_delete():
    b, final = stated()
    b.op(READ_STREAM, OK, 1.65, 1.66, stream="s", last_version=3, max_count=20,
         events=[["a4", "s", 3, 14], ["a3", "s", 2, 12]], requires_leader=True)
    assert fired(b, final) == {"I11"}
    b.ops[-1].requires_leader = False                      # a follower may lag
    assert fired(b, final) == set()


def test_i11_a_final_read_that_ignores_the_metadata():
    b, final = stated()
    final.streams["n3"]["s"] = [Event("a4", "s", 3, 14), Event("a5", "s", 4, 17)]
    assert fired(b, final) == {"I11"}


def test_i1_an_acknowledged_delete_or_metadata_change_missing_from_a_node():
    b, final = stated()
    final.logs["n2"] = [e for e in final.logs["n2"] if e.event_id != "t0"]
    assert "I1" in fired(b, final)
    b, final = stated()
    final.metadata["n3"]["s"][0] = [0, {"$maxCount": 3}]
    v = next(v for v in check(b.history(), final).violations if v.invariant == "I1")
    assert v.evidence["node"] == "n3" and "metadata change" in v.message


def test_i3_a_failed_metadata_change_that_is_visible():
    b, final = stated()
    b.ops[2].outcome, b.ops[2].error = FAIL, "not_leader"
    assert "I3" in fired(b, final)


def test_a_timeline_tells_the_states_that_held_in_a_window():
    line = timelines([Event("a", "s", 0, 3), Event("m", "$$s", 0, 5), Event("t", "s", TOMB, 8)],
                     {"s"}, {"s": {0: {"$maxCount": 1}}})["s"]
    assert line.positions == [-1, 3, 5, 8]
    assert [s.last for s in line.between(-1, 3)] == [-1]
    assert [(s.last, s.meta_version) for s in line.between(3, 6)] == [(0, -1), (0, 0)]
    assert line.between(4, 5) == [line.states[1]] and line.between(9, float("inf")) == [line.last]
    assert line.last.tombstoned and line.last.visible() == "stream_deleted"
    assert line.states[2].visible() == [0] and line.states[0].visible() == "stream_not_found"
