"""NodeCore: one node's cluster logic (election + replication + gossip) behind one API.

    core = NodeCore(config, persisted, rng, now, instance_id)
    effects = core.start(now)
    effects = core.step(message, now)     # a wire message or a report from the shell
    effects = core.tick(now)              # call at or after ``core.next_wakeup``
    effects = core.shutdown(now)

Carry out the returned effects in order (see ``esnode.core.effects`` for the contract).
The node's state (``core.state``) follows Event Store's names; ``core.accepts_writes`` is
True only in Leader; ``core.readable_position`` is the highest position reads may expose.

The parts are swappable by subclassing (``election_class``, ``leader_class``,
``replica_class``, ``gossip_class``): that is how the simulator proves that its checkers
catch a broken core, without any switch in this code.
"""

from __future__ import annotations

import dataclasses
import itertools
import random

from esnode.core.cluster_messages import (
    EpochWritten,
    Gossip,
    GossipReply,
    Heartbeat,
    LocalPrepared,
    LocalWritten,
    PeerDisconnected,
    RecordsRead,
    RecordsWritten,
    ReplicaAck,
    ReplicaSubscribed,
    ReplicateRecords,
    SubscribeReplica,
    TermNotice,
    Truncated,
    VoteRequest,
    VoteResponse,
)
from esnode.core.cluster_state import CoreConfig, LogView, PersistedState
from esnode.core.effects import Effect, Send, StateChanged, WriteEpoch
from esnode.core.election import ElectionCore, Role
from esnode.core.gossip import GossipCore
from esnode.core.invariants import InvariantViolation, invariant
from esnode.core.replication import LeaderReplication, ReplicaReplication, Sub
from esnode.core.states import VNodeState

