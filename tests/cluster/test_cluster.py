"""Process-level cluster tests: real ``esnode`` node processes on 127.0.0.1 (issue 4, "How it
will be checked"), with kill -9, SIGSTOP/SIGCONT and restarts, and the history checker."""

from __future__ import annotations

import collections
import os
import random
import time

import pytest

from tests.cluster.checker import FAIL, OK, UNKNOWN, History, check
from tests.cluster.conftest import FAST
from tests.cluster.harness import Cluster, Raw, new_event, wait_until
from tests.cluster.workload import Readers, Writers, retry_unknown

CLEAR_WRITE_ERRORS = {"no_quorum", "not_leader", "outcome_unknown", "not_ready"}


def appends_through_every_node(cluster: Cluster, history: History, per_node: int = 3) -> None:
    """Sequential appends through each node (followers forward to the leader): all ok."""
    for name in cluster.names:
        for i in range(per_node):
            event = new_event()
            op = history.append(f"every-{i % 2}", [event[0]], name)
            kind, body = cluster.append(name, op.stream, [event])
            assert history.complete(op, kind, body) == OK, (name, kind, body)


def finish(cluster: Cluster, history: History, nodes: list[str], leader: str,
           readers: Readers | None = None) -> dict:
    """Retry the unknown outcomes with the same ids, wait for ``nodes`` to converge and check
    the history (and what ``readers`` saw) against every node's ``$all``."""
    retried = retry_unknown(cluster, history, leader)
    logs = cluster.wait_converged(nodes, at_least=len(history.of(OK)))
    check(history, logs)
    if readers:
        print(f"readers: {readers.reads} reads, {readers.seen()} events seen")
    print(f"history: {history.counts()}, {len(retried)} unknown retried "
          f"({sum(op.idempotent for op in retried)} were already written)")
    return logs


def kill_leader_under_load(cluster: Cluster) -> tuple[float, float]:
    """Kill -9 the leader while every node takes appends; returns (seconds until a new
    leader is agreed, seconds until the first append invoked after the kill is
    acknowledged)."""
    leader = cluster.wait_for_leader(timeout=20)
    history = History()
    appends_through_every_node(cluster, history)
    survivors = [n for n in cluster.names if n != leader]
    with Writers(cluster, history, cluster.names) as writers:
        writers.wait_acked(30)
        writers.down(leader)
        killed_at = time.monotonic()
        cluster.kill(leader)
        new_leader = cluster.wait_for_leader(timeout=10, among=survivors)
        failover = time.monotonic() - killed_at
        writers.wait_acked(1, since=killed_at)
        first_ack = min(op.t_complete for op in history.of(OK)
                        if op.t_invoke >= killed_at) - killed_at
        writers.wait_acked(30, since=killed_at)  # appends continue through every survivor
        for name in survivors:
            writers.wait_acked(3, since=killed_at, via=name)
    print(f"{cluster.size} nodes, election timeout {cluster.election_timeout:g}s: killed "
          f"leader {leader}; new leader {new_leader} agreed after {failover:.2f}s; first "
          f"append after the kill acknowledged after {first_ack:.2f}s")
    finish(cluster, history, survivors, new_leader)
    return failover, first_ack


# --- elections and routing --------------------------------------------------------------------

