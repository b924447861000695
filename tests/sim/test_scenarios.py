"""Named cluster scenarios (reliability.md "Regression scenarios to hard-code") on the
simulator. Every one ends with the liveness phase and the final checks."""

from __future__ import annotations

import pytest

from esnode.core.states import VNodeState

from .cluster import SimCluster
from .scenario import stable_leader, wait_for, write
from .swarm import liveness

SEEDS = [1, 2, 3]


def finish(c: SimCluster) -> None:
    liveness(c, 15.0)
    c.checker.final()


@pytest.mark.parametrize("seed", SEEDS)
def test_when_the_leader_is_killed_a_new_leader_is_elected_and_acked_writes_survive(seed):
    c = SimCluster(seed)
    old = stable_leader(c)
    acked_before = write(c, 20)
    assert all(w in c.checker.acked for w in acked_before)
    killed_at = c.now
    c.crash(old.name)
    new = stable_leader(c, within=5.0)
    assert new.name != old.name and new.core.term > c.checker.max_term - 1
    assert c.now - killed_at < 2 * 2 * c.config["election_timeout"]  # timeout + election
    write(c, 20)
    c.restart(old.name)
    finish(c)
    for w in acked_before:
        assert w in c.checker.acked


@pytest.mark.parametrize("seed", SEEDS)
def test_a_killed_leaders_closed_connections_start_the_election_without_waiting_a_timeout(seed):
    """The disconnect hint: the followers campaign after two heartbeats and a random part
    (virtual time), well before the election timeout, and one election (one term) is
    enough."""
    c = SimCluster(seed)
    old = stable_leader(c)
    write(c, 10)
    term, killed_at = old.core.term, c.now
    c.crash(old.name)
    new = stable_leader(c, within=5.0)
    assert c.now - killed_at < c.config["election_timeout"]
    assert new.core.term == term + 1
    write(c, 10)
    c.restart(old.name)
    finish(c)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_follower_crashing_and_restarting_under_load_causes_no_election(seed):
    """Its peers see its connections close too, but it was nobody's leader."""
    c = SimCluster(seed)
    leader = stable_leader(c)
    term = leader.core.term
    follower = next(n for n in c.names if n != leader.name)
    c.start_clients(c.now + 3.0)
    c.run_until(c.now + 0.5)
    c.crash(follower)
    c.run_until(c.now + 0.5)
    c.restart(follower)
    wait_for(c, lambda: c.nodes[follower].core.state is VNodeState.Follower, 5.0,
             "the restarted follower following again")
    c.run_until(c.now + 2.0)
    assert leader.core.accepts_writes and leader.core.term == term
    assert {c.nodes[n].core.term for n in c.names} == {term}
    finish(c)


@pytest.mark.parametrize("seed", SEEDS)
def test_when_a_follower_has_a_diverged_uncommitted_tail_it_truncates_it_on_line(seed):
    c = SimCluster(seed)
    old = stable_leader(c)
    write(c, 10)
    others = [n for n in c.names if n != old.name]
    # The leader is cut off; its next writes reach only its own disk (never committed).
    c.net.isolate(old.name, c.names)
    stranded = write(c, 5, settle=0.05)
    assert stranded and not any(w in c.checker.acked for w in stranded)
    wait_for(c, lambda: any(c.nodes[n].core.accepts_writes for n in others), 6.0,
             "new leader among the others")
    wait_for(c, lambda: not old.core.accepts_writes, 2.0, "old leader stepping down")
    write(c, 10)
    del c.truncations[:]
    incarnation = c.nodes[old.name].incarnation
    c.net.recover()
    wait_for(c, lambda: c.nodes[old.name].core.state is VNodeState.Follower, 5.0, "rejoin")
    assert c.nodes[old.name].incarnation == incarnation, "truncation must not need a restart"
    assert any(name == old.name for name, _ in c.truncations)
    old_log = c.nodes[old.name].log
    assert not any(w in old_log.data for w in stranded)
    finish(c)


