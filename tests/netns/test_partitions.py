"""Network partitions between real hosts (one namespace per node), under a steady writer that
uses the client library with every node's external endpoint as a seed.

Every scenario ends the same way: heal, wait for one leader and identical ``$all`` on every
node, then the history checker: every acknowledged append present exactly once at its
acknowledged position on every node, failed appends absent, unknown ones at most once.
Election, step-down and convergence times are printed (run with ``-s`` to see them)."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.cluster.checker import FAIL, OK, UNKNOWN, History, check
from tests.cluster.harness import NoReply, new_event, wait_until
from tests.cluster.writer import ClientWriter
from tests.netns.hosts import HostsCluster

CLEAR = {"no_quorum", "not_leader", "not_ready"}
TIMES: list[str] = []


def report(line: str) -> None:
    TIMES.append(line)
    print(line)


def minority_write(cluster: HostsCluster, node: str, history: History,
                   may_forward: bool = False) -> dict:
    """An append through a minority node, recorded: it must fail, clearly and in time.

    ``may_forward``: the node still hears the majority (a one-way cut), so it may know the new
    leader and forward the write to it over the cut link; it cannot know whether the write
    arrived, and "outcome unknown" is then the honest answer (the checker allows the event at
    most once)."""
    event = new_event()
    op = history.append("minority", [event[0]], node)
    started = time.monotonic()
    try:
        kind, body = cluster.append(node, "minority", [event])
    except NoReply:
        kind, body = None, None
    outcome = history.complete(op, kind, body)
    took = time.monotonic() - started
    clear = (outcome == FAIL and body["code"] in CLEAR) or (
        may_forward and outcome == UNKNOWN and body["code"] == "outcome_unknown")
    assert clear, (node, kind, body)
    assert took < cluster.write_timeout + 0.5, took
    return {"code": body["code"], "message": body["message"], "took": took}


def heal_and_check(cluster: HostsCluster, writer: ClientWriter, history: History,
                   label: str) -> None:
    healed_at = time.monotonic()
    cluster.heal()
    leader = cluster.wait_for_leader(timeout=15)
    writer.wait_acked(10, since=healed_at)
    writer.stop()
    logs = cluster.wait_converged(cluster.names, at_least=len(history.of(OK)), timeout=20)
    converged = time.monotonic() - healed_at
    check(history, logs)
    report(f"{label}: healed -> leader {leader} agreed and {len(logs[leader])} events "
           f"identical on all {cluster.size} nodes after {converged:.2f}s; history "
           f"{history.counts()}")


def split_leader_off(cluster: HostsCluster, label: str,
                     fault: Callable[[str, list[str]], list[str]],
                     may_forward: bool = False) -> None:
    """``fault(leader, others)`` cuts the leader (and maybe others) into a minority and
    returns the majority. The majority elects a leader and takes writes; the old leader
    steps down and refuses writes clearly; healing converges with the history intact."""
    cluster.start()
    leader = cluster.wait_for_leader(timeout=20)
    history = History()
    writer = ClientWriter(cluster.cluster_client(), history, cluster=cluster)
    with writer:
        writer.wait_acked(20)
        majority = fault(leader, [n for n in cluster.names if n != leader])
        cut_at = time.monotonic()  # every cut in place (measured from here)
        minority = [n for n in cluster.names if n not in majority]
        # Poll both at once: when the majority agrees on a leader, when the old one steps down.
        seen: dict[str, float] = {}

        def both() -> bool:
            if "elected" not in seen and cluster.leader(majority):
                seen["elected"] = time.monotonic() - cut_at
            if "stepped_down" not in seen and cluster.state(leader) not in (None, "Leader"):
                seen["stepped_down"] = time.monotonic() - cut_at
            return len(seen) == 2

        wait_until(both, 10, f"a leader among {majority} and {leader} stepping down", cluster)
        new_leader = cluster.wait_for_leader(timeout=10, among=majority)
        elected, stepped_down = seen["elected"], seen["stepped_down"]
        first_ack = writer.wait_acked(10, since=cut_at, timeout=15) - cut_at
        refusals = [minority_write(cluster, n, history, may_forward) for n in minority]
        assert new_leader in majority
        report(f"{label}: leader {leader} cut off with {minority}; majority {majority} "
               f"agreed on {new_leader} after {elected:.2f}s; old leader stepped down after "
               f"{stepped_down:.2f}s ({cluster.state_lines(leader)[-1:]}); first client ack after {first_ack:.2f}s; minority "
               f"writes: {sorted({r['code'] for r in refusals})} in "
               f"{max(r['took'] for r in refusals):.3f}s ({refusals[0]['message']!r})")
        heal_and_check(cluster, writer, history, label)


def test_majority_minority_partition_with_the_leader_in_the_minority(hosts_cluster):
    def fault(leader: str, others: list[str]) -> list[str]:
        hosts_cluster.partition(others, [leader])
        return others

    split_leader_off(hosts_cluster, "majority/minority partition", fault)


def test_isolated_leader_internal_network_only(hosts_cluster):
    """The leader's internal cable is pulled; clients still reach it on the external one."""
    def fault(leader: str, others: list[str]) -> list[str]:
        hosts_cluster.isolate(leader, ("internal",))
        return others

    split_leader_off(hosts_cluster, "isolated leader (internal)", fault)


