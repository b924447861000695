"""Election core: Raft leader election with pre-vote and check-quorum.

Pure: no clock, no randomness of its own (an injected ``random.Random`` draws timeouts), no
I/O. ``NodeCore`` drives it; it can also be driven alone in tests.

Rules (see docs/cluster-design.md):

* term = election term; the elected leader's epoch number is its term.
* A node whose randomized election timer fires runs a **pre-vote** for ``term + 1``: nobody
  changes term or vote. Only with a majority of pre-votes does it become a candidate: term+1,
  vote for itself (``PersistVote`` before any ``VoteRequest`` leaves).
* A voter grants (pre-)votes only to a candidate whose durable log is at least as up to date
  as its own: ``(last epoch number, last position)`` compared as a pair.
* **Leader lease**: a node that heard from a live leader less than ``election_timeout`` ago
  ignores vote requests and refuses pre-votes, so an isolated node rejoining cannot disrupt a
  healthy leader.
* A real vote is granted at most once per term and persisted before it is sent.
* **Check-quorum**: a leader steps down when it has not heard from a majority (itself
  included) within ``election_timeout``.
* Priority: the random part of the timeout is divided by ``1 + priority``, so higher-priority
  nodes tend to time out, and therefore campaign, first.
* Majority = configured cluster size // 2 + 1.
* **Disconnect hint**: a follower whose connection to its leader closed gives up its lease
  and campaigns (pre-vote first) after ``2 × heartbeat_interval`` plus a random part of up
  to ``election_timeout / 4`` (so two followers rarely split the vote), instead of waiting
  out its election timer. The fixed part lets a live leader cancel it: its heartbeats come
  on its own connection, and any leader message restores the lease and the timer. Only the
  current leader's disconnect counts, at most once per ``election_timeout`` per peer (a
  flapping connection cannot cause repeated campaigns); peers that still hear the leader
  refuse the pre-vote, so a false hint costs no term.
* **Split vote**: a candidate refused by a voter of its own term (the voter chose another
  candidate: after a leader's death both followers may campaign on the hint at once) runs
  its next pre-vote after a random part of up to ``election_timeout / 4``, not after a full
  timeout; the two draw apart, and the first to campaign again wins (1-2 s -> ~0.2 s).
"""

from __future__ import annotations

import random
from enum import Enum

