"""The test-side part of the history checking (no processes: hand-made replies and logs): raw
replies become ok / fail / unknown, protocol-array logs reach esnode.verify's checker (whose
invariants tests/verify/test_checker.py covers one by one), unexpected replies and records
readers were served but the logs lost are reported."""

from __future__ import annotations

import pytest

from esnode.verify.history import Event
from tests.cluster.checker import FAIL, OK, UNEXPECTED, UNKNOWN, CheckFailed, History, check


def ev(eid: str, stream: str, version: int, position: int) -> list:
    return [eid, stream, version, "T", b"", b"", True, 0, position]


GOOD = [ev("a", "s", 0, 1), ev("b", "s", 1, 2), ev("c", "t", 0, 3)]


def recorded() -> History:
    h = History()
    for eid, position in (("a", 1), ("b", 2)):
        op = h.append("s", [eid], "node1")
        assert h.complete(op, "ok", {"position": position, "first_version": position - 1,
                                     "last_version": position - 1}) == OK
    assert h.complete(h.append("t", ["c"], "node2"), None, None, "timed out") == UNKNOWN
    assert h.complete(h.append("t", ["e"], "node2"), "error", {"code": "no_quorum"}) == FAIL
    return h


def test_replies_are_classified_and_a_good_history_passes():
    h = recorded()
    assert [(op.process, op.outcome, op.error) for op in h] == [
        ("node1", OK, ""), ("node1", OK, ""), ("node2", UNKNOWN, "timed out"),
        ("node2", FAIL, "no_quorum")]
    assert h.complete(h.append("t", ["d"], "node2"), "error",
                      {"code": "outcome_unknown"}) == UNKNOWN
    assert len(h.of(OK)) == 2 and len(h.of(UNKNOWN)) == 2
    result = check(h, {"n1": GOOD, "n2": list(GOOD)})
    assert result.appends["unknown_landed"] == 1


@pytest.mark.parametrize("logs, expected", [
    ({"n1": GOOD, "n2": GOOD[:1] + GOOD[2:]}, "I1: acknowledged append 1"),     # lost ack
    ({"n1": GOOD + [ev("e", "t", 1, 4)]}, "I3: event e of failed append"),
    ({"n1": GOOD, "n2": GOOD[:2]}, "I10: $all differs"),
])
def test_violations_are_raised_with_their_evidence(logs, expected):
    with pytest.raises(CheckFailed, match="evidence") as caught:
        check(recorded(), logs)
    assert expected in str(caught.value)


def test_an_unexpected_reply_is_reported():
    h = recorded()
    op = h.append("s", ["x"], "node1")
    assert h.complete(op, "error", {"code": "bad_request"}) == UNEXPECTED
    assert op.outcome == UNKNOWN
    with pytest.raises(CheckFailed, match="unexpected reply"):
        check(h, {"n1": GOOD})


def test_a_record_a_reader_was_served_that_the_logs_lost_is_reported():
    h = recorded()
    read = h.served("n2")
    read.events += [Event("a", "s", 0, 1), Event("zz", "s", 2, 3)]
    History.end(read, OK)
    with pytest.raises(CheckFailed, match="served record was truncated"):
        check(h, {"n1": GOOD})
    read.events.pop()
    check(h, {"n1": GOOD})
