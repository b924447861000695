"""Process-level tests record their appends (and what readers were served) in an
``esnode.verify`` ``History`` and check it with the product's checker (invariants I1–I11,
docs/verify.md) against the final ``$all`` of the nodes that should have converged.

A raw reply ``(kind, body)`` ends an append **ok** (at its position and versions), **fail**
(``no_quorum``, ``not_leader``, ``not_ready``: definitely not made) or **unknown**
(``outcome_unknown``, or no answer in time); any other reply is unexpected, which ``check``
reports as well. Pass only resolved histories (a pending op violates I10) and only the logs of
nodes that should have converged.
"""

from __future__ import annotations

from esnode.verify.checker import Result, describe
from esnode.verify.checker import check as verify
from esnode.verify.history import APPEND, FAIL, OK, PENDING, READ_ALL, UNKNOWN, FinalState, Op
from esnode.verify.history import History as VerifyHistory
from esnode.verify.history import compact

__all__ = ["FAIL", "OK", "PENDING", "UNEXPECTED", "UNKNOWN", "CheckFailed", "History", "Op",
           "check"]

DEFINITE_FAILURES = frozenset({"no_quorum", "not_leader", "not_ready"})
"""Error codes that mean the write was not made."""
UNEXPECTED = "unexpected"
"""Outcome ``complete`` returns for any other reply; the op stays unknown, ``check`` fails."""


class CheckFailed(AssertionError):
    pass


class History(VerifyHistory):
    """``esnode.verify``'s history with the recorders' shorthands."""

    def append(self, stream: str, event_ids, via: str) -> Op:
        """Invoke a single-stream append (expected version any) made through ``via``."""
        return self.invoke(via, APPEND, stream=stream, event_ids=list(event_ids),
                           expected_version=-2)

    @staticmethod
    def complete(op: Op, kind: str | None, body: dict | None, why: str = "") -> str:
        """End ``op`` by a raw reply ``(kind, body)``, or no reply (``kind`` None: unknown);
        returns its outcome (``UNEXPECTED`` for a reply that is none of ok / fail / unknown)."""
        code = body.get("code") if kind == "error" else None
        if kind == "ok":
            VerifyHistory.end(op, OK, position=body["position"],
                              first_version=body["first_version"],
                              last_version=body["last_version"],
                              idempotent=bool(body.get("idempotent")), attempts=op.attempts + 1)
        elif code in DEFINITE_FAILURES or code == "outcome_unknown":
            VerifyHistory.end(op, FAIL if code in DEFINITE_FAILURES else UNKNOWN, error=code,
                              attempts=op.attempts + 1)
        elif kind is None:
            VerifyHistory.end(op, UNKNOWN, error=why or "no reply", attempts=op.attempts + 1)
        else:
            VerifyHistory.end(op, UNKNOWN, error=f"{UNEXPECTED} {kind}: {body}",
                              attempts=op.attempts + 1)
            return UNEXPECTED
        return op.outcome

    def of(self, outcome: str) -> list[Op]:
        """The appends that ended ``outcome``."""
        return [op for op in self if op.kind == APPEND and op.outcome == outcome]

    def served(self, node: str) -> Op:
        """A read of ``$all`` standing for everything ``node`` serves readers until it ends
        (events appended to ``op.events``, each once): the checker proves no record served was
        later truncated."""
        return self.invoke(f"reader-{node}", READ_ALL, from_position=-1, node=node)


def check(history: VerifyHistory, logs: dict[str, list[list]]) -> Result:
    """Raise ``CheckFailed`` listing every violation (with its evidence) of the history
    against ``logs`` (node -> its ``$all`` as protocol arrays) and every unexpected reply."""
    final = FinalState(logs={node: [compact(e) for e in log] for node, log in logs.items()})
    result = verify(history, final)
    problems = [describe(v) for v in result.violations]
    problems += [f"unexpected reply: {op.brief()}" for op in history
                 if op.error.startswith(UNEXPECTED)]
    if problems:
        shown = "\n  ".join(problems[:40])
        more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
        raise CheckFailed(f"{len(problems)} history violation(s); outcomes "
                          f"{history.counts()}:\n  {shown}{more}")
    return result
