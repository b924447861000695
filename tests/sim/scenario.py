"""Helpers for hand-written scenarios over ``SimCluster``."""

from __future__ import annotations

from esnode.core.states import VNodeState

from .cluster import SimCluster


def wait_for(c: SimCluster, condition, within: float, what: str):
    if not c.run_until(c.now + within, condition):
        raise AssertionError(f"seed {c.seed}: no {what} within {within}s at t={c.now:.2f}\n"
                             + c.describe() + "\n" + "\n".join(c.lines[-15:]))


def stable_leader(c: SimCluster, within: float = 10.0):
    wait_for(c, lambda: c.leader() is not None, within, "leader")
    return c.leader()


def write(c: SimCluster, count: int, settle: float = 0.5) -> list[bytes]:
    ids = [c.client_write() for _ in range(count)]
    c.run_until(c.now + settle)
    return [i for i in ids if i is not None]


def states(c: SimCluster) -> dict[str, VNodeState | None]:
    return {n.name: (n.core.state if n.up else None) for n in c.nodes.values()}