@pytest.mark.parametrize("size", [3, 5])
def test_a_leader_is_elected_and_appends_through_every_node_are_read_on_every_node(
        make_cluster, size):
    cluster = make_cluster(size, **FAST)
    cluster.start()
    leader = cluster.wait_for_leader(timeout=20)
    info = cluster.info(leader)
    assert [m["name"] for m in info["members"]] == cluster.names
    history = History()
    appends_through_every_node(cluster, history)
    # Followers serve reads up to the commit position they know: they may lag a moment.
    logs = cluster.wait_converged(cluster.names, at_least=len(history.ops))
    check(history, logs)
    for name in cluster.names:
        events = cluster.read_stream(name, "every-0")
        assert [e[2] for e in events] == list(range(len(events))) and events
    # Every node's view converges: one Leader, everyone alive, external endpoints only.
    externals = {n: ["127.0.0.1", cluster.ports[n][1]] for n in cluster.names}

    def views_agree() -> bool:
        for name in cluster.names:
            info = cluster.info(name)
            if info is None or info["leader"] != leader:
                return False
            states = {m["name"]: (m["state"], m["alive"]) for m in info["members"]}
            if states.get(leader) != ("Leader", True) or not all(
                    alive for _, alive in states.values()) or len(states) != size:
                return False
            assert {m["name"]: m["external"] for m in info["members"]} == externals, info
        return True

    wait_until(views_agree, 10, "every node's view: one leader, all members alive", cluster)
    # requires_leader: a follower does not forward or serve, it names the leader.
    follower = next(n for n in cluster.names if n != leader)
    for op, args in (("append", {"stream": "rl", "events": [new_event()]}),
                     ("read_all", {})):
        kind, body = cluster.raw(follower).call(op, {**args, "requires_leader": True})
        assert kind == "error" and body["code"] == "not_leader", body
        assert body["leader"] == externals[leader], body
    assert cluster.read_stream(leader, "rl") == []


def test_kill_the_leader_under_load_with_default_timers(make_cluster):
    """Default timers: a new leader within 5 s (aim: under 2 s); nothing acknowledged lost."""
    cluster = make_cluster(3)
    cluster.start()
    failover, first_ack = kill_leader_under_load(cluster)
    assert failover < 5.0, f"new leader after {failover:.2f}s"
    assert first_ack < 5.0 + 1.0


def test_kill_the_leader_of_five_nodes_under_load(make_cluster):
    cluster = make_cluster(5, **FAST)
    cluster.start()
    failover, _ = kill_leader_under_load(cluster)
    assert failover < 5.0


# --- followers --------------------------------------------------------------------------------

def test_a_killed_follower_restarts_and_catches_up(cluster):
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.names if n != leader)
    history = History()
    with Writers(cluster, history, cluster.names) as writers:
        writers.wait_acked(20)
        writers.down(follower)
        killed_at = time.monotonic()
        cluster.kill(follower)
        writers.wait_acked(50, since=killed_at)  # the other two still make a majority
        # Gossip: the survivors see it dead within dead_member_ms (+ a gossip round).
        wait_until(lambda: all(not next(m["alive"] for m in cluster.info(n)["members"]
                                        if m["name"] == follower)
                               for n in cluster.names if n != follower), 10,
                   f"{follower} reported dead", cluster)
        dead_after = time.monotonic() - killed_at
        assert dead_after < (FAST["dead_member_ms"] + 2 * FAST["gossip_interval_ms"]) / 1000 + 1
        cluster.start(follower)
        restarted_at = time.monotonic()
        wait_until(lambda: (cluster.info(follower) or {}).get("state") == "Follower", 15,
                   f"{follower} following again", cluster)
        writers.up(follower)
        writers.wait_acked(30, since=restarted_at)
        writers.wait_acked(5, since=restarted_at, via=follower)
    assert cluster.wait_for_leader() == leader  # a returning follower disrupts nothing
    print(f"killed follower {follower}: reported dead after {dead_after:.2f}s")
    finish(cluster, history, cluster.names, leader)


# --- losing the majority ----------------------------------------------------------------------

