"""The node's status board: a few values the writer publishes and the gateway reads.

Each attribute is replaced whole (never mutated in place), so a reader on another thread sees
either the old or the new value, never a torn one. It carries what answers ``cluster_info``
and routes writes; anything that must happen *in order* travels as actor messages instead.
"""

from __future__ import annotations

import uuid

from esnode.core.cluster_messages import ClientMemberInfo
from esnode.core.states import VNodeState


class StatusBoard:
    def __init__(self, readable_position: int = -1, incarnation: str = "") -> None:
        self.incarnation = incarnation or uuid.uuid4().hex[:16]
        """This run of the node: a client that sees it change knows the node restarted (its
        subscriptions are gone even if the heartbeat never noticed)."""
        self.state: VNodeState = VNodeState.Initializing
        self.term: int = 0
        self.leader: str | None = None
        self.leader_external: tuple[str, int] | None = None
        self.readable_position: int = readable_position
        self.subscriptions_idle: bool = False
        """Set by the subscriptions actor while it serves no subscription: the writer then does
        not wake it on every commit (``Node._notify``). It clears the flag *before* it reads
        ``readable_position`` again, and the writer publishes the position *before* it reads
        the flag, so no commit a subscription needs can be missed."""
        self.groups_idle: bool = False
        """The same for the persistent subscriptions actor while no group is defined."""
        self.members: tuple[ClientMemberInfo, ...] = ()
        self.priorities: dict[str, int] = {}

    @property
    def is_leader(self) -> bool:
        return self.state is VNodeState.Leader
