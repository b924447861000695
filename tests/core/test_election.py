"""when_<situation>: feed messages to the election (through NodeCore), assert effects."""

import random

from esnode.core.cluster_messages import Heartbeat, PeerDisconnected, VoteRequest, VoteResponse
from esnode.core.cluster_state import PersistedState
from esnode.core.effects import PersistVote, Send, StateChanged, WriteEpoch
from esnode.core.election import ElectionCore, Role
from esnode.core.states import VNodeState
from esnode.core.types import Epoch, Vote

from .helpers import config, kinds, log, node, sent


def campaign(core, now=5.0):
    return core.tick(now)


class TestWhenTheElectionTimerFires:
    def test_a_pre_vote_is_sent_and_the_term_is_unchanged(self):
        core = node()
        effects = campaign(core)
        requests = sent(effects, VoteRequest)
        assert {to for to, _ in requests} == {"n2", "n3"}
        assert all(m.pre_vote and m.term == 1 for _, m in requests)
        assert core.term == 0 and core.state is VNodeState.Unknown
        assert not any(isinstance(e, PersistVote) for e in effects)

    def test_a_majority_of_pre_votes_makes_a_candidate_that_persists_then_sends(self):
        core = node()
        campaign(core)
        effects = core.step(VoteResponse(1, "n2", True, pre_vote=True), 5.0)
        assert kinds(effects)[:3] == ["PersistVote", "Send", "Send"]
        assert effects[0].vote == Vote(1, "n1")
        assert core.term == 1 and core.election_in_progress

    def test_a_majority_of_votes_makes_a_pre_leader_that_writes_its_epoch(self):
        core = node()
        campaign(core)
        core.step(VoteResponse(1, "n2", True, pre_vote=True), 5.0)
        effects = core.step(VoteResponse(1, "n3", True), 5.0)
        assert WriteEpoch(1, "n1") in effects
        assert sent(effects, Heartbeat)
        assert core.state is VNodeState.PreLeader and not core.accepts_writes
        assert [e.new for e in effects if isinstance(e, StateChanged)] == [VNodeState.PreLeader]


def test_a_candidate_refused_in_its_own_term_campaigns_again_within_a_quarter_timeout():
    """A split vote (both followers campaigned at once after the leader died) is retried at
    a random point of the next quarter election timeout, not a full timeout later."""
    core = node()
    campaign(core)
    core.step(VoteResponse(1, "n2", True, pre_vote=True), 5.0)  # a candidate of term 1
    assert core.election.role is Role.CANDIDATE and core.election.next_wakeup >= 6.0
    core.step(VoteResponse(1, "n2", False), 5.01)  # n2 voted for another candidate
    assert core.election.next_wakeup <= 5.01 + 0.25
    t, effects = 5.01, []
    while not effects:
        t += 0.01
        effects = sent(core.tick(t), VoteRequest)
    assert t <= 5.01 + 0.26 and all(m.pre_vote and m.term == 2 for _, m in effects)


class TestWhenAVoteIsRequested:
    def test_granting_persists_the_vote_before_answering(self):
        core = node("n2")
        effects = core.step(VoteRequest(1, "n1", -1, -1), 0.1)
        assert effects == [PersistVote(Vote(1, "n1")), Send("n1", VoteResponse(1, "n2", True))]

    def test_a_second_candidate_in_the_same_term_is_refused(self):
        core = node("n2")
        core.step(VoteRequest(1, "n1", -1, -1), 0.1)
        effects = core.step(VoteRequest(1, "n3", -1, -1), 0.1)
        assert effects == [Send("n3", VoteResponse(1, "n2", False))]

    def test_a_less_up_to_date_candidate_is_refused(self):
        persisted = PersistedState(None, (Epoch(3, 0, "n2"),), 500, 400)
        core = node("n2", persisted)
        for candidate_log in ((2, 900), (3, 499)):  # older epoch; same epoch, shorter log
            effects = core.step(VoteRequest(4, "n1", *candidate_log), 0.1)
            assert sent(effects) == [("n1", VoteResponse(4, "n2", False))]
        assert sent(core.step(VoteRequest(4, "n3", 3, 500), 0.1)) == [
            ("n3", VoteResponse(4, "n2", True))]

    def test_while_a_leader_is_alive_requests_are_ignored_and_pre_votes_refused(self):
        core = node("n2")
        core.step(Heartbeat(1, "n1", -1, -1), 1.0)
        assert core.step(VoteRequest(2, "n3", 5, 5), 1.2) == []
        assert core.term == 1
        assert sent(core.step(VoteRequest(2, "n3", 5, 5, pre_vote=True), 1.2)) == [
            ("n3", VoteResponse(1, "n2", False, pre_vote=True))]

    def test_a_restarted_node_remembers_its_vote(self):
        core = node("n2", PersistedState(Vote(7, "n1")))
        assert core.term == 7
        assert sent(core.step(VoteRequest(7, "n3", 0, 0), 0.1)) == [
            ("n3", VoteResponse(7, "n2", False))]


