"""Node states, with Event Store's names and wire numbers (``VNodeState``).

Our elections are Raft-style; the Raft roles map onto these states as follows (one rule per
line, the whole mapping lives in ``NodeCore.state``):

==================  =======================================================================
state               Raft role / condition
==================  =======================================================================
Initializing        before ``NodeCore.start``: persisted state loaded, nothing sent yet
DiscoverLeader      follower that has not yet heard of any leader since it started
Unknown             follower that lost its leader, or pre-candidate / candidate (an
                    election in progress: ``NodeCore.election_in_progress`` says so)
PreReplica          follower of a known leader, subscribing (and truncating a diverged tail)
CatchingUp          subscribed follower whose durable log is behind the leader's commit
Follower            subscribed follower holding everything the leader has committed
PreLeader           elected leader whose epoch record is not yet on a majority
Leader              elected leader whose epoch record is committed: accepts writes
ShuttingDown        ``NodeCore.shutdown`` was called: ignores everything
==================  =======================================================================

There is deliberately no Candidate state: Event Store has none, and gossip/clients only need
to know that the node is neither leader nor replica.
"""

from __future__ import annotations

from enum import IntEnum


class VNodeState(IntEnum):
    """Values are Event Store's (they travel in gossip and are append-only)."""

    Initializing = 0
    DiscoverLeader = 1
    Unknown = 2
    PreReplica = 3
    CatchingUp = 4
    Follower = 6
    PreLeader = 7
    Leader = 8
    ShuttingDown = 10

    @property
    def is_leader_role(self) -> bool:
        return self in (VNodeState.PreLeader, VNodeState.Leader)
