import pytest

from esnode.core.cluster_messages import (
    Heartbeat, RecordsWritten, ReplicaSubscribed, SubscribeReplica, TermNotice, Truncated,
)
from esnode.core.cluster_state import PersistedState
from esnode.core.effects import Send, StateChanged, Truncate
from esnode.core.invariants import InvariantViolation
from esnode.core.states import VNodeState
from esnode.core.types import Vote

from .helpers import node, sent


def test_states_follow_event_stores_names_through_a_subscription():
    core = node("n2")
    assert core.state is VNodeState.DiscoverLeader
    effects = core.step(Heartbeat(1, "n1", -1, -1), 0.1)
    assert core.state is VNodeState.PreReplica
    (to, sub), = sent(effects, SubscribeReplica)
    effects = core.step(ReplicaSubscribed(1, "n1", sub.subscription_id, -1, -1), 0.2)
    assert Truncate(-1) in effects  # always: cuts writes that were still queued
    changes = [e for e in effects if isinstance(e, StateChanged)]
    assert not changes and core.state is VNodeState.PreReplica
    core.step(Truncated(-1), 0.3)
    assert core.state is VNodeState.CatchingUp
    effects = core.step(Heartbeat(1, "n1", -1, -1, sub.subscription_id), 0.4)
    assert core.state is VNodeState.Follower
    assert "CatchingUp -> Follower" in [e for e in effects if isinstance(e, StateChanged)][0].line


def test_a_message_from_a_stale_leader_is_answered_with_the_current_term():
    core = node("n2", PersistedState(Vote(5, "n3")))
    assert core.step(Heartbeat(3, "n1", -1, -1), 0.1) == [Send("n1", TermNotice(5, "n2"))]


def test_a_second_leader_in_our_own_term_stops_the_node():
    core = node(members=("n1",))
    with pytest.raises(InvariantViolation, match="two leaders in term"):
        core.step(Heartbeat(core.term, "n9", -1, -1), 0.1)


def test_a_message_the_core_has_no_handler_for_stops_the_node():
    with pytest.raises(InvariantViolation, match="not a cluster message"):
        node("n2").step(object(), 0.1)


def test_impossible_storage_reports_stop_the_node():
    core = node("n2")
    with pytest.raises(InvariantViolation, match="nobody asked for"):
        core.step(Truncated(-1), 0.1)
    with pytest.raises(InvariantViolation, match="past everything it was given"):
        core.step(RecordsWritten(5), 0.1)


def test_shutdown_ignores_everything_after():
    core = node("n2")
    effects = core.shutdown(1.0)
    assert effects[-1].new is VNodeState.ShuttingDown
    assert core.step(Heartbeat(1, "n1", -1, -1), 1.1) == [] and core.tick(9.0) == []
