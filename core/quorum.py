"""Quorum arithmetic and the replica subscription point: small pure functions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from esnode.core.types import Epoch


def majority(cluster_size: int) -> int:
    """Votes/acks needed: of the CONFIGURED cluster size, never of the members seen."""
    if cluster_size < 1:
        raise ValueError("cluster size must be at least 1")
    return cluster_size // 2 + 1


def quorum_position(positions: Iterable[int], cluster_size: int) -> int:
    """The highest position held by a majority: the ``majority``-th highest of the given
    durable positions (one per member that reported; missing members count as -1)."""
    ranked = sorted(positions, reverse=True)
    need = majority(cluster_size)
    return ranked[need - 1] if len(ranked) >= need else -1


def _next_start(epochs: Sequence[Epoch], common: Epoch) -> int | None:
    """Start of the first epoch after ``common`` in ``epochs`` (oldest first), if any."""
    for epoch in epochs:
        if epoch.start_position > common.start_position:
            return epoch.start_position
    return None


def subscription_point(leader_epochs: Sequence[Epoch], leader_writer: int,
                       replica_epochs: Sequence[Epoch], replica_writer: int) -> int:
    """The last position a subscribing replica keeps (Event Store's rule, §4 "Subscribe
    flow", in "last position kept" form).

    Find the newest replica epoch that the leader also has (same number, start and leader).
    None: keep nothing (-1). Otherwise keep up to the replica's end, but not past the start
    of the next epoch after the common one on either side (both logs diverge there at the
    latest), nor past the leader's own end.
    """
    leader_set = set(leader_epochs)
    common = next((e for e in reversed(replica_epochs) if e in leader_set), None)
    if common is None:
        return -1
    point = min(replica_writer, leader_writer)
    for side in (replica_epochs, leader_epochs):
        nxt = _next_start(side, common)
        if nxt is not None:
            point = min(point, nxt - 1)
    return point