@pytest.mark.parametrize("survivor_role", ["leader", "follower"])
def test_without_a_majority_writes_fail_clearly_and_committed_reads_still_work(
        cluster, survivor_role):
    leader = cluster.wait_for_leader()
    survivor = leader if survivor_role == "leader" else next(
        n for n in cluster.names if n != leader)
    doomed = [n for n in cluster.names if n != survivor]
    history = History()
    appends_through_every_node(cluster, history)
    with Writers(cluster, history, cluster.names) as writers:
        writers.wait_acked(30)
    cluster.wait_converged(cluster.names, at_least=len(history.of(OK)))
    acked = {eid for op in history.of(OK) for eid in op.event_ids}
    with Writers(cluster, history, [survivor]) as writers:
        writers.wait_acked(5, via=survivor)
        for name in doomed:
            cluster.kill(name)
        lost_at = time.monotonic()
        # The survivor leaves Leader (check-quorum) or stops following, and refuses writes.
        wait_until(lambda: (cluster.info(survivor) or {}).get("state") not in
                   ("Leader", "Follower"), 10, f"{survivor} to notice it is alone", cluster)
        noticed = time.monotonic() - lost_at
        wait_until(lambda: sum(1 for op in history.of(FAIL) if op.t_invoke > lost_at) >= 3,
                   cluster.write_timeout + 5, "writes refused on the lone survivor", cluster)
    late = [op for op in history.ops if op.t_invoke > lost_at]
    assert all(op.outcome in (FAIL, UNKNOWN) and op.error in CLEAR_WRITE_ERRORS | {"no reply"}
               for op in late), late
    # Generous slack: a loaded 2-core machine delays processes, not the protocol's bounds.
    assert all(op.t_complete - op.t_invoke <= cluster.write_timeout + 2.0 for op in late), late
    if survivor_role == "leader":  # docs/cluster-design.md: 1.25 x election timeout + heartbeat
        bound = 1.25 * cluster.election_timeout + FAST["heartbeat_interval_ms"] / 1000
        assert noticed < bound + 2.0, f"the leader stepped down after {noticed:.2f}s"
    # A fresh write now fails at once with a clear error.
    started = time.monotonic()
    kind, body = cluster.append(survivor, "alone", [new_event()])
    took = time.monotonic() - started
    assert kind == "error" and body["code"] in CLEAR_WRITE_ERRORS, body
    assert took < cluster.write_timeout
    print(f"lone {survivor_role} {survivor} noticed after {noticed:.2f}s; a write on it: "
          f"{body['code']}: {body['message']} ({took:.3f}s); outcomes of writes on it "
          f"meanwhile: {dict(collections.Counter(op.error or op.outcome for op in late))}")
    # Committed data is still readable on the survivor.
    served = {e[0] for e in cluster.read_all(survivor)}
    assert acked <= served, f"{len(acked - served)} acknowledged events not readable"
    # The majority returns: service resumes and nothing acknowledged is lost.
    cluster.start(*doomed)
    new_leader = cluster.wait_for_leader(timeout=20)
    with Writers(cluster, history, cluster.names) as writers:
        writers.wait_acked(20, since=time.monotonic())
    finish(cluster, history, cluster.names, new_leader)


def test_kill_all_three_and_restart_loses_nothing_acknowledged(cluster):
    history = History()
    with Writers(cluster, history, cluster.names) as writers:
        writers.wait_acked(60)
        for name in cluster.names:
            cluster.kill(name)
    cluster.start()
    leader = cluster.wait_for_leader(timeout=20)
    with Writers(cluster, history, cluster.names) as writers:
        writers.wait_acked(10, since=time.monotonic())
    finish(cluster, history, cluster.names, leader)


# --- a paused (zombie) leader -----------------------------------------------------------------

