"""The cluster-aware flows of the sans-I/O core, driven by hand: node choice, retry
decisions, discovery (seeds, DNS, direct), re-discovery by generation, resume positions, the
heartbeat. No socket, no thread, no clock."""

from __future__ import annotations

import random

import pytest

from esnode.client import _core as core
from esnode.client import new_event
from esnode.client.errors import (
    ConnectionLost,
    EsError,
    NoQuorum,
    NotLeader,
    NotReady,
    OperationTimeout,
    OutcomeUnknown,
    StreamDeleted,
    Unavailable,
    WriteConnectionLost,
    WriteTimeout,
    WriteUnavailable,
    WrongExpectedVersion,
)
from esnode.client.model import ClusterInfo, MemberInfo, Pong
from esnode.client.settings import ConnectionSettings
from esnode.core.types import RecordedEvent
from tests.client.test_core import reply, run, wire_event

GOSSIP = ConnectionSettings(endpoints=(("a", 1), ("b", 2), ("c", 3)), discovery_attempts=2,
                            max_retries=2, retry_delay=0.05)


def member(name, state, alive=True, port=None, epoch=1):
    return MemberInfo(name, state, alive, ("h", port or int(name[-1])), epoch)


def view(*members, node="n1"):
    return ClusterInfo("c", node, next((m.name for m in members if m.state == "Leader"), None),
                       members)


def raise_(error):
    raise error


# --- choosing a node ---------------------------------------------------------------------------
def test_leader_preference_takes_the_alive_leader_with_the_highest_epoch():
    info = view(member("n1", "Follower"), member("n2", "Leader", epoch=3),
                member("n3", "Leader", epoch=2), member("n4", "Leader", alive=False, epoch=9))
    assert core.choose_member(info, "leader").name == "n2"
    assert core.choose_member(view(member("n1", "Follower"), member("n2", "Candidate")),
                              "leader") is None


def test_follower_and_random_preferences_skip_dead_and_unserving_members():
    info = view(member("n1", "Leader"), member("n2", "Follower"),
                member("n3", "Follower", alive=False), member("n4", "CatchingUp"),
                MemberInfo("n5", "Follower", True, None))
    rng = random.Random(1)
    assert {core.choose_member(info, "follower", rng).name for _ in range(50)} == {"n2"}
    assert {core.choose_member(info, "random", rng).name for _ in range(50)} == {"n1", "n2"}
    assert core.choose_member(view(member("n1", "Leader")), "follower").name == "n1"
    assert core.choose_member(view(member("n1", "Leader", alive=False)), "random") is None



def test_the_leader_the_answering_node_names_beats_stale_gossiped_states():
    # the old leader still shown alive and Leader, the new one still Follower: gossip lags,
    # the answering node's own leader does not
    stale = ClusterInfo("c", "n1", "n3", (member("n1", "Follower"), member("n2", "Leader"),
                                          member("n3", "Follower")))
    assert core.choose_member(stale, "leader").name == "n3"
    assert core.choose_member(stale, "follower", random.Random(1)).name == "n1"
    newer = ClusterInfo("c", "n1", "n3", (member("n2", "Leader", epoch=4),
                                          member("n3", "Follower", epoch=3)))
    assert core.choose_member(newer, "leader").name == "n2"  # a higher epoch still wins

# --- retry decisions ---------------------------------------------------------------------------
APPEND = core.append("s", new_event("T"))
READ = core.read_all()
DELETE = core.delete("s")


