from esnode.core.cluster_messages import (
    Heartbeat, ReplicaSubscribed, SubscribeReplica, TermNotice, Truncated,
)
from esnode.core.cluster_state import PersistedState
from esnode.core.effects import Alarm, Send, StateChanged, Truncate
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


def test_a_second_leader_in_our_own_term_raises_an_alarm():
    core = node(members=("n1",))
    effects = core.step(Heartbeat(core.term, "n9", -1, -1), 0.1)
    assert [e.code for e in effects if isinstance(e, Alarm)] == ["two_leaders"]


def test_shutdown_ignores_everything_after():
    core = node("n2")
    effects = core.shutdown(1.0)
    assert effects[-1].new is VNodeState.ShuttingDown
    assert core.step(Heartbeat(1, "n1", -1, -1), 1.1) == [] and core.tick(9.0) == []
