"""The history checker catches each violation it claims to (no processes: hand-made logs)."""

from __future__ import annotations

import pytest

from tests.cluster.checker import CheckFailed, History, check


def ev(eid: str, stream: str, version: int, position: int) -> list:
    return [eid, stream, version, "T", b"", b"", True, 0, position]


def history(*ops) -> History:
    """ops: (ids, stream, outcome, position, first_version, last_version)."""
    h = History()
    for t, (ids, stream, outcome, position, first, last) in enumerate(ops):
        op = h.invoke(stream, ids, "node1")
        if outcome == "ok":
            h.complete(op, "ok", {"position": position, "first_version": first,
                                  "last_version": last})
        elif outcome == "fail":
            h.complete(op, "error", {"code": "no_quorum"})
        else:
            h.complete(op, None, None)
        op.t_invoke, op.t_complete = float(2 * t), float(2 * t + 1)
    return h


GOOD = [ev("a", "s", 0, 1), ev("b", "s", 1, 2), ev("c", "t", 0, 3), ev("d", "s", 2, 4)]
OPS = [(["a"], "s", "ok", 1, 0, 0), (["b"], "s", "ok", 2, 1, 1), (["c"], "t", "unknown", 0, 0, 0),
       (["d"], "s", "ok", 4, 2, 2), (["e"], "t", "fail", 0, 0, 0)]


def test_a_good_history_passes():
    check(history(*OPS), {"n1": GOOD, "n2": list(GOOD)})


@pytest.mark.parametrize("logs, expected", [
    ({"n1": GOOD, "n2": GOOD[:3]}, "missing"),                                  # lost ack (I1)
    ({"n1": [ev("a", "s", 0, 1), ev("b", "s", 1, 2), ev("c", "t", 0, 3), ev("d", "s", 2, 5)]},
     "is at position 5"),                                                      # moved (I1)
    ({"n1": GOOD + [ev("e", "t", 1, 5)]}, "failed"),                            # aborted read (I3)
    ({"n1": GOOD + [ev("c", "t", 1, 5)]}, "twice"),                             # duplicate (I5)
    ({"n1": [ev("a", "s", 0, 1), ev("b", "s", 2, 2), ev("c", "t", 0, 3), ev("d", "s", 2, 4)]},
     "gap or duplicate"),                                                      # gap (I2/I9)
    ({"n1": GOOD, "n2": [ev("a", "s", 0, 1), ev("b", "s", 1, 2), ev("x", "t", 0, 3),
                         ev("d", "s", 2, 4)]}, "(I2)"),                         # divergence
    ({"n1": GOOD, "n2": [*GOOD[:2], GOOD[3]]}, "$all differs"),                 # not converged
    ({"n1": [GOOD[1], GOOD[0], *GOOD[2:]]}, "not ordered"),
])
def test_each_violation_is_reported(logs, expected):
    with pytest.raises(CheckFailed, match=expected.replace("(", r"\(").replace(")", r"\)")
                       .replace("$", r"\$")):
        check(history(*OPS), logs)


def test_acknowledged_before_invoked_must_come_first():
    h = history((["a"], "s", "ok", 2, 1, 1), (["b"], "s", "ok", 1, 0, 0))  # b after a, lower
    with pytest.raises(CheckFailed, match="I6"):
        check(h, {"n1": [ev("b", "s", 0, 1), ev("a", "s", 1, 2)]})


def test_an_unknown_append_is_all_or_nothing():
    h = history((["a", "b"], "s", "unknown", 0, 0, 0))
    check(h, {"n1": []})
    check(h, {"n1": [ev("a", "s", 0, 1), ev("b", "s", 1, 2)]})
    with pytest.raises(CheckFailed, match="only part"):
        check(h, {"n1": [ev("a", "s", 0, 1)]})


def test_a_read_of_a_record_that_later_vanished_is_reported():
    reads = {("a", "n2"): (1, "s", 0), ("zz", "n2"): (9, "s", 3)}
    with pytest.raises(CheckFailed, match="precommitted read"):
        check(history(*OPS), {"n1": GOOD}, reads=reads)
    check(history(*OPS), {"n1": GOOD}, reads={("a", "n2"): (1, "s", 0)})
    with pytest.raises(CheckFailed, match="precommitted read"):  # another place
        check(history(*OPS), {"n1": GOOD}, reads={("a", "n2"): (2, "s", 0)})