@pytest.mark.parametrize(("error", "call", "settings", "expected"), [
    (NotLeader(("h", 9)), APPEND, GOSSIP, core.RetryStep(0.0, True, "tcp://h:9")),
    (NotLeader(None), APPEND, GOSSIP, core.RetryStep(0.05, True, None)),
    (NotReady("electing"), APPEND, GOSSIP, core.RetryStep(0.05, True)),
    (NoQuorum("x"), DELETE, GOSSIP, core.RetryStep(0.05, True)),
    (WriteTimeout("no answer"), APPEND, GOSSIP, core.RetryStep(0.0, True)),
    (OutcomeUnknown("leader changed"), APPEND, GOSSIP, core.RetryStep(0.05, True)),
    (WriteConnectionLost("node gone"), APPEND, GOSSIP, core.RetryStep(0.0, True)),  # at once
    (WriteConnectionLost("node gone"), DELETE, GOSSIP, None),
    (OperationTimeout("no answer"), READ, GOSSIP, core.RetryStep(0.0, True)),
    (ConnectionLost("moved"), READ, GOSSIP, core.RetryStep(0.0, True)),
    (WriteTimeout("no answer"), DELETE, GOSSIP, None),  # a delete is not idempotent
    (WrongExpectedVersion("s", 1, 2), APPEND, GOSSIP, None),
    (StreamDeleted("s"), READ, GOSSIP, None),
    (NotLeader(("h", 9)), APPEND, ConnectionSettings(direct=True), None),
    (NotReady("x"), READ, ConnectionSettings(direct=True, retry_delay=0.1),
     core.RetryStep(0.1, False)),
])
def test_retry_decisions(error, call, settings, expected):
    assert core.retry_step(error, call, 0, settings) == expected


def test_timed_out_attempts_stop_at_max_retries_refusals_do_not():
    assert core.retry_step(OperationTimeout("x"), READ, 1, GOSSIP) is not None
    assert core.retry_step(OperationTimeout("x"), READ, 2, GOSSIP) is None
    assert core.retry_step(NotReady("x"), READ, 2, GOSSIP) is not None  # perform's deadline


class FakeClock:
    """Monotonic time that moves only when a flow sleeps (or a test says so)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, effect) -> None:
        self.now += effect.seconds


def timed(settings=GOSSIP):
    clock = FakeClock()
    return core.ClusterState(settings, clock=clock), clock


# --- perform -----------------------------------------------------------------------------------
def scripted(*outcomes):
    outcomes = iter(outcomes)
    calls = []

    def answer(effect):
        calls.append(effect.call)
        result = next(outcomes)
        if isinstance(result, Exception):
            raise result
        return result

    return answer, calls


def test_an_unknown_append_is_resent_unchanged_after_rediscovery_with_notices():
    cluster = core.ClusterState(GOSSIP)
    seen = []
    cluster.on_event(seen.append)
    answer, calls = scripted(WriteTimeout("silence"), NotLeader(("h", 7)), "done")
    result, effects = run(core.perform(APPEND, 1.0, GOSSIP, cluster),
                          {core.Request: answer, core.Rediscover: lambda e: None})
    assert result == "done" and all(c is APPEND for c in calls)  # same event ids each time
    assert [e for e in effects if type(e) is core.Rediscover] == [
        core.Rediscover(0, "append to 's': outcome_unknown", None),
        core.Rediscover(0, "append to 's': not_leader", "tcp://h:7")]
    assert [(n.attempt, n.error.code) for n in seen] == [(1, "outcome_unknown"),
                                                         (2, "not_leader")]
    assert cluster.stats.retries == 2


def test_refusals_are_retried_until_the_deadline_with_backoff_and_others_not_at_all():
    """An election that outlasts a few quick retries does not fail the operation: refusals
    are retried until the operation's timeout has passed, waits doubling up to a cap."""
    cluster, clock = timed()
    answer, calls = scripted(*[NotReady("x")] * 100)
    waits = []

    def sleep(effect):
        waits.append(effect.seconds)
        clock.sleep(effect)

    with pytest.raises(NotReady):
        run(core.perform(READ, 3.0, GOSSIP, cluster),
            {core.Request: answer, core.Sleep: sleep, core.Rediscover: lambda e: None})
    assert 3.0 <= clock.now - 100.0 < 3.0 + core.BACKOFF_CAP
    assert waits[:4] == [0.05, 0.1, 0.2, 0.4] and max(waits) == core.BACKOFF_CAP
    assert len(calls) == len(waits) + 1
    answer, calls = scripted(NoQuorum("electing"), NoQuorum("electing"), "written")
    assert run(core.perform(APPEND, 3.0, GOSSIP, timed()[0]),
               {core.Request: answer, core.Sleep: lambda e: None,
                core.Rediscover: lambda e: None})[0] == "written"
    answer, calls = scripted(WrongExpectedVersion("s", 1, 2))
    with pytest.raises(WrongExpectedVersion):
        run(core.perform(APPEND, 1.0, GOSSIP), {core.Request: answer})
    assert len(calls) == 1