class TestWhenALeaderLosesItsMajority:
    def test_it_steps_down_within_the_election_timeout(self):
        core = node()
        campaign(core, 5.0)
        core.step(VoteResponse(1, "n2", True, pre_vote=True), 5.0)
        core.step(VoteResponse(1, "n3", True), 5.0)
        assert core.election.role is Role.LEADER
        t = 5.0
        while core.election.role is Role.LEADER:
            t += 0.05
            core.tick(t)
        assert t - 5.0 <= 1.0 * 1.25 + 0.05
        assert core.state is VNodeState.Unknown


class TestWhenTheConnectionToAPeerCloses:
    """The transport's disconnect hint (a killed leader closes its TCP connections at once)."""

    def follower(self):
        core = node("n2")
        core.step(Heartbeat(1, "n1", -1, -1), 1.0)
        return core

    def pre_votes(self, core, until):
        t, effects = 1.0, []
        while t < until and not effects:
            t += 0.01
            effects = sent(core.tick(t), VoteRequest)
        return t, effects

    def test_losing_the_leader_starts_a_pre_vote_after_two_heartbeats_and_a_random_part(self):
        core = self.follower()
        core.step(PeerDisconnected("n1"), 1.0)
        t, effects = self.pre_votes(core, 2.0)
        assert 1.0 + 0.2 <= t <= 1.0 + 0.2 + 0.25 + 0.01
        assert effects and all(m.pre_vote and m.term == 2 for _, m in effects)
        assert core.term == 1

    def test_another_peer_closing_changes_nothing(self):
        core = self.follower()
        core.step(PeerDisconnected("n3"), 1.0)
        assert core.election.in_lease(1.01)
        assert core.election.next_wakeup >= 2.0

    def test_a_leader_still_heard_cancels_the_hint(self):
        core = self.follower()
        core.step(PeerDisconnected("n1"), 1.0)
        core.step(Heartbeat(1, "n1", -1, -1), 1.1)  # its heartbeats still come (own connection)
        assert core.election.next_wakeup >= 2.1 and core.election.in_lease(1.11)

    def test_a_flapping_connection_is_acted_on_once_per_election_timeout(self):
        core = self.follower()
        core.step(PeerDisconnected("n1"), 1.0)
        core.step(Heartbeat(1, "n1", -1, -1), 1.0)
        core.step(PeerDisconnected("n1"), 1.5)
        assert core.election.next_wakeup >= 2.0 and core.election.in_lease(1.51)

    def test_a_peer_that_hears_the_leader_refuses_the_pre_vote(self):
        voter = self.follower()  # n2 still hears n1
        assert sent(voter.step(VoteRequest(2, "n3", 5, 5, pre_vote=True), 1.1)) == [
            ("n3", VoteResponse(1, "n2", False, pre_vote=True))]
        voter.step(PeerDisconnected("n1"), 1.1)  # its own connection closed too: it grants
        assert sent(voter.step(VoteRequest(2, "n3", 5, 5, pre_vote=True), 1.1)) == [
            ("n3", VoteResponse(2, "n2", True, pre_vote=True))]



def test_single_node_becomes_leader_at_start():
    core = node(members=("n1",))
    assert core.election.role is Role.LEADER and core.term == 1


def test_higher_priority_means_shorter_timeouts_on_average():
    def mean_timeout(priority):
        e = ElectionCore(config(priority=priority), random.Random(3), log(), None, 0.0)
        samples = []
        for _ in range(200):
            e.reset_timer(0.0)
            samples.append(e.deadline)
        return sum(samples) / len(samples)

    assert mean_timeout(5) < mean_timeout(0)
    assert all(1.0 <= ElectionCore(config(), random.Random(s), log(), None, 0.0).deadline < 2.0
               for s in range(20))


class TestWhenAnOperatorAsksTheLeaderToResign:
    def leader(self):
        core = node()
        campaign(core)
        core.step(VoteResponse(1, "n2", True, pre_vote=True), 5.0)
        core.step(VoteResponse(1, "n2", True), 5.0)
        assert core.election.role is Role.LEADER
        return core

    def test_it_steps_down_grants_the_others_pre_votes_and_stands_back(self):
        core = self.leader()
        effects = core.resign(5.1)
        assert [e.new for e in effects if isinstance(e, StateChanged)] == [VNodeState.Unknown]
        assert core.leader_id is None and not core.accepts_writes
        (_, answer), = sent(core.step(VoteRequest(2, "n2", 1, 0, True), 5.2), VoteResponse)
        assert answer.granted
        # It stands for no election for two election timeouts.
        timeout = core.config.election_timeout
        assert not sent(core.tick(5.1 + 2 * timeout), VoteRequest)
        assert core.resign(5.3) == []  # only a leader resigns

    def test_a_new_priority_is_used_and_gossiped(self):
        core = node()
        core.set_priority(7, 1.0)
        assert core.election.config.priority == 7 and core.gossip.me.priority == 7
