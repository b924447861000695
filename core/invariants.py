"""Invariants the cores rely on, checked where they could break (TigerBeetle style).

A broken invariant means the node's own state, or what its shell told it, is impossible:
carrying on would risk acknowledged data. ``InvariantViolation`` is never caught by the
product: the shell's actor dies and the node exits non-zero; in the simulator the run fails
with its seed.
"""

from __future__ import annotations


class InvariantViolation(AssertionError):
    """An impossible state: the node must stop."""


def invariant(condition: bool, message: str) -> None:
    """Stop the node unless ``condition`` holds (not ``assert``: ``-O`` must not remove it)."""
    if not condition:
        raise InvariantViolation(message)