def test_no_node_found_is_retried_until_the_deadline_too():
    cluster, clock = timed()
    found = iter([Unavailable("no leader yet"), Unavailable("no leader yet"), None])

    def rediscover(effect):
        result = next(found)
        if result is not None:
            raise result

    answer, calls = scripted(NotReady("electing"), "read")
    result, effects = run(core.perform(READ, 5.0, GOSSIP, cluster), {
        core.Request: answer, core.Sleep: clock.sleep, core.Rediscover: rediscover})
    assert result == "read" and [type(e) for e in effects].count(core.Rediscover) == 3
    assert cluster.stats.retries == 3


def test_a_closed_client_retries_nothing():
    cluster = core.ClusterState(GOSSIP)
    cluster.closed = True
    with pytest.raises(WriteTimeout):
        run(core.perform(APPEND, 1.0, GOSSIP, cluster),
            {core.Request: lambda e: raise_(WriteTimeout("closing"))})


def test_an_unknown_write_that_cannot_be_retried_anywhere_stays_unknown():
    def no_node(effect):
        raise Unavailable("no node answered after 2 attempt(s)")

    cluster, clock = timed()
    with pytest.raises(WriteUnavailable) as info:
        run(core.perform(APPEND, 1.0, GOSSIP, cluster), {core.Request: lambda e: raise_(
            WriteTimeout("silence; it may or may not have happened")),
            core.Rediscover: no_node, core.Sleep: clock.sleep})
    assert isinstance(info.value, OutcomeUnknown) and isinstance(info.value, Unavailable)
    assert "may or may not" in str(info.value) and "2 attempt(s)" in str(info.value)
    cluster, clock = timed()
    with pytest.raises(Unavailable) as info:
        run(core.perform(READ, 1.0, GOSSIP, cluster), {
            core.Request: lambda e: raise_(OperationTimeout("silence")),
            core.Rediscover: no_node, core.Sleep: clock.sleep})
    assert not isinstance(info.value, OutcomeUnknown) and "read of $all" in str(info.value)


def test_a_refusal_after_an_unknown_outcome_is_still_unknown():
    """A retry refused unread (no quorum) says nothing about the earlier attempt, which may
    have been made: the caller must not be told the write failed."""
    answer, _ = scripted(WriteTimeout("silence"), *[NoQuorum("x")] * 100)
    cluster, clock = timed()
    with pytest.raises(OutcomeUnknown) as info:
        run(core.perform(APPEND, 1.0, GOSSIP, cluster), {
            core.Request: answer, core.Sleep: clock.sleep, core.Rediscover: lambda e: None})
    assert "no_quorum" in str(info.value) and "may or may not" in str(info.value)
    # A definite answer that was looked at (the ids were checked first) stays definite.
    answer, _ = scripted(WriteTimeout("silence"), WrongExpectedVersion("s", 1, 2))
    with pytest.raises(WrongExpectedVersion):
        run(core.perform(APPEND, 1.0, GOSSIP), {core.Request: answer,
                                                core.Rediscover: lambda e: None})


# --- discovery ---------------------------------------------------------------------------------
def gossip(views, dead=()):
    """Probe answers: cluster_info from ``views`` (endpoint -> ClusterInfo), pings from
    anything not dead."""
    probes = []

    def probe(effect):
        probes.append((effect.endpoint, effect.call.op))
        if effect.endpoint in dead or (effect.call.op == "cluster_info"
                                       and effect.endpoint not in views):
            raise OperationTimeout(f"no answer from {effect.endpoint}")
        return views[effect.endpoint] if effect.call.op == "cluster_info" else Pong("n", "x")

    return probe, probes


THREE = view(member("n1", "Follower"), member("n2", "Leader"), member("n3", "Follower"))