@pytest.mark.parametrize("seed", SEEDS)
def test_when_a_node_lost_its_tail_it_cannot_win_nor_truncate_committed_records(seed):
    c = SimCluster(seed, priority=0)
    lead = stable_leader(c)
    write(c, 30)
    victim = next(n for n in c.names if n != lead.name)
    third = next(n for n in c.names if n not in (lead.name, victim))
    committed = len(c.checker.canonical)
    c.lose_tail(victim, keep_records=3)  # restored from an old disk
    c.crash(lead.name)
    c.restart(victim)
    # Only the victim and the third node are up: the third node must win, never the victim.
    winner = stable_leader(c, within=10.0)
    assert winner.name == third
    assert len(c.nodes[third].log.positions) >= committed
    c.restart(lead.name)
    finish(c)


@pytest.mark.parametrize("seed", SEEDS)
def test_when_the_leader_is_paused_past_the_timeout_it_steps_down_and_loses_its_unacked_tail(seed):
    """Event Store #3472: a deposed leader must never acknowledge its pending writes."""
    c = SimCluster(seed)
    old = stable_leader(c)
    write(c, 10)
    for other in c.names:  # its records stop reaching the others...
        if other != old.name:
            c.net.cut_one_way(old.name, other)
    pending = write(c, 5, settle=0.01)
    c.pause(old.name)  # ...and it freezes (SIGSTOP)
    c.net.recover()
    new = stable_leader(c, within=6.0)
    assert new.name != old.name
    write(c, 30)  # the new leader writes past the paused leader's pending positions
    c.resume(old.name)
    wait_for(c, lambda: c.nodes[old.name].core.state is VNodeState.Follower, 5.0, "step down")
    assert not any(w in c.checker.acked for w in pending)
    assert not any(w in c.nodes[old.name].log.data for w in pending)
    finish(c)


@pytest.mark.parametrize("seed", SEEDS)
def test_partition_majority_keeps_committing_minority_cannot(seed):
    c = SimCluster(seed, size=5)
    old = stable_leader(c)
    write(c, 10)
    minority = [old.name, next(n for n in c.names if n != old.name)]
    majority = [n for n in c.names if n not in minority]
    for a in minority:
        for b in majority:
            c.net.cut(a, b)
    commit_in_minority = max(c.nodes[n].core.commit_position for n in minority)
    wait_for(c, lambda: any(c.nodes[n].core.accepts_writes for n in majority), 8.0,
             "majority leader")
    written = write(c, 20)
    assert any(w in c.checker.acked for w in written)
    for n in minority:
        assert not c.nodes[n].core.accepts_writes
        assert c.nodes[n].core.commit_position <= max(commit_in_minority,
                                                      c.checker.commit_seen.get(n, -1))
    finish(c)


@pytest.mark.parametrize("seed", SEEDS)
def test_check_quorum_an_isolated_leader_steps_down_within_the_documented_time(seed):
    c = SimCluster(seed)
    lead = stable_leader(c)
    timeout = c.config["election_timeout"]
    c.net.isolate(lead.name, c.names)
    isolated_at = c.now
    wait_for(c, lambda: not lead.core.state.is_leader_role, 2 * timeout, "step down")
    # Documented: within election_timeout (+ a quarter for the check period, + a heartbeat).
    assert c.now - isolated_at <= timeout * 1.25 + c.config["heartbeat_interval"] + 0.01
    finish(c)


@pytest.mark.parametrize("seed", SEEDS)
def test_pre_vote_an_isolated_follower_rejoining_does_not_disrupt_the_leader(seed):
    c = SimCluster(seed)
    lead = stable_leader(c)
    term = lead.core.term
    follower = next(n for n in c.names if n != lead.name)
    c.net.isolate(follower, c.names)
    c.run_until(c.now + 6 * c.config["election_timeout"])
    assert c.nodes[follower].core.term == term  # pre-vote: no term inflation while isolated
    c.net.recover()
    c.run_until(c.now + 3.0)
    assert c.leader() is lead and lead.core.term == term
    finish(c)


def test_coordinated_crash_of_every_node_loses_no_acked_write():
    c = SimCluster(7)
    stable_leader(c)
    write(c, 40, settle=0.3)
    write(c, 10, settle=0.0)  # some still in flight, unsynced
    for name in c.names:
        c.crash(name)
    for name in c.names:
        c.restart(name)
    finish(c)