def test_one_way_cut_from_the_leader_to_the_followers(hosts_cluster):
    """The leader's packets to the followers are dropped; theirs still reach it. The
    followers elect a new leader; the old one steps down (it hears the higher term, or
    check-quorum: no acks from a majority)."""
    def fault(leader: str, others: list[str]) -> list[str]:
        for other in others:
            hosts_cluster.cut_one_way(leader, other)
        return others

    split_leader_off(hosts_cluster, "one-way leader -> followers", fault, may_forward=True)


def test_a_bridge_node_keeps_the_cluster_writable(hosts_cluster):
    """The leader and one follower cannot talk; the third node talks to both. Pre-vote and
    the leader lease should keep the cut-off follower from deposing the leader over and
    over: writes must keep flowing; the leaders seen are reported."""
    cluster = hosts_cluster
    cluster.start()
    leader = cluster.wait_for_leader(timeout=20)
    cut_off, bridge = [n for n in cluster.names if n != leader]
    history = History()
    writer = ClientWriter(cluster.cluster_client(), history, cluster=cluster)
    with writer:
        writer.wait_acked(20)
        cluster.cut(leader, cut_off)
        cut_at = time.monotonic()
        # Watch who leads for a while (a measurement window, polled, not a sleep).
        seen: list[tuple[float, str | None, int]] = []
        window = 8 * cluster.election_timeout

        def watched() -> bool:
            infos = {n: cluster.info(n, timeout=0.3) for n in cluster.names}
            leaders = sorted({i["leader"] for i in infos.values() if i and i["leader"]})
            terms = [m["epoch"] for i in infos.values() if i for m in i["members"]
                     if m["name"] == i["node"]]
            now = (round(time.monotonic() - cut_at, 2), ",".join(leaders) or None,
                   max(terms, default=-1))
            if not seen or seen[-1][1:] != now[1:]:
                seen.append(now)
            return time.monotonic() - cut_at > window

        wait_until(watched, window + 10, "the observation window", cluster, interval=0.1)
        acked = writer.acked_since(cut_at)
        failed = [op for op in history.ops if op.t_invoke >= cut_at and op.outcome == FAIL]
        assert len(acked) >= 20, f"only {len(acked)} appends acknowledged with a bridge node"
        # the cut-off node cannot hear the leader: agreement is asked of the other two
        final = wait_until(lambda: cluster.leader([leader, bridge]) or cluster.leader(
            [cut_off, bridge]), 10, "a leader agreed by two connected nodes", cluster)
        changes = len({s[1] for s in seen if s[1]}) - 1
        report(f"bridge node {bridge} between {leader} and {cut_off}: leaders seen over "
               f"{window:.1f}s: {seen} ({changes} change(s)); final leader {final}; "
               f"{len(acked)} acks, {len(failed)} failed appends during the cut")
        heal_and_check(cluster, writer, history, "bridge node")