def test_discovery_skips_a_dead_seed_and_connects_to_the_leader():
    probe, probes = gossip({"tcp://b:2": THREE}, dead={"tcp://a:1"})
    (endpoint, node), _ = run(core.discover(GOSSIP), {core.Probe: probe})
    assert (endpoint, node) == ("tcp://h:2", "n2")
    assert probes == [("tcp://a:1", "cluster_info"), ("tcp://b:2", "cluster_info"),
                      ("tcp://h:2", "ping")]


def test_discovery_tries_the_hint_first_and_remembers_the_members():
    cluster = core.ClusterState(GOSSIP)
    probe, probes = gossip({"tcp://h:2": THREE})
    (endpoint, _), _ = run(core.discover(GOSSIP, cluster, hint="tcp://h:2"), {core.Probe: probe})
    assert endpoint == "tcp://h:2" and probes == [("tcp://h:2", "cluster_info")]
    assert [m.name for m in cluster.members] == ["n1", "n2", "n3"]
    probe, probes = gossip({"tcp://h:2": THREE}, dead={"tcp://a:1", "tcp://b:2", "tcp://c:3"})
    (endpoint, _), _ = run(core.discover(GOSSIP, cluster), {core.Probe: probe})
    assert endpoint == "tcp://h:2"  # seeds dead: known members used
    assert ("tcp://h:2", "cluster_info") in probes


def test_discovery_without_a_leader_keeps_looking_then_says_what_it_saw():
    electing = view(member("n1", "Follower"), member("n2", "Follower", alive=False))
    probe, _ = gossip({"tcp://a:1": electing}, dead={"tcp://b:2", "tcp://c:3"})
    with pytest.raises(Unavailable) as info:
        run(core.discover(GOSSIP), {core.Probe: probe, core.Sleep: lambda e: None})
    text = str(info.value)
    assert "2 attempt(s)" in text and "no leader to choose" in text and "n2 Follower (dead)" in text
    assert "tcp://b:2: timeout: no answer from tcp://b:2" in text


def test_a_chosen_member_that_does_not_answer_is_passed_over():
    probe, probes = gossip({"tcp://a:1": THREE, "tcp://b:2": view(
        member("n1", "Follower"), member("n3", "Leader"))}, dead={"tcp://h:2"})
    (endpoint, _), _ = run(core.discover(GOSSIP), {core.Probe: probe})
    assert endpoint == "tcp://h:3"



def test_a_node_that_did_not_answer_is_tried_last_in_the_next_rounds():
    electing = view(member("n1", "Follower"), member("n2", "Leader"), member("n3", "Follower"))
    elected = view(member("n1", "Follower"), member("n2", "Leader"), member("n3", "Leader",
                                                                           epoch=2))
    views = {"tcp://a:1": electing, "tcp://c:3": electing}
    probe, probes = gossip(views, dead={"tcp://b:2", "tcp://h:2"})

    def election_over(effect):
        views["tcp://c:3"] = elected

    settings = ConnectionSettings(endpoints=(("a", 1), ("b", 2), ("c", 3)),
                                  discovery_attempts=3)
    (endpoint, node), _ = run(core.discover(settings), {core.Probe: probe,
                                                        core.Sleep: election_over})
    assert (endpoint, node) == ("tcp://h:3", "n3")
    first = probes.index(("tcp://b:2", "cluster_info"))
    second_round = probes[probes.index(("tcp://a:1", "cluster_info"), first):]
    # round 2: the dead leader h:2 (chosen by a:1's stale view) and the dead seed b:2 wait
    # until the others were asked, and c:3 already knows the new leader
    assert second_round == [("tcp://a:1", "cluster_info"), ("tcp://c:3", "cluster_info"),
                            ("tcp://h:3", "ping")]


