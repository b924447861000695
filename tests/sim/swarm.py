"""Seeded swarm runs: a safety phase with random faults, then a liveness phase.

Every option (loss, duplication, which faults and when) is drawn from the seed, as in
TigerBeetle's VOPR. ``run_seed`` raises ``SimFailure`` naming the seed and how to replay it.
"""

from __future__ import annotations

from esnode.core.node_core import NodeCore
from esnode.core.states import VNodeState

from .checkers import Violation
from .cluster import SimCluster

REPLAY = "ESNODE_SIM_SEED={seed} ESNODE_SIM_SIZE={size} pytest tests/sim -k replay"


class SimFailure(AssertionError):
    pass


def schedule_faults(c: SimCluster, until: float) -> None:
    rng = c.rng

    def heal_net():
        c.lines.append(f"{c.now:.3f} NET recover")
        c.net.recover()
    t = 1.0
    while True:
        t += rng.uniform(0.3, 2.5)
        if t >= until:
            return
        kind = rng.choice(["isolate", "partition", "crash", "pause", "oneway", "leader-crash",
                           "leader-pause", "calm"])
        victim = rng.choice(c.names)
        length = rng.uniform(0.3, 4.0)

        def act(kind=kind, victim=victim, length=length):
            lead = c.leader()
            if kind.startswith("leader-"):
                if lead is None:
                    return
                victim = lead.name
            c.lines.append(f"{c.now:.3f} FAULT {kind} {victim} for {length:.2f}s")
            if kind == "isolate":
                c.net.isolate(victim, c.names)
                c.at(c.now + length, None, heal_net)
            elif kind == "partition":
                side = set(rng.sample(c.names, len(c.names) // 2))
                for a in side:
                    for b in set(c.names) - side:
                        c.net.cut(a, b)
                c.at(c.now + length, None, heal_net)
            elif kind == "oneway":
                other = rng.choice([n for n in c.names if n != victim])
                c.net.cut_one_way(victim, other)
                c.at(c.now + length, None, heal_net)
            elif kind.endswith("crash"):
                c.crash(victim)
                c.at(c.now + length, None, lambda v=victim: c.restart(v))
            elif kind.endswith("pause"):
                c.pause(victim)
                c.at(c.now + length, None, lambda v=victim: c.resume(v))
            else:
                heal_net()
        c.at(t, None, act)


def liveness(c: SimCluster, budget: float) -> None:
    """Heal everything; a leader must be elected, commit a new write and every node must
    converge on one log within ``budget`` virtual seconds."""
    c.heal()
    probes: list[bytes] = []

    def done() -> bool:
        if not any(p in c.checker.acked for p in probes):
            pending = c.pending_writes()
            if not any(p in pending for p in probes):
                probe = c.client_write()
                if probe is not None:
                    probes.append(probe)
            return False
        return c.converged()

    start = c.now
    if not c.run_until(start + budget, done):
        raise Violation(f"liveness: no convergence within {budget}s after healing\n"
                        + c.describe())
    # Gossip: after a few rounds every node sees every member alive and one leader.
    c.run_until(c.now + 4 * c.config["gossip_interval"] + 0.5)
    for node in c.nodes.values():
        view = node.core.member_view(c.now)
        alive = [m for m in view if m.is_alive]
        if len(alive) != len(c.names):
            raise Violation(f"gossip: {node.name} sees only {[m.name for m in alive]} alive")
        leaders = [m.name for m in view if m.state == VNodeState.Leader]
        if len(leaders) != 1:
            raise Violation(f"gossip: {node.name} sees leaders {leaders}")


def run_seed(seed: int, size: int = 3, core_class: type[NodeCore] = NodeCore,
             safety: float = 20.0, budget: float = 15.0) -> SimCluster:
    import random

    options = random.Random(seed)
    c = SimCluster(seed, size, core_class, loss=options.choice([0.0, 0.01, 0.05, 0.15]),
                   duplicate=options.choice([0.0, 0.02, 0.1]),
                   power_failure=options.choice([0.0, 0.0, 0.001, 0.005]))
    try:
        c.start_clients(until=safety, rate=options.choice([10.0, 40.0, 100.0]))
        schedule_faults(c, safety)
        c.run_until(safety)
        liveness(c, budget)
        c.checker.final()
    except Exception as exc:  # Violation, StorageViolation, InvariantViolation, or a crash
        trace = "\n".join(c.lines[-25:])
        raise SimFailure(
            f"seed {seed} (size {size}) failed at t={c.now:.3f}: {type(exc).__name__}: {exc}\n"
            f"replay: {REPLAY.format(seed=seed, size=size)}\n"
            f"last events:\n{trace}\nnodes:\n{c.describe()}") from exc
    return c
