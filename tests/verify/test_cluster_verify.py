"""``esnode verify`` against a real 3-node cluster (node processes, LMDB in tmp): the workload
rides through a kill -9 of the leader with no violation, and through the loss of both followers
then the leader (issue 9); the checker catches an acknowledged event removed from one node's
final state; the CLI runs, saves, and re-checks a saved history (exit code 1 once a violation
is injected)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from esnode.verify.checker import check
from esnode.verify.groups import GroupRun, check_group
from esnode.verify.history import (
    APPEND,
    DELETE,
    OK,
    READ_METADATA,
    READ_STREAM,
    SET_METADATA,
    SUBSCRIBE,
    load,
    save,
)
from esnode.verify.workload import Workload
from tests.client.cluster_support import seeds
from tests.cluster.conftest import FAST
from tests.cluster.harness import Cluster, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("verify-cluster"), 3, **FAST)
    try:
        c.start()
        c.wait_for_leader(timeout=20)
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop_all(graceful=False)


def uri(cluster: Cluster) -> str:
    return seeds([cluster.external(n) for n in cluster.names])


def run_during(workload: Workload, faults: Callable[[], Any], join: float = 120) -> tuple:
    """Run ``workload`` in a thread while ``faults()`` breaks the cluster: (history, final
    state, what ``faults`` returned)."""
    out: list = []
    runner = threading.Thread(target=lambda: out.append(workload.run()), daemon=True)
    runner.start()
    try:
        done = faults()
    finally:
        runner.join(timeout=join)
    assert not runner.is_alive() and out, "the workload did not finish"
    return (*out[0], done)


@pytest.fixture(scope="module")
def run_with_leader_kill(cluster):
    """A 6 s workload; the leader is killed -9 once appends flow, and restarted once a new
    leader is agreed on. Returns (history, final state, the time of the kill)."""
    workload = Workload(uri(cluster), duration=6.0, clients=4, converge_timeout=20)

    def kill_the_leader() -> float:
        wait_until(lambda: workload.history.counts(APPEND)[OK] >= 30, 15,
                   "30 acknowledged appends", cluster)
        leader = cluster.wait_for_leader(timeout=10)
        killed_at = time.monotonic()
        cluster.kill(leader)
        cluster.wait_for_leader(timeout=15, among=[n for n in cluster.names if n != leader])
        cluster.start(leader)
        return killed_at

    return run_during(workload, kill_the_leader, join=90)


def test_the_workload_rides_through_a_leader_kill_with_no_violation(run_with_leader_kill):
    history, final, killed_at = run_with_leader_kill
    result = check(history, final)
    print(json.dumps({k: v for k, v in result.to_json().items() if k != "violations"}))
    assert result.ok, "\n".join(str(v) for v in result.violations[:20])
    assert result.appends[OK] > 30 and result.appends["fail"] > 0   # conflicts happened
    assert any(op.kind == APPEND and op.outcome == OK and op.t_invoke > killed_at
               for op in history), "no append acknowledged after the kill"
    assert sorted(final.logs) == sorted(["node1", "node2", "node3"])
    assert any(op.kind == "subscribe" and op.events for op in history)
    done = Counter((op.kind, op.error, op.tombstone) for op in history if op.outcome == OK)
    assert done[(DELETE, "", False)] and done[(DELETE, "", True)] and done[(SET_METADATA, "", False)]
    assert done[(READ_METADATA, "", False)] and done[(READ_STREAM, "stream_deleted", False)]
    assert any(op.kind == "cluster_info" and op.outcome == OK for op in history)


def test_the_checker_catches_an_acked_event_missing_from_one_node(run_with_leader_kill):
    history, final, _ = run_with_leader_kill
    acked = [op for op in history if op.kind == APPEND and op.outcome == OK]
    victim = acked[len(acked) // 2]
    node = sorted(final.logs)[-1]
    final = type(final)(**{**final.__dict__})
    final.logs = {**final.logs, node: [e for e in final.logs[node]
                                        if e.event_id not in victim.event_ids]}
    result = check(history, final)
    i1 = [v for v in result.violations if v.invariant == "I1"]
    assert i1 and i1[0].evidence["node"] == node
    assert i1[0].evidence["ops"][0]["id"] == victim.id


def esnode(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esnode.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_cli_verify_runs_saves_and_rechecks(cluster, tmp_path):
    saved = tmp_path / "run.jsonl"
    done = esnode("verify", "--connect", uri(cluster), "--duration", "1.5", "--clients", "3",
                  "--save", str(saved))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VERDICT: OK" in done.stdout and "operations:" in done.stdout
    assert "ops (" in done.stderr                                   # progress lines
    again = esnode("verify", "--check", str(saved), "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    verdict = json.loads(again.stdout)
    assert verdict["ok"] and verdict["operations"]["ok"] > 0 and verdict["events_checked"] > 0
    assert load(saved)[0].meta["group"]["facts"], "the group's facts are saved (G1 rechecked)"

    history, final = load(saved)                      # inject: a failed append became visible
    failed = next(op for op in history if op.kind == APPEND and op.outcome == OK)
    failed.outcome, failed.error = "fail", "wrong_expected_version"
    tampered = tmp_path / "tampered.jsonl"
    save(history, final, tampered)
    bad = esnode("verify", "--check", str(tampered))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "I3" in bad.stdout and "VIOLATION" in bad.stdout and failed.event_ids[0] in bad.stdout


@pytest.mark.slow
def test_the_workload_through_the_loss_of_both_followers_then_the_leader(tmp_path):
    """Issue 9: both followers are killed (SIGKILL) while clients delete, change metadata and
    read; the leader takes writes it cannot commit until it steps down, then it is killed, the
    followers restart and elect a leader, and the old leader rejoins. No read may show a delete
    or metadata change that was never committed (I11), nor anything else amiss; two ``$all``
    subscribers ride through it all, never seeing an event twice or out of order (I7), and so
    does a persistent subscription group with two consumers and its own writer (G1)."""
    c = Cluster(tmp_path / "cluster", 3, **{**FAST, "election_timeout_ms": 1500})
    group = None
    try:
        c.start()
        leader = c.wait_for_leader(timeout=20, settled=True)
        followers = [n for n in c.names if n != leader]
        workload = Workload(uri(c), duration=8.0, clients=8, subscribers=2,
                            converge_timeout=30)
        group = GroupRun(uri(c), workload.run_id, consumers=2, duration=8.0)
        group.start()

        def cut_off_the_leader() -> tuple[float, float]:
            wait_until(lambda: workload.history.counts(DELETE)[OK] >= 5, 20,
                       "5 acknowledged deletes", c)
            for name in followers:
                c.kill(name)
            left = time.monotonic()
            wait_until(lambda: (c.info(leader) or {}).get("state") not in (None, "Leader"),
                       10, f"{leader} stepping down", c)
            c.kill(leader)
            killed = time.monotonic()
            c.start(*followers)
            c.wait_for_leader(timeout=20, among=followers)
            c.start(leader)
            return left, killed

        history, final, (left, killed) = run_during(workload, cut_off_the_leader)
        positions = group.finish(settle_timeout=40)
        result = check(history, final)
        print(json.dumps({k: v for k, v in result.to_json().items() if k != "violations"}))
        cut_off = [op for op in history if op.node == leader and op.t_invoke > left
                   and op.t_complete is not None and op.t_complete < killed]
        print(f"{leader} was cut off {killed - left:.2f}s: {len(cut_off)} operations served, "
              f"{sum(op.kind in (READ_STREAM, READ_METADATA) for op in cut_off)} reads")
        assert result.ok, "\n".join(str(v) for v in result.violations[:20])
        assert sorted(final.logs) == sorted(c.names)
        # the subscribers did ride through: each got an event acknowledged after the kill
        later = min(op.position for op in history if op.kind == APPEND and op.outcome == OK
                    and op.t_invoke > killed)
        for sub in ("sub0", "sub1"):
            got = [e.position for op in history if op.kind == SUBSCRIBE
                   and op.process == sub for e in op.events]
            assert got and max(got) >= later, (sub, later, got[-5:])
        assert positions and check_group(group.facts, positions, group.errors) == []
        assert [f for f in group.facts if "acked" in f and f["t"] > killed]
    except BaseException:
        print(c.logs())
        raise
    finally:
        if group is not None:
            group.stop()
        c.stop_all(graceful=False)