def test_rediscovery_asks_the_node_it_is_leaving_last():
    settings = ConnectionSettings(endpoints=(("h", 2), ("h", 1), ("h", 3)), discovery_attempts=2)
    cluster = core.ClusterState(settings)
    probe, _ = gossip({"tcp://h:2": THREE})
    run(core.reconnect(cluster, settings, 0, "connect"), {core.Probe: probe,
                                                        core.Connect: lambda e: None})
    assert cluster.endpoint == "tcp://h:2"
    moved = view(member("n1", "Leader", epoch=2), member("n2", "Leader"),
                 member("n3", "Follower"))
    probe, probes = gossip({"tcp://h:1": moved, "tcp://h:3": moved}, dead={"tcp://h:2"})
    run(core.reconnect(cluster, settings, 1, "heartbeat"), {core.Probe: probe,
                                                           core.Connect: lambda e: None})
    assert cluster.endpoint == "tcp://h:1" and probes == [("tcp://h:1", "cluster_info")]

def test_dns_discovery_resolves_the_name_each_round():
    settings = ConnectionSettings(endpoints=(("es.test", 2113),), dns=True,
                                  dns_server=("127.0.0.1", 53), discovery_attempts=2)
    answers = iter([Unavailable("SERVFAIL"), ["10.0.0.1", "10.0.0.2"]])

    def resolve(effect):
        assert (effect.name, effect.server) == ("es.test", ("127.0.0.1", 53))
        result = next(answers)
        return raise_(result) if isinstance(result, Exception) else result

    leader = view(MemberInfo("n2", "Leader", True, ("10.0.0.2", 2113)))
    probe, probes = gossip({"tcp://10.0.0.1:2113": leader})
    (endpoint, _), effects = run(core.discover(settings), {
        core.Probe: probe, core.Resolve: resolve, core.Sleep: lambda e: None})
    assert endpoint == "tcp://10.0.0.2:2113"
    assert [type(e) for e in effects][:3] == [core.Resolve, core.Sleep, core.Resolve]


def test_direct_connection_pings_its_one_node_and_any_answer_will_do():
    settings = ConnectionSettings(endpoints=(("a", 1),), direct=True)
    (endpoint, node), effects = run(core.discover(settings), {
        core.Probe: lambda e: raise_(NotReady("starting"))})
    assert (endpoint, node) == ("tcp://a:1", None) and effects[0].call.op == "ping"


def test_reconnect_runs_once_per_generation_and_reports_node_changes():
    cluster = core.ClusterState(GOSSIP)
    seen = []
    cluster.on_event(seen.append)
    probe, _ = gossip({"tcp://a:1": THREE})
    _, effects = run(core.reconnect(cluster, GOSSIP, 0, "connect"), {core.Probe: probe,
                                                                    core.Connect: lambda e: None})
    assert effects[-1] == core.Connect("tcp://h:2") and cluster.generation == 1 and seen == []
    _, effects = run(core.reconnect(cluster, GOSSIP, 0, "stale"), {})
    assert effects == []  # someone else reconnected since generation 0
    moved = view(member("n1", "Leader"), member("n2", "Follower", alive=False))
    probe, _ = gossip({"tcp://h:2": moved, "tcp://a:1": moved}, dead={"tcp://h:2"})
    run(core.reconnect(cluster, GOSSIP, 1, "append: timeout"),
        {core.Probe: probe, core.Connect: lambda e: None})
    assert [type(n) for n in seen] == [core.Reconnected, core.NodeChanged]
    assert (seen[1].old_node, seen[1].node) == ("n2", "n1") and cluster.generation == 2
    assert cluster.stats.as_dict() | {} == {"retries": 0, "reconnections": 1, "node_changes": 1,
                                           "resubscriptions": 0, "discovery_failures": 0,
                                           "heartbeat_failures": 0, "node_restarts": 0,
                                           "resubscribe_waits": 0}


# --- subscriptions: where to resume -----------------------------------------------------------
def recorded(version, position, stream="s"):
    return RecordedEvent._make(wire_event(version, position, stream))


@pytest.mark.parametrize(("stream", "from_", "delivered", "caught_up", "expected"), [
    ("s", "start", [recorded(0, 10), recorded(1, 12)], None, 1),
    ("$all", "start", [recorded(0, 10), recorded(1, 12)], None, 12),
    ("s", 4, [], None, 4),
    ("$all", "end", [], 40, 40),
    ("$all", "start", [], -1, "start"),
    ("s", "end", [], 40, "end"),
])
def test_resume_position_is_after_the_last_event_handed_out(stream, from_, delivered,
                                                            caught_up, expected):
    state = core.SubscriptionState(1, 10, stream=stream, from_=from_)
    state.feed(core.EVENTS, delivered)
    if caught_up is not None:
        state.feed(core.CAUGHT_UP, caught_up)
    while state.next_event() is not None:
        pass
    assert core.resume_from(state) == expected