class NodeCore:
    election_class = ElectionCore
    leader_class = LeaderReplication
    replica_class = ReplicaReplication
    gossip_class = GossipCore

    def __init__(self, config: CoreConfig, persisted: PersistedState, rng: random.Random,
                 now: float, instance_id: str = ""):
        self.config = config
        self.log = LogView.from_persisted(persisted)
        self.election = self.election_class(config, rng, self.log, persisted.vote, now)
        self.gossip = self.gossip_class(config, rng, instance_id or config.node_id, now)
        self.leader: LeaderReplication | None = None
        self.replica: ReplicaReplication | None = None
        self.started = self.stopped = False
        self.left_discovery = False
        # Subscription ids must differ across restarts of this node (a reply to a previous
        # incarnation's subscription may still be in flight): start at a random base.
        self._subscription_ids = itertools.count(rng.getrandbits(40) << 20)
        self._state = VNodeState.Initializing

    # --- queries ----------------------------------------------------------------------------------
    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def term(self) -> int:
        return self.election.term

    @property
    def leader_id(self) -> str | None:
        return self.election.leader_id

    @property
    def commit_position(self) -> int:
        return self.log.commit

    @property
    def readable_position(self) -> int:
        """Reads (and subscriptions) may expose records up to here and no further."""
        return self.log.commit

    @property
    def accepts_writes(self) -> bool:
        return self.state is VNodeState.Leader

    @property
    def election_in_progress(self) -> bool:
        return self.election.role in (Role.PRE_CANDIDATE, Role.CANDIDATE)

    @property
    def error(self) -> str | None:
        return self.replica.error if self.replica else None

    @property
    def state(self) -> VNodeState:
        if self.stopped:
            return VNodeState.ShuttingDown
        if not self.started:
            return VNodeState.Initializing
        if self.leader is not None:
            return VNodeState.Leader if self.leader.epoch_committed else VNodeState.PreLeader
        if self.replica is not None:
            if self.replica.status is Sub.SUBSCRIBED:
                return VNodeState.Follower if self.replica.was_caught_up else VNodeState.CatchingUp
            return VNodeState.PreReplica
        return VNodeState.Unknown if self.left_discovery else VNodeState.DiscoverLeader

    @property
    def next_wakeup(self) -> float:
        part = self.leader or self.replica
        return min(self.election.next_wakeup, self.gossip.next_wakeup,
                   part.next_wakeup if part else float("inf"))

    def member_view(self, now: float):
        return self.gossip.view(now)

    def client_view(self, now: float):
        return self.gossip.client_view(now)

    # --- entry points ------------------------------------------------------------------------------
    def start(self, now: float) -> list[Effect]:
        self.started = True
        effects: list[Effect] = []
        if self.config.cluster_size == 1:
            effects = self.election.campaign(now)
        return self._settle(effects, now)

    def resign(self, now: float) -> list[Effect]:
        """Leadership handed over on an operator's request (``ElectionCore.resign``)."""
        if self.stopped or not self.election.resign(now):
            return []
        return self._settle([], now)

    def set_priority(self, priority: int, now: float) -> None:
        """A new election priority, effective from the next timer and gossiped."""
        self.config = dataclasses.replace(self.config, priority=priority)
        self.election.config = self.config
        self.gossip.config = self.config
        self.gossip.update_self(now, priority=priority)

    def shutdown(self, now: float) -> list[Effect]:
        if self.stopped:
            return []
        self.stopped = True
        self.leader = self.replica = None
        return self._settle([], now)

    def tick(self, now: float) -> list[Effect]:
        if not self.started or self.stopped:
            return []
        effects = self.election.tick(now)
        effects = self._settle(effects, now)
        part = self.leader or self.replica
        if part is not None:
            effects += part.tick(now)
        self._refresh_gossip(now)
        effects += self.gossip.tick(now)
        return self._settle(effects, now)

    def step(self, message, now: float) -> list[Effect]:
        if not self.started or self.stopped:
            return []
        handler = self._handlers.get(type(message))
        if handler is None:  # the shell routes only cluster messages and its own reports here
            raise InvariantViolation(f"{type(message).__name__} is not a cluster message")
        return self._settle(handler(self, message, now), now)

    # --- wiring of roles -----------------------------------------------------------------------
    def _settle(self, effects: list[Effect], now: float) -> list[Effect]:
        """Create/drop the replication part that matches the election's role, then report a
        state change (one log line)."""
        e = self.election
        if e.role is not Role.FOLLOWER:
            self.left_discovery = True
        if self.stopped:
            self.leader = self.replica = None  # a stopped node takes no role back
        elif e.role is Role.LEADER:
            self.replica = None
            if self.leader is None or self.leader.term != e.term:
                self.leader = self.leader_class(self.config, self.log, e.term, now)
                effects += [WriteEpoch(e.term, self.node_id)] + self.leader.tick(now)
        elif e.leader_id is not None and e.leader_id != self.node_id:
            self.leader = None
            self.left_discovery = True
            r = self.replica
            if r is None or r.term != e.term or r.leader_id != e.leader_id:
                self.replica = self.replica_class(self.config, self.log, e.term, e.leader_id,
                                                  self._subscription_ids.__next__)
                effects += self.replica.subscribe(now)
        else:
            self.leader = self.replica = None
        new = self.state
        if new is not self._state:
            old, self._state = self._state, new
            line = (f"{self.node_id}: {old.name} -> {new.name} term={e.term} "
                    f"leader={e.leader_id} epoch={self.log.last_epoch_number()} "
                    f"writer={self.log.durable} commit={self.log.commit}")
            effects.append(StateChanged(old, new, e.term, e.leader_id, line))
        return effects

    def _refresh_gossip(self, now: float) -> None:
        self.gossip.update_self(now, state=int(self.state),
                                epoch_number=self.log.last_epoch_number(),
                                writer_position=self.log.durable,
                                commit_position=self.log.commit)

    # --- handlers --------------------------------------------------------------------------------
    def _on_vote_request(self, m: VoteRequest, now: float) -> list[Effect]:
        return self.election.on_vote_request(m, now)

    def _on_vote_response(self, m: VoteResponse, now: float) -> list[Effect]:
        return self.election.on_vote_response(m, now)

    def _on_term_notice(self, m: TermNotice, now: float) -> list[Effect]:
        if m.term > self.term:
            self.election.become_follower(m.term, None, now)
        return []

    def _on_leader_message(self, m, now: float) -> list[Effect]:
        if m.term < self.term:
            return [Send(m.leader_id, TermNotice(self.term, self.node_id))]
        invariant(self.election.on_leader_message(m.term, m.leader_id, now),
                  f"two leaders in term {m.term}: {m.leader_id} claims it, and "
                  f"{self.node_id} leads it")
        effects = self._settle([], now)
        r = self.replica
        if r is None:
            return effects
        if isinstance(m, Heartbeat):
            return effects + r.on_heartbeat(m, now)
        if isinstance(m, ReplicateRecords):
            return effects + r.on_records(m, now)
        return effects + r.on_subscribed(m, now)

    def _on_replica_message(self, m, now: float) -> list[Effect]:
        if m.term > self.term:
            self.election.become_follower(m.term, None, now)
            return []
        if m.term < self.term:
            return [Send(m.replica_id, TermNotice(self.term, self.node_id))]
        if self.leader is None:
            return []
        self.election.heard_from(m.replica_id, now)
        if isinstance(m, SubscribeReplica):
            return self.leader.on_subscribe(m, now)
        return self.leader.on_ack(m, now)

    def _on_gossip(self, m: Gossip, now: float) -> list[Effect]:
        self._refresh_gossip(now)
        return self.gossip.on_gossip(m, now)

    def _on_gossip_reply(self, m: GossipReply, now: float) -> list[Effect]:
        return self.gossip.on_reply(m, now)

    def _local_growth(self, position: int, now: float) -> list[Effect]:
        """Our own storage appended (an epoch record or client writes) up to ``position``."""
        log = self.log
        if log.truncating:
            return []  # a pending truncation (decided without these records) will cut them
        log.written = max(log.written, position)
        log.durable_report(position)
        if self.replica is not None:
            # We stepped down while the write was in flight: the replica's view of our log
            # is now wrong, so subscribe again (the leader will truncate what diverges).
            return self.replica.subscribe(now)
        return []

    def _on_epoch_written(self, m: EpochWritten, now: float) -> list[Effect]:
        if not self.log.truncating:
            self.log.add_epochs([m.epoch], self.config.epoch_cache)
        effects = self._local_growth(m.epoch.start_position, now)
        if self.leader is not None and self.leader.term == m.epoch.number:
            effects += self.leader.epoch_written(m.epoch.start_position, now)
        return effects

    def _on_local_written(self, m: LocalWritten, now: float) -> list[Effect]:
        effects = self._local_growth(m.writer_position, now)
        if self.leader is not None:
            effects += self.leader.local_written(now)
        return effects

    def _on_local_prepared(self, m: LocalPrepared, now: float) -> list[Effect]:
        if self.leader is None or self.log.truncating:
            return []
        return self.leader.ship_prepared(m.records, now)

    def _on_records_read(self, m: RecordsRead, now: float) -> list[Effect]:
        return self.leader.on_records_read(m, now) if self.leader is not None else []

    def _on_records_written(self, m: RecordsWritten, now: float) -> list[Effect]:
        if self.log.durable_report(m.writer_position) and self.replica is not None:
            return self.replica.on_durable(now)
        return []

    def _on_truncated(self, m: Truncated, now: float) -> list[Effect]:
        self.log.truncated(m.writer_position)
        return self.replica.on_truncated(now) if self.replica is not None else []

    def _on_peer_disconnected(self, m: PeerDisconnected, now: float) -> list[Effect]:
        self.election.on_peer_disconnected(m.peer, now)
        return []

    _handlers = {
        VoteRequest: _on_vote_request,
        VoteResponse: _on_vote_response,
        TermNotice: _on_term_notice,
        Heartbeat: _on_leader_message,
        ReplicateRecords: _on_leader_message,
        ReplicaSubscribed: _on_leader_message,
        SubscribeReplica: _on_replica_message,
        ReplicaAck: _on_replica_message,
        Gossip: _on_gossip,
        GossipReply: _on_gossip_reply,
        EpochWritten: _on_epoch_written,
        LocalWritten: _on_local_written,
        LocalPrepared: _on_local_prepared,
        RecordsRead: _on_records_read,
        RecordsWritten: _on_records_written,
        Truncated: _on_truncated,
        PeerDisconnected: _on_peer_disconnected,
    }