from esnode.core.cluster_messages import VoteRequest, VoteResponse
from esnode.core.cluster_state import CoreConfig, LogView
from esnode.core.effects import Effect, PersistVote, Send
from esnode.core.quorum import majority
from esnode.core.types import Vote


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class ElectionCore:
    def __init__(self, config: CoreConfig, rng: random.Random, log: LogView,
                 vote: Vote | None, now: float):
        self.config = config
        self.rng = rng
        self.log = log
        self.term = max(vote.term if vote else 0, log.last_epoch_number(), 0)
        self.voted_for: str | None = vote.candidate_id if vote and vote.term == self.term else None
        self.role = Role.FOLLOWER
        self.leader_id: str | None = None
        self.last_leader_contact = float("-inf")
        self.votes: set[str] = set()
        self.peer_contact: dict[str, float] = {}
        self.hinted: dict[str, float] = {}
        """Peer -> when its last disconnect hint was acted on (rate limit)."""
        self.deadline = now
        self.hold_until = float("-inf")
        self.reset_timer(now)

    # --- queries ------------------------------------------------------------------------------
    @property
    def majority(self) -> int:
        return majority(self.config.cluster_size)

    def in_lease(self, now: float) -> bool:
        """True while this node believes a live leader exists (itself included)."""
        if self.role is Role.LEADER:
            return True
        return (self.leader_id is not None
                and now - self.last_leader_contact < self.config.election_timeout)

    def candidate_up_to_date(self, last_epoch: int, last_position: int) -> bool:
        """Raft's election restriction over (last epoch number, last durable position)."""
        return (last_epoch, last_position) >= (self.log.last_epoch_number(), self.log.durable)

    @property
    def next_wakeup(self) -> float:
        return self.deadline

    # --- timers -------------------------------------------------------------------------------
    def reset_timer(self, now: float) -> None:
        base = self.config.election_timeout
        spread = self.rng.random() * base / (1 + max(0, self.config.priority))
        self.deadline = max(now, self.hold_until) + base + spread

    def resign(self, now: float) -> bool:
        """An operator asks the leader to step down: it becomes a follower of nobody and
        stands for no election for two election timeouts, so another node (which, elected
        by a majority, holds every committed record) takes over. False if not the leader."""
        if self.role is not Role.LEADER:
            return False
        self.hold_until = now + 2 * self.config.election_timeout
        self.become_follower(self.term, None, now)
        self.last_leader_contact = float("-inf")  # no lease: grant the others' pre-votes
        return True

    def tick(self, now: float) -> list[Effect]:
        if self.role is Role.LEADER:
            if now >= self.deadline:
                self.deadline = now + self.config.election_timeout / 4
                if not self.quorum_active(now):
                    self.become_follower(self.term, None, now)
            return []
        if now >= self.deadline:
            return self.campaign(now)
        return []

    def quorum_active(self, now: float) -> bool:
        contacts = sorted([now, *self.peer_contact.values()], reverse=True)
        need = self.majority
        heard = contacts[need - 1] if len(contacts) >= need else float("-inf")
        return now - heard <= self.config.election_timeout

    def heard_from(self, peer: str, now: float) -> None:
        """Leader: ``peer`` answered in the current term (check-quorum bookkeeping)."""
        if peer in self.peer_contact:
            self.peer_contact[peer] = now

    def on_peer_disconnected(self, peer: str, now: float) -> None:
        """The connection to ``peer`` closed: if it is our leader, campaign soon."""
        if self.role is not Role.FOLLOWER or peer != self.leader_id:
            return
        if now - self.hinted.get(peer, float("-inf")) < self.config.election_timeout:
            return
        self.hinted[peer] = now
        self.last_leader_contact = float("-inf")
        spread = self.config.election_timeout / 4 / (1 + max(0, self.config.priority))
        grace = 2 * self.config.heartbeat_interval
        self.deadline = min(self.deadline, now + grace + self.rng.random() * spread)

    # --- transitions --------------------------------------------------------------------------
    def become_follower(self, term: int, leader_id: str | None, now: float) -> None:
        if term > self.term:
            self.term, self.voted_for = term, None
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self.votes = set()
        self.peer_contact = {}
        if leader_id is not None:
            self.last_leader_contact = now
        self.reset_timer(now)

    def campaign(self, now: float) -> list[Effect]:
        """Start a pre-vote round (a pre-candidate asks for ``term + 1``)."""
        self.role, self.leader_id = Role.PRE_CANDIDATE, None
        self.votes = {self.config.node_id}
        self.reset_timer(now)
        if len(self.votes) >= self.majority:
            return self.become_candidate(now)
        return self._ask(self.term + 1, pre_vote=True)

    def become_candidate(self, now: float) -> list[Effect]:
        self.term += 1
        self.role, self.voted_for, self.leader_id = Role.CANDIDATE, self.config.node_id, None
        self.votes = {self.config.node_id}
        self.reset_timer(now)
        effects: list[Effect] = [PersistVote(Vote(self.term, self.config.node_id))]
        if len(self.votes) >= self.majority:
            self.become_leader(now)
            return effects
        return effects + self._ask(self.term, pre_vote=False)

    def become_leader(self, now: float) -> None:
        self.role, self.leader_id = Role.LEADER, self.config.node_id
        self.votes = set()
        self.peer_contact = {p: now for p in self.config.peers}
        self.deadline = now + self.config.election_timeout / 4

    def _ask(self, term: int, pre_vote: bool) -> list[Effect]:
        request = VoteRequest(term, self.config.node_id, max(self.log.last_epoch_number(), -1),
                              self.log.durable, pre_vote)
        return [Send(peer, request) for peer in self.config.peers]

    # --- messages -----------------------------------------------------------------------------
    def on_vote_request(self, m: VoteRequest, now: float) -> list[Effect]:
        me = self.config.node_id
        if m.pre_vote:
            granted = (m.term > self.term and not self.in_lease(now)
                       and self.candidate_up_to_date(m.last_epoch, m.last_position))
            return [Send(m.candidate_id, VoteResponse(m.term if granted else self.term, me,
                                                      granted, pre_vote=True))]
        if self.in_lease(now) and m.candidate_id != self.leader_id:
            return []  # a live leader exists: do not even update the term
        if m.term < self.term:
            return [Send(m.candidate_id, VoteResponse(self.term, me, False))]
        if m.term > self.term:
            self.become_follower(m.term, None, now)
        if (self.voted_for in (None, m.candidate_id)
                and self.candidate_up_to_date(m.last_epoch, m.last_position)):
            self.voted_for = m.candidate_id
            self.reset_timer(now)
            return [PersistVote(Vote(self.term, m.candidate_id)),
                    Send(m.candidate_id, VoteResponse(self.term, me, True))]
        return [Send(m.candidate_id, VoteResponse(self.term, me, False))]

    def on_vote_response(self, m: VoteResponse, now: float) -> list[Effect]:
        if m.term > self.term and not m.granted:
            self.become_follower(m.term, None, now)
            return []
        if m.pre_vote:
            if self.role is Role.PRE_CANDIDATE and m.granted and m.term == self.term + 1:
                self.votes.add(m.voter_id)
                if len(self.votes) >= self.majority:
                    return self.become_candidate(now)
            return []
        if self.role is Role.CANDIDATE and m.term == self.term:
            if m.granted:
                self.votes.add(m.voter_id)
                if len(self.votes) >= self.majority:
                    self.become_leader(now)
            else:  # the voter chose another candidate of this term: a split vote
                self.deadline = min(self.deadline, now + self.rng.random() * self.config
                                    .election_timeout / 4 / (1 + max(0, self.config.priority)))
        return []

    def on_leader_message(self, term: int, leader_id: str, now: float) -> bool:
        """A leader message of ``term >= self.term`` arrived: follow its sender. Returns False
        when it claims a term this node leads (two leaders in a term: must never happen)."""
        if term == self.term and self.role is Role.LEADER:
            return leader_id == self.config.node_id
        if term > self.term or self.role is not Role.FOLLOWER or self.leader_id != leader_id:
            self.become_follower(term, leader_id, now)
        self.last_leader_contact = now
        self.reset_timer(now)
        return True