def test_resubscribe_rediscovers_then_subscribes_from_the_resume_point():
    cluster = core.ClusterState(GOSSIP)
    cluster.endpoint, cluster.generation = "tcp://h:3", 4
    state = core.SubscriptionState(1, 10, stream="$all", from_="start", generation=3)
    state.feed(core.EVENTS, [recorded(0, 10)])
    state.feed(core.LOST, ConnectionLost("gone"))
    assert state.next_event().position == 10 and state.next_event() is core.RESUME
    _, effects = run(core.resubscribe(state, GOSSIP, cluster),
                     {core.Rediscover: lambda e: None,
                      core.Request: lambda e: core.Subscribed(99, 10, "run-2")})
    assert effects[0].generation == 3
    assert effects[1].call.args == {"stream": "$all", "from": 10, "credit": 10}
    assert (state.id, state.generation, cluster.stats.resubscriptions) == (99, 4, 1)


# --- the heartbeat -----------------------------------------------------------------------------
def test_silence_makes_a_heartbeat_and_an_unanswered_one_declares_the_node_dead():
    pc = core.ProtocolCore("tcp://n:1", keepalive_interval=1.0, keepalive_timeout=0.5)
    pc.start(core.subscribe("$all"), "sub", 0.0, 5.0, inbox="box")
    pc.receive(reply(1, "ok", {"subscription": 1}))
    assert pc.next_deadline() == 1.0
    assert pc.expire(1.0) == ([], None)  # something arrived since the start: no ping yet
    failed, frame = pc.expire(2.0)
    assert failed == [] and frame is not None  # silence: ping
    hb_corr = msgpack_corr(frame)
    pc.receive(reply(hb_corr, "ok", {"node": "n", "state": "Leader"}))
    assert pc.expire(3.0) == ([], None)  # the answer counts as traffic
    _, frame = pc.expire(4.0)
    assert frame is not None
    pc.start(core.append("s", new_event("T")), "w", 4.1, 10.0)
    done, _ = pc.expire(4.5)
    kinds = sorted((target, kind, type(error).__name__) for target, kind, error in done)
    assert kinds == [("box", core.LOST, "ConnectionLost"), ("w", core.ERROR, "WriteConnectionLost")]
    assert "did not answer a heartbeat" in str(done[0][2]) and len(pc) == 0


def test_an_idle_connection_sends_no_heartbeat():
    pc = core.ProtocolCore("tcp://n:1", keepalive_interval=1.0, keepalive_timeout=0.5)
    corr, _ = pc.start(core.ping(), "p", 0.0, 5.0)
    pc.receive(reply(corr, "ok", {"node": "n", "state": "Leader"}))
    assert pc.expire(1.0) == ([], None) and pc.next_deadline() is None


def msgpack_corr(frame):
    from esnode.transport.codec import decode_request

    corr, request = decode_request(frame)
    assert type(request).__name__ == "Ping"
    return corr


def test_a_broken_callback_does_not_break_the_client():
    cluster = core.ClusterState(GOSSIP)
    cluster.on_event(lambda n: raise_(RuntimeError("boom")))
    seen = []
    remove = cluster.on_event(seen.append)
    cluster.emit(core.Retrying("ping", 1, NotReady("x")))
    remove()
    cluster.emit(core.Retrying("ping", 2, NotReady("x")))
    assert len(seen) == 1 and cluster.stats.retries == 2 and isinstance(seen[0].error, EsError)


