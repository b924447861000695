"""``esnode verify``: a Jepsen-style workload, its recorded history and the checker of
invariants I1–I11 (docs/verify.md).

- ``esnode.verify.history``: operations as recorded (invoked, ok / fail / unknown, with times,
  inputs and results) plus the final state read from every node; JSON lines in and out.
- ``esnode.verify.checker``: pure functions over a history and its final state; ``check``
  returns a ``Result`` with counts and violations (each with its evidence).
- ``esnode.verify.workload``: concurrent clients against a running cluster, recording a
  history, ending with the final state of every node.
"""

from esnode.verify.checker import Result, Violation, check
from esnode.verify.history import Event, FinalState, History, Op, load, save

__all__ = ["Event", "FinalState", "History", "Op", "Result", "Violation", "check", "load",
           "save"]
