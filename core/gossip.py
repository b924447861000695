"""Gossip core: the member view, push-pull merge and dead-member detection.

* Each round (every ``gossip_interval``) the node refreshes its own entry (timestamp =
  ``now``) and sends its whole view to one random peer (``Gossip``); the peer merges it and
  answers with its merged view (``GossipReply``), which the sender merges too.
* Merge: a node's entry about itself is authoritative and never overwritten by others. For
  any other member, the entry with the newer ``timestamp`` wins (timestamps are set by that
  member itself, so only its own clock is compared with itself). A different
  ``instance_id`` with a newer timestamp replaces the old incarnation.
* Liveness is local: a member is alive while its timestamp advanced (directly or through a
  third party) within ``dead_member_timeout`` of this node's clock; the ``is_alive`` flag
  received from others is ignored. Dead members are reported dead within
  ``dead_member_timeout`` (+ one gossip interval for the next check).
* ``client_view()`` is what clients get: external endpoints only.
"""

from __future__ import annotations

import random

from esnode.core.cluster_messages import (
    ClientMemberInfo,
    Gossip,
    GossipReply,
    MemberInfo,
)
from esnode.core.cluster_state import CoreConfig
from esnode.core.effects import Effect, Send


class GossipCore:
    def __init__(self, config: CoreConfig, rng: random.Random, instance_id: str, now: float):
        self.config, self.rng = config, rng
        ih, ip = config.internal_endpoint
        eh, ep = config.external_endpoint
        self.me = MemberInfo(config.node_id, instance_id, 0, True, ih, ip, eh, ep, -1, -1, -1,
                             config.priority, now)
        self.members: dict[str, MemberInfo] = {config.node_id: self.me}
        self.seen_at: dict[str, float] = {}
        self.next_round = now

    def update_self(self, now: float, **fields) -> None:
        """Refresh this node's own entry (state, epoch_number, positions...)."""
        self.me = self.me._replace(timestamp=max(now, self.me.timestamp), **fields)
        self.members[self.me.name] = self.me

    def merge(self, members, now: float) -> None:
        for info in members:
            if info.name == self.me.name:
                continue
            known = self.members.get(info.name)
            if known is None or info.timestamp > known.timestamp:
                self.members[info.name] = info
                self.seen_at[info.name] = now

    def is_alive(self, name: str, now: float) -> bool:
        if name == self.me.name:
            return True
        seen = self.seen_at.get(name)
        return seen is not None and now - seen <= self.config.dead_member_timeout

    def view(self, now: float) -> tuple[MemberInfo, ...]:
        """Every known member, with liveness as this node judges it."""
        return tuple(m._replace(is_alive=self.is_alive(m.name, now))
                     for _, m in sorted(self.members.items()))

    def client_view(self, now: float) -> tuple[ClientMemberInfo, ...]:
        return tuple(ClientMemberInfo(m.name, m.state, m.is_alive, m.external_host,
                                      m.external_port, m.epoch_number, m.writer_position,
                                      m.commit_position) for m in self.view(now))

    def on_gossip(self, m: Gossip, now: float) -> list[Effect]:
        self.merge(m.members, now)
        self.update_self(now)
        return [Send(m.sender_id, GossipReply(self.me.name, self.view(now)))]

    def on_reply(self, m: GossipReply, now: float) -> list[Effect]:
        self.merge(m.members, now)
        return []

    def tick(self, now: float) -> list[Effect]:
        if now < self.next_round:
            return []
        self.next_round = now + self.config.gossip_interval
        peers = self.config.peers
        if not peers:
            return []
        self.update_self(now)
        return [Send(self.rng.choice(peers), Gossip(self.me.name, self.view(now)))]

    @property
    def next_wakeup(self) -> float:
        return self.next_round