# --- node restarts and patience ----------------------------------------------------------------
def test_a_node_that_answers_with_another_incarnation_restarted_and_lost_everything():
    """Restarted at the same address faster than the heartbeat notices: the next pong (or
    any reply that carries the incarnation) shows another run, so subscriptions resume."""
    stats = core.ClientStats()
    pc = core.ProtocolCore("tcp://n:1", keepalive_interval=1.0, keepalive_timeout=0.5,
                           stats=stats)
    pc.start(core.subscribe("$all"), "sub", 0.0, 5.0, inbox="box")
    pc.receive(reply(1, "ok", {"subscription": 1, "from": 9, "incarnation": "run-a"}))
    pc.start(core.append("s", new_event("T")), "w", 0.5, 10.0)
    assert pc.incarnation == "run-a" and pc.take_lost() == []
    pc.expire(1.0)
    _, frame = pc.expire(2.0)
    pc.receive(reply(msgpack_corr(frame), "ok", {"node": "n", "state": "Leader",
                                                 "incarnation": "run-a"}))
    assert pc.take_lost() == []  # the same run: nothing happened
    pc.expire(3.0)
    _, frame = pc.expire(4.0)
    pc.receive(reply(msgpack_corr(frame), "ok", {"node": "n", "state": "Leader",
                                                 "incarnation": "run-b"}))
    lost = sorted((t, k, type(e).__name__) for t, k, e in pc.take_lost())
    assert lost == [("box", core.LOST, "ConnectionLost"), ("w", core.ERROR, "WriteConnectionLost")]
    assert pc.incarnation == "run-b" and stats.node_restarts == 1 and pc.subscriptions == []
    # a subscription confirmed by the new run is not lost with the old ones
    corr, _ = pc.start(core.subscribe("s"), "sub2", 5.0, 5.0, inbox="box2")
    pc.receive(reply(corr, "ok", {"subscription": corr, "incarnation": "run-b"}))
    assert pc.subscriptions == [corr] and pc.take_lost() == []


def lost_subscription(settings):
    cluster, clock = timed(settings)
    state = core.SubscriptionState(1, 10, stream="s", from_=4)
    state.feed(core.LOST, ConnectionLost("gone"))
    assert state.next_event() is core.RESUME
    return cluster, clock, state


def test_a_subscription_keeps_coming_back_for_its_patience_with_backoff():
    """Every node restarted: discovery finds none for a while. The subscription waits
    (notices say so) and resumes from where it stopped once a node serves again."""
    settings = GOSSIP.with_options(subscription_patience=30.0)
    cluster, clock, state = lost_subscription(settings)
    seen = []
    cluster.on_event(seen.append)

    def rediscover(effect):
        if clock.now < 120.0:  # 20 s of outage
            raise Unavailable("no node answered")

    _, effects = run(core.resubscribe(state, settings, cluster), {
        core.Rediscover: rediscover, core.Sleep: clock.sleep,
        core.Request: lambda e: core.Subscribed(5, 4, "run-2")})
    waits = [n for n in seen if type(n) is core.Resubscribing]
    assert len(waits) > 10 and max(n.delay for n in waits) == core.RESUBSCRIBE_BACKOFF_CAP
    assert [n.attempt for n in waits] == list(range(1, len(waits) + 1))
    assert effects[-1].call.args["from"] == 4 and state.id == 5
    assert type(seen[-1]) is core.Resubscribed and cluster.stats.resubscribe_waits == len(waits)


def test_a_subscription_gives_up_after_its_patience_unless_told_to_keep_reconnecting():
    settings = GOSSIP.with_options(subscription_patience=5.0)
    cluster, clock, state = lost_subscription(settings)
    with pytest.raises(Unavailable, match=r"gave up after 5\.0s \(patience 5s\)"):
        run(core.resubscribe(state, settings, cluster), {
            core.Rediscover: lambda e: raise_(Unavailable("none")), core.Sleep: clock.sleep})
    forever = settings.with_options(keep_reconnecting=True)
    cluster, clock, state = lost_subscription(forever)

    def rediscover(effect):
        if clock.now < 100.0 + 3600:
            raise Unavailable("none")

    run(core.resubscribe(state, forever, cluster), {
        core.Rediscover: rediscover, core.Sleep: clock.sleep,
        core.Request: lambda e: core.Subscribed(2, 4)})
    assert state.id == 2 and clock.now >= 3700.0
