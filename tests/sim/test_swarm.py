"""Seeded swarm runs (safety phase with faults, then liveness) and proof that the checkers
catch deliberately broken cores.

CI runs the fixed seeds below. Replay one seed:
    ESNODE_SIM_SEED=1234 [ESNODE_SIM_SIZE=5] pytest tests/sim -k replay
Longer sweep (N seeds per size, from ESNODE_SIM_FROM, default a random start):
    ESNODE_SIM_SWEEP=2000 pytest tests/sim -k sweep -s
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter

import pytest

from esnode.core.election import ElectionCore
from esnode.core.node_core import NodeCore
from esnode.core.replication import LeaderReplication

from .cluster import SimCluster
from .scenario import stable_leader, write
from .swarm import SimFailure, run_seed

CI_SEEDS_3 = range(0, 150)
CI_SEEDS_5 = range(1000, 1050)
REGRESSION_SEEDS = {
    # (seed, size): what it found (each failed once; docs/cluster-design.md lists them)
    (29, 3): "a restarted replica reused subscription id 1 and took a stale subscription point",
    (106, 3): "truncation to a point between records left commit above the last record",
    (182, 3): "a resubscription reused an id the leader still held, replaying an old point",
    (10878, 5): "checker bug: a stale leader of an older term (votes delivered after a "
                "pause) need not hold records committed in later terms",
    (100071, 5): "sim bug: a dead-member timeout of only 4 gossip rounds (production has 10) "
                 "let random peer choice report a live member dead",
}


@pytest.mark.parametrize("seed", CI_SEEDS_3)
def test_swarm_3_nodes(seed):
    run_seed(seed, 3)


@pytest.mark.parametrize("seed", CI_SEEDS_5)
def test_swarm_5_nodes(seed):
    run_seed(seed, 5)


@pytest.mark.parametrize("seed,size", sorted(REGRESSION_SEEDS))
def test_regression_seed(seed, size):
    run_seed(seed, size)


def test_replay():
    seed = os.environ.get("ESNODE_SIM_SEED")
    if seed is None:
        pytest.skip("set ESNODE_SIM_SEED (and ESNODE_SIM_SIZE) to replay one seed")
    c = run_seed(int(seed), int(os.environ.get("ESNODE_SIM_SIZE", "3")))
    print("\n".join(c.lines))


def test_sweep(sweep_size):
    if not sweep_size:
        pytest.skip("set ESNODE_SIM_SWEEP=N to run N seeds per cluster size")
    start = int(os.environ.get("ESNODE_SIM_FROM", random.randrange(1 << 30)))
    sizes = [int(s) for s in os.environ.get("ESNODE_SIM_SIZES", "3,5").split(",")]
    began, failures, stats = time.monotonic(), [], Counter()
    logging.getLogger("esnode.replica").setLevel(logging.ERROR)  # thousands of step-downs
    for size in sizes:
        for seed in range(start, start + sweep_size):
            try:
                stats += run_seed(seed, size).stats
            except SimFailure as exc:
                failures.append(str(exc).splitlines()[0])
                print(f"\nFAILED {failures[-1]}", flush=True)
            if (seed - start + 1) % 500 == 0:
                print(f"\nsweep: size {size}, {seed - start + 1} seeds, "
                      f"{time.monotonic() - began:.0f}s, {len(failures)} failure(s)", flush=True)
    print(f"\nsweep: {len(sizes) * sweep_size} runs (sizes {sizes}) from seed {start} in "
          f"{time.monotonic() - began:.1f}s, {len(failures)} failure(s)")
    for what, count in sorted(stats.items()):
        print(f"  {what}: {count}")
    assert not failures, "\n".join(failures)


def test_the_swarm_runs_the_production_write_path():
    """The seeds reach what the storage actor does in production: group commits of several
    writes, records shipped before the leader's own fsync (and power lost right after),
    the commit position riding on replicated writes, restarts from a lagging one."""
    stats = Counter()
    for seed in range(40):
        stats += run_seed(seed, 3).stats
    assert set(stats) >= {
        "group commits of several writes", "records shipped before the fsync",
        "power failures", "power failures after shipping, before the fsync",
        "replicated writes carrying the commit position",
        "restarts from a persisted commit behind the exposed one"}, stats


# --- the checkers catch broken cores (swapped in by subclassing; no switch in product code) ----
class GreedyLeaderReplication(LeaderReplication):
    """Counts a record as committed as soon as the leader alone has it (no majority)."""

    def quorum_candidate(self) -> int:
        return self.log.durable


class GreedyNode(NodeCore):
    leader_class = GreedyLeaderReplication


class CarelessElection(ElectionCore):
    """Votes for any candidate, however far behind its log is."""

    def candidate_up_to_date(self, last_epoch: int, last_position: int) -> bool:
        return True


class CarelessVoterNode(NodeCore):
    election_class = CarelessElection


def test_the_sim_catches_a_leader_that_commits_without_a_majority():
    c = SimCluster(5, core_class=GreedyNode)
    with pytest.raises(AssertionError, match="only 1 node"):
        stable_leader(c)
        write(c, 5)


def test_swarm_catches_a_leader_that_commits_without_a_majority():
    with pytest.raises(SimFailure, match=r"(?s)seed \d+ .*replay: ESNODE_SIM_SEED="):
        for seed in range(10):
            run_seed(seed, 3, core_class=GreedyNode)


def _laggard_scenario(seed: int, core_class: type[NodeCore]) -> None:
    """Isolate a follower, commit without it, kill the leader, let the laggard back."""
    c = SimCluster(seed, core_class=core_class)
    lead = stable_leader(c)
    laggard = next(n for n in c.names if n != lead.name)
    c.net.isolate(laggard, c.names)
    write(c, 20)
    c.crash(lead.name)
    c.net.recover()
    c.run_until(c.now + 10.0)


def test_the_sim_catches_a_voter_that_grants_to_a_less_up_to_date_candidate():
    caught = []
    for seed in range(20):
        try:
            _laggard_scenario(seed, CarelessVoterNode)
        except AssertionError as exc:
            caught.append((seed, str(exc)))
    assert caught, "a careless voter was never caught"
    assert any("without every committed record" in msg for _, msg in caught)


def test_the_correct_core_passes_the_same_scenario():
    for seed in range(20):
        _laggard_scenario(seed, NodeCore)
