"""Random fault schedules (partitions, one-way cuts, isolation, loss) from a seed, while
clients write through every node and retry with the same event ids; then heal and check the
history against the final state of every node:

* every acknowledged write is on every node, exactly once;
* a write whose every attempt was refused definitely (no_quorum, not_leader, not_ready) is on
  no node;
* streams have no version gaps, and all logs are identical.
"""

from __future__ import annotations

import os
import threading

import pytest

from esnode.core.messages import Append
from esnode.core.types import ANY as ANY_VERSION
from tests.support.cluster import new_event
from tests.support.inproc import ANY, outcome

SEEDS = ([int(s) for s in os.environ["NEMESIS_SEEDS"].split(",")]
         if os.environ.get("NEMESIS_SEEDS") else [3, 11])
"""CI runs two seeds; ``NEMESIS_SEEDS=1,2,3,...`` runs a longer sweep (30 seeds took 140 s),
``NEMESIS_STORE=lmdb`` on LMDB stores."""
DEFINITE = {"no_quorum", "not_leader", "not_ready"}
PHASE_S = 0.6
PHASES = 6


def nemesis(cluster, stop: threading.Event, log: list[str]) -> None:
    net, rng, names = cluster.network, cluster.network.rng, cluster.names
    for _ in range(PHASES):
        net.recover()
        choice = rng.choice(["isolate", "one-way", "pair", "lossy", "calm"])
        if choice == "isolate":
            victim = (cluster.leader() or cluster.nodes[rng.choice(names)]).config.name
            net.isolate(victim)
        elif choice == "one-way":
            a, b = rng.sample(names, 2)
            net.cut_one_way(a, b)
        elif choice == "pair":
            a, b = rng.sample(names, 2)
            net.cut(a, b)
        elif choice == "lossy":
            net.drop(ANY, ANY, 0.3)
            net.duplicate(ANY, ANY, 0.2)
            net.reorder(ANY, ANY, 0.3, window=0.03)
        log.append(choice)
        if stop.wait(PHASE_S):
            break
    net.recover()


def test_false_disconnect_hints_under_load_cause_no_election(make_cluster):
    """Connection resets while the leader lives: its heartbeats (on its own connections)
    cancel the followers' hints, and a pre-vote that slips through is refused by the peer
    that still hears it, so the leader and its term stay."""
    cluster = make_cluster(seed=7)
    leader = cluster.wait_for_leader()
    term = leader.board.term
    stop = threading.Event()
    acked: list[int] = []

    def writer() -> None:
        client = cluster.client(leader.config.name)
        while not stop.is_set():
            kind, _ = outcome(client.call(Append("hinted", ANY_VERSION, (new_event(),)),
                                          timeout=2.0))
            acked.append(kind == "ok")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(4):  # each further apart than the per-peer rate limit
            for follower in cluster.followers(leader):
                cluster.network.hint(follower.config.name, leader.config.name)
            stop.wait(1.2)
    finally:
        stop.set()
        thread.join(timeout=10)
    terms = {n.config.name: n.board.term for n in cluster.running()}
    print(f"terms after 4 rounds of false hints under load: {terms}; appends {len(acked)}")
    assert cluster.leader() is leader and set(terms.values()) == {term}
    assert sum(acked) >= 20


@pytest.mark.parametrize("seed", SEEDS)
def test_random_partitions_lose_no_acknowledged_write_and_show_no_refused_one(
        make_cluster, seed):
    cluster = make_cluster(seed=seed, store=os.environ.get("NEMESIS_STORE", "memory"))
    cluster.wait_for_leader()
    outcomes: dict[tuple[str, ...], list[str]] = {}  # event ids -> every attempt's outcome
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer(node: str) -> None:
        client = cluster.client(node)
        try:
            while not stop.is_set():
                events = (new_event(), new_event())
                ids = tuple(e.event_id for e in events)
                for _attempt in range(4):
                    try:
                        kind, _ = outcome(client.call(
                            Append(f"w-{node}", ANY_VERSION, events), timeout=1.0))
                    except TimeoutError:
                        kind = "timeout"
                    with lock:
                        outcomes.setdefault(ids, []).append(kind)
                    if kind == "ok":
                        break
                    stop.wait(0.05)
        except BaseException as exc:
            failures.append(exc)

    schedule: list[str] = []
    writers = [threading.Thread(target=writer, args=(n,)) for n in cluster.names]
    for t in writers:
        t.start()
    try:
        nemesis(cluster, threading.Event(), schedule)
    finally:
        stop.set()
        for t in writers:
            t.join(timeout=10)
    assert not failures
    cluster.wait_for_leader(timeout=15)
    cluster.wait_converged(timeout=20)
    print(f"seed {seed}: terms {[n.board.term for n in cluster.running()]} after {schedule}")

    where = f"seed {seed}, schedule {schedule}"
    acked = {i for ids, kinds in outcomes.items() if "ok" in kinds for i in ids}
    refused = {i for ids, kinds in outcomes.items() if set(kinds) <= DEFINITE for i in ids}
    assert len(acked) >= 20, where
    for name in cluster.names:
        events = [e for e in cluster.events(name) if e.stream.startswith("w-")]
        ids = [e.event_id for e in events]
        assert len(ids) == len(set(ids)), f"{name}: duplicates ({where})"
        assert acked <= set(ids), f"{name}: acknowledged writes lost ({where})"
        assert not refused & set(ids), f"{name}: refused writes visible ({where})"
        for stream in {e.stream for e in events}:
            versions = [e.version for e in events if e.stream == stream]
            assert versions == list(range(len(versions))), f"{name}: gap in {stream}"