def test_a_paused_leader_steps_down_on_resume_and_loses_nothing_acknowledged(cluster):
    """SIGSTOP the leader past the election timeout while it takes writes; a new leader takes
    writes; SIGCONT: the old leader steps down and truncates its uncommitted tail; no write
    it acknowledged is missing and every node converges (KurrentDB #3472)."""
    old = cluster.wait_for_leader()
    others = [n for n in cluster.names if n != old]
    history = History()
    burst = Raw(cluster.external(old))
    sent: dict[int, object] = {}

    def pipeline(n: int) -> None:
        for _ in range(n):
            event = new_event()
            op = history.append("burst", [event[0]], old)
            sent[burst.send("append", {"stream": "burst", "events": [event]})] = op

    with Readers(cluster, history, cluster.names) as readers, \
            Writers(cluster, history, cluster.names) as writers:
        writers.wait_acked(30)
        pipeline(40)  # some of these are in flight on the leader when it freezes
        cluster.pause(old)  # its writer thread keeps sending into the frozen process
        paused_at = time.monotonic()
        pipeline(40)  # these wait in its socket buffers: it reads them when it thaws
        new = cluster.wait_for_leader(timeout=10, among=others)
        writers.wait_acked(40, since=paused_at)
        # Writes queued for the old leader while it was frozen are read as soon as it runs.
        wait_until(lambda: time.monotonic() - paused_at > 3 * cluster.election_timeout, 10,
                   "the pause to outlast the election timeout")
        cluster.resume(old)
        resumed_at = time.monotonic()
        wait_until(lambda: (cluster.info(old) or {}).get("state") in ("Follower", "CatchingUp")
                   and cluster.info(old)["leader"] == new, 10,
                   f"{old} following {new} after it resumed", cluster)
        stepped_down = time.monotonic() - resumed_at
        writers.wait_acked(30, since=resumed_at)
    replies = burst.collect(sent, timeout=cluster.write_timeout + 2)
    burst.close()
    for corr, op in sent.items():
        kind, body = replies.get(corr, (None, None))
        history.complete(op, kind, body, "no reply")
    burst_outcomes = History(sent.values())
    assert cluster.wait_for_leader() == new
    truncated = "truncating the uncommitted log tail" in cluster.stderr_path(old).read_text()
    print(f"paused {old}; new leader {new}; {old} followed it {stepped_down:.2f}s after "
          f"SIGCONT (truncated an uncommitted tail: {truncated}); pipelined appends to "
          f"it around the pause: {burst_outcomes.counts()}")
    finish(cluster, history, cluster.names, new, readers)


# --- segregated networks ----------------------------------------------------------------------

def test_client_messages_on_the_internal_port_and_cluster_messages_on_the_external_are_refused(
        cluster):
    from esnode.core.cluster_messages import WIRE_MESSAGES
    from esnode.core.forwarding import FORWARD_MESSAGES, ForwardAppend
    from esnode.core.types import EventData
    from esnode.transport.codec import encode_request
    from esnode.transport.internal_codec import InternalCodec

    leader = cluster.wait_for_leader()
    target = next(n for n in cluster.names if n != leader)
    history = History()
    appends_through_every_node(cluster, history, per_node=1)

    # A client request sent to the internal (cluster) endpoint.
    intruder = Raw(cluster.internal(target))
    try:
        intruder.send_raw(encode_request("append", 7, {"stream": "x", "events": [new_event()]}))
        corr, kind, body = intruder.recv_raw(timeout=5)
        assert kind == "error" and body["code"] == "bad_request", body
        assert "external endpoint" in body["message"], body
        # A well-formed cluster message from a peer that is not a member: refused as well.
        codec = InternalCodec(WIRE_MESSAGES + FORWARD_MESSAGES)
        intruder.send_raw(codec.encode(ForwardAppend(leader, 1, "forged", -2,
                                                     (EventData(*new_event()),))))
        corr, kind, body = intruder.recv_raw(timeout=5)
        assert kind == "error" and body["code"] == "bad_request", body
    finally:
        intruder.close()

    # A cluster message sent to the external (client) endpoint.
    outsider = Raw(cluster.external(target))
    try:
        outsider.send_raw(codec.encode(ForwardAppend(leader, 1, "forged", -2, (EventData(*new_event()),))))
        corr, kind, body = outsider.recv_raw(timeout=5)
        assert kind == "error" and body["code"] == "bad_request", body
        assert "internal endpoint" in body["message"], body
        print(f"cluster message on the external port: {body['message']}")
    finally:
        outsider.close()

    # Nothing was harmed: same leader, nothing forged written, writes still work everywhere.
    assert cluster.wait_for_leader() == leader
    appends_through_every_node(cluster, history, per_node=1)
    logs = cluster.wait_converged(cluster.names, at_least=len(history.ops))
    check(history, logs)
    assert not any(e[1] in ("forged", "x") for log in logs.values() for e in log)


# --- one fault after another ------------------------------------------------------------------

def test_rolling_faults_on_whoever_leads(cluster):
    """Kill -9, restart, pause and resume whichever node leads, round after round, under
    appends of one to three events; the killed or paused leader rejoins (truncating what it
    had not committed) before the next round. Nothing acknowledged is lost, nothing
    duplicated, every node converges."""
    history = History()
    rounds = []
    with Readers(cluster, history, cluster.names) as readers, \
            Writers(cluster, history, cluster.names, max_batch=3) as writers:
        writers.wait_acked(20)
        for fault in ("kill", "pause", "kill", "kill"):
            leader = cluster.wait_for_leader()
            others = [n for n in cluster.names if n != leader]
            started = time.monotonic()
            if fault == "kill":
                writers.down(leader)
                cluster.kill(leader)
            else:
                cluster.pause(leader)
            new = cluster.wait_for_leader(timeout=10, among=others)
            rounds.append(f"{fault} {leader} -> {new} in {time.monotonic() - started:.2f}s")
            writers.wait_acked(20, since=started)
            if fault == "kill":
                cluster.start(leader)
                writers.up(leader)
            else:
                cluster.resume(leader)
            wait_until(lambda: (cluster.info(leader) or {}).get("state") == "Follower",
                       15, f"{leader} following again", cluster)
            writers.wait_acked(3, since=time.monotonic(), via=leader)
    print("rounds: " + "; ".join(rounds))
    finish(cluster, history, cluster.names, cluster.wait_for_leader(), readers)


def test_seeded_nemesis(cluster):
    """Random faults from one printed seed (``ESNODE_NEMESIS_SEED`` replays one): kill -9 or
    pause the leader or a follower, or take the majority down for a while, then heal, round
    after round, under appends of 1-3 events and now and then 100."""
    seed = int(os.environ.get("ESNODE_NEMESIS_SEED") or random.randrange(1 << 30))
    print(f"nemesis seed {seed}")
    rng = random.Random(seed)
    history = History()
    rounds = []
    with Readers(cluster, history, cluster.names) as readers, \
            Writers(cluster, history, cluster.names, max_batch=3, big=100) as writers:
        writers.wait_acked(10)
        for _ in range(5):
            leader = cluster.wait_for_leader(timeout=15)
            followers = [n for n in cluster.names if n != leader]
            fault = rng.choice(["kill leader", "kill follower", "pause leader",
                                "pause follower", "lose majority"])
            victims = {"kill leader": [leader], "pause leader": [leader],
                       "kill follower": [rng.choice(followers)],
                       "pause follower": [rng.choice(followers)],
                       "lose majority": [leader, rng.choice(followers)]}[fault]
            rounds.append(f"{fault} {victims}")
            started = time.monotonic()
            pausing = fault.startswith("pause")
            for v in victims:
                if not pausing:
                    writers.down(v)
                (cluster.pause if pausing else cluster.kill)(v)
            if len(victims) == 1:
                cluster.wait_for_leader(timeout=10, exclude=victims)
                writers.wait_acked(10, since=started)
            else:  # the lone survivor refuses writes until the majority is back
                survivor = next(n for n in cluster.names if n not in victims)
                wait_until(lambda: any(op.outcome == FAIL and op.t_invoke > started
                                       for op in history.ops), 10, "a refused write", cluster)
                assert not any(op.outcome == OK and op.t_invoke > started + 0.1
                               and op.process == survivor for op in history.ops)
            for v in victims:
                (cluster.resume if pausing else cluster.start)(v)
                writers.up(v)
            wait_until(lambda: cluster.leader() is not None and all(
                (cluster.info(n) or {}).get("state") in ("Leader", "Follower")
                for n in cluster.names), 20, "every node leading or following", cluster)
    print("rounds: " + "; ".join(rounds))
    finish(cluster, history, cluster.names, cluster.wait_for_leader(), readers)
