"""Deterministic cluster simulator (Event Store's RandomTestRunner, TigerBeetle's VOPR).

One ``random.Random(seed)`` drives everything: network faults, disk latencies and power
failures, election timeouts, client writes, crashes. Events sit in a heap ordered by
(virtual time, sequence).

Every simulated node runs the product's own shell, ``esnode.actors.replica.Replica`` (group
commit, write merging, shipping before fsync, lazy commit persistence, the pending-acks
ledger), over a fake store (``simstore.py``: fsyncs take time and may lose power) and this
module's network. A node works like the storage actor: one message at a time from a FIFO
inbox (client write batches, cluster bursts, ticks, its own ``Flush`` notes), busy while its
disk fsyncs, so writes that arrive meanwhile queue up and are group-committed together.
The checkers watch the core's effects as they are emitted (a thin subclass of the core under
test) and the replies the replica sends to clients.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from dataclasses import dataclass, field, replace

from esnode.actors.messages import ClusterInbound, Flush, PendingWrite, Tick, WriteBatch
from esnode.actors.replica import Replica
from esnode.actors.status import StatusBoard
from esnode.core.cluster_messages import PeerDisconnected, ReplicateRecords
from esnode.core.cluster_state import CoreConfig
from esnode.core.effects import Alarm, PersistCommit, StateChanged, Truncate
from esnode.core.forwarding import ForwardAppend, ForwardReply
from esnode.core.messages import Reply
from esnode.core.node_core import NodeCore
from esnode.core.types import ANY, AppendRequest, EventData

from .checkers import Checker, Violation
from .network import SimNetwork
from .simstore import SimClock, SimCrash, SimDisk, SimStore

CPU_PER_MESSAGE = 0.00005
"""Virtual seconds a node spends on one inbox message besides its fsyncs."""


@dataclass(eq=False)
class SimNode:
    """One node: its disk outlives incarnations; the replica, inbox and clock do not."""

    name: str
    store: SimStore = field(default_factory=SimStore)
    replica: Replica | None = None
    clock: SimClock | None = None
    incarnation: int = 0
    paused: bool = False
    deferred: list = field(default_factory=list)
    inbox: deque = field(default_factory=deque)
    scheduled: bool = False
    busy_until: float = 0.0
    tick_at: float = -1.0

    @property
    def up(self) -> bool:
        return self.replica is not None

    @property
    def core(self) -> NodeCore | None:
        return self.replica.core if self.replica is not None else None

    @property
    def log(self) -> SimStore:
        return self.store

    # --- the Mailbox of the replica's group commit ---------------------------------------------
    def empty(self) -> bool:
        return not self.inbox

    def post_flush(self) -> None:
        self.inbox.append(Flush())


class SimTransport:
    """FAKE transport: cluster messages go on the simulated network, stamped with the
    sender's clock; client replies go to the simulated clients."""

    def __init__(self, cluster: SimCluster, node: SimNode) -> None:
        self.cluster, self.node = cluster, node

    def send_node(self, messages) -> None:
        disk = self.node.store.disk
        for to, message in messages:
            if disk.shipping and type(message) is ReplicateRecords:
                disk.stats["records shipped before the fsync"] += 1
            self.cluster.send(self.node, to, message)

    def send_client(self, replies) -> None:
        for _peer, corr, reply in replies:
            self.cluster.client_reply(self.node, corr, reply)


def observed(core_class: type[NodeCore], cluster: SimCluster, node: SimNode) -> type[NodeCore]:
    """``core_class`` with its effects shown to the checkers as they are emitted (so a commit
    is judged in the state that claimed it)."""

    class Observed(core_class):
        def start(self, now):
            return cluster.observe(node, self, super().start(now))

        def step(self, message, now):
            return cluster.observe(node, self, super().step(message, now))

        def tick(self, now):
            return cluster.observe(node, self, super().tick(now))

        def shutdown(self, now):
            return cluster.observe(node, self, super().shutdown(now))

    return Observed


class SimCluster:
    disconnect_hints = True
    """A crashed node's peers get ``PeerDisconnected`` (a killed process closes its TCP
    connections at once; a paused or partitioned one does not)."""

    def __init__(self, seed: int, size: int = 3, core_class: type[NodeCore] = NodeCore,
                 loss: float = 0.0, duplicate: float = 0.0,
                 fsync: tuple[float, float] = (0.001, 0.004), power_failure: float = 0.0,
                 write_timeout: float = 2.0, store_class: type[SimStore] = SimStore,
                 replica_class: type[Replica] = Replica, **config):
        self.seed = seed
        self.rng = random.Random(seed)
        self.core_class = core_class
        self.replica_class = replica_class
        self.names = tuple(f"n{i + 1}" for i in range(size))
        self.config = dict(election_timeout=1.0, heartbeat_interval=0.1, subscribe_timeout=0.3,
                           resend_timeout=0.3, batch_records=20, max_inflight_records=60,
                           max_truncation=1 << 30, gossip_interval=0.5,
                           # production's ratio: a member is dead after 10 silent rounds
                           dead_member_timeout=5.0)
        self.config.update(config)
        self.net = SimNetwork(self.rng, loss=loss, duplicate=duplicate)
        self.fsync = fsync
        self.power_failure = power_failure
        """Chance that power fails during any one fsync (0 in the liveness phase)."""
        self.write_timeout = write_timeout
        self.nodes = {name: SimNode(name, store_class()) for name in self.names}
        self.checker = Checker(size)
        self.now = 0.0
        self.heap: list = []
        self.seq = 0
        self.steps = 0
        self.alarms: list[tuple[str, Alarm]] = []
        self.lines: list[str] = []
        self.truncations: list[tuple[str, int]] = []
        self.write_counter = 0
        self.outstanding: dict[int, tuple[str, bytes]] = {}  # corr -> (node, write id)
        self.unknown = 0
        self.stats: Counter = Counter()
        """What the run exercised: group commits, shipping before the fsync, power failures,
        restarts from a lagging persisted commit position (see test_swarm)."""
        for name in self.names:
            self.start_node(name)

    # --- event queue ------------------------------------------------------------------------------
    def at(self, when: float, node: str | None, fn, incarnation: int | None = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, node, incarnation, fn))

    def run_until(self, until: float, stop=None) -> bool:
        """Process events up to virtual time ``until``; True if ``stop()`` became true."""
        while self.heap and self.heap[0][0] <= until:
            when, _, name, incarnation, fn = heapq.heappop(self.heap)
            self.now = max(self.now, when)
            if name is not None:
                node = self.nodes[name]
                if not node.up or (incarnation is not None and incarnation != node.incarnation):
                    continue
                if node.paused:
                    node.deferred.append((incarnation, fn))
                    continue
            self.steps += 1
            fn()
            if stop is not None and stop():
                return True
        self.now = max(self.now, until)
        return stop() if stop is not None else False

    # --- nodes --------------------------------------------------------------------------------------
    def core_config(self, name: str) -> CoreConfig:
        return CoreConfig(node_id=name, members=self.names, **self.config)

    def start_node(self, name: str) -> None:
        node = self.nodes[name]
        node.incarnation += 1
        node.clock = SimClock(self.now)
        node.store.disk = SimDisk(self.rng, node.clock, self.fsync, lambda: self.power_failure,
                                  self.stats)
        if node.store.commit < self.checker.commit_seen.get(name, -1):
            self.stats["restarts from a persisted commit behind the exposed one"] += 1
        node.inbox.clear()
        node.scheduled, node.busy_until, node.tick_at = False, self.now, -1.0
        self.checker.on_restart(name, node.store)
        node.replica = self.replica_class(
            node.store, SimTransport(self, node), node.clock, self.core_config(name),
            mailbox=node, board=StatusBoard(node.store.commit), notify=lambda message: None,
            write_timeout=self.write_timeout, core_class=observed(self.core_class, self, node),
            rng=self.rng, instance_id=f"{name}#{node.incarnation}")
        self._work(node, node.replica.start)

    def crash(self, name: str) -> None:
        node = self.nodes[name]
        if not node.up:
            return
        node.replica = None
        node.paused, node.deferred = False, []
        node.inbox.clear()
        lost = [corr for corr, (where, _) in self.outstanding.items() if where == name]
        for corr in lost:
            del self.outstanding[corr]
        self.unknown += len(lost)
        self.lines.append(f"{self.now:.3f} CRASH {name}")
        for other in self.names if self.disconnect_hints else ():
            peer = self.nodes[other]
            if other != name and peer.up and (name, other) not in self.net.blocked:
                self.at(self.now + self.net.min_delay, other,
                        lambda p=peer: self.post(p, ClusterInbound([(name, PeerDisconnected(name))])),
                        peer.incarnation)

    def restart(self, name: str) -> None:
        if not self.nodes[name].up:
            self.lines.append(f"{self.now:.3f} RESTART {name}")
            self.start_node(name)

    def pause(self, name: str) -> None:
        node = self.nodes[name]
        if node.up:
            node.paused = True
            self.lines.append(f"{self.now:.3f} PAUSE {name}")

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        if node.up and node.paused:
            node.paused = False
            self.lines.append(f"{self.now:.3f} RESUME {name}")
            deferred, node.deferred = node.deferred, []
            for incarnation, fn in deferred:
                self.at(self.now, name, fn, incarnation)
            self._schedule_tick(node)

    def lose_tail(self, name: str, keep_records: int) -> None:
        """Disk fault: the node comes back from an old copy of its log (its vote survives)."""
        node = self.nodes[name]
        self.crash(name)
        store = node.store
        store.lose_tail(keep_records)
        self.checker.commit_seen[name] = store.commit
        self.lines.append(f"{self.now:.3f} LOSE-TAIL {name} keeps {keep_records} records")

    # --- a node's inbox (what the storage actor's pykka inbox is in production) --------------------
    def post(self, node: SimNode, message: object) -> None:
        inbox = node.inbox
        if type(message) is ClusterInbound and inbox and type(inbox[-1]) is ClusterInbound:
            # The transport hands over what arrived together as one burst.
            inbox[-1] = ClusterInbound(inbox[-1].messages + message.messages)
        else:
            inbox.append(message)
        self._wake(node)

    def _wake(self, node: SimNode) -> None:
        if node.scheduled or not node.up:
            return
        node.scheduled = True
        self.at(max(self.now, node.busy_until), node.name, lambda: self._process(node),
                node.incarnation)

    def _process(self, node: SimNode) -> None:
        node.scheduled = False
        if node.inbox:
            message = node.inbox.popleft()
            self._work(node, lambda: node.replica.handle(message))
        if node.up and node.inbox:
            self._wake(node)

    def _work(self, node: SimNode, job) -> None:
        """Run ``job`` on the node's replica from now, with its clock; the node is busy for
        as long as its fsyncs took."""
        node.clock.t = max(self.now, node.clock.t)
        try:
            job()
        except SimCrash:
            self._power_failure(node)
            return
        node.busy_until = node.clock.t + CPU_PER_MESSAGE
        self._check_node(node)
        self._schedule_tick(node)

    def _power_failure(self, node: SimNode) -> None:
        self.stats["power failures"] += 1
        self.lines.append(f"{node.clock.t:.3f} POWER-FAIL {node.name} during an fsync")
        self.crash(node.name)
        self.at(self.now + self.rng.uniform(0.05, 1.5), None,
                lambda name=node.name: self.restart(name))

    # --- the network ----------------------------------------------------------------------------
    def send(self, src: SimNode, to: str, message: object) -> None:
        sent_at = src.clock.t
        for delay in self.net.delays(src.name, to):
            if type(message) is ForwardReply:  # for the gateway, as Node._on_node routes it
                self.at(sent_at + delay, to, lambda m=message: self.forward_reply(to, m))
            else:
                self.at(sent_at + delay, to, lambda s=src.name, m=message:
                        self.post(self.nodes[to], ClusterInbound([(s, m)])))

    # --- what the core emits, as it emits it -----------------------------------------------------
    def observe(self, node: SimNode, core: NodeCore, effects: list) -> list:
        store = node.store
        for e in effects:
            cls = type(e)
            if cls is PersistCommit:
                leading = core.leader is not None
                self.checker.on_commit(node.name, e.position, core.term if leading else None,
                                       store, {n.name: n.store for n in self.nodes.values()})
            elif cls is StateChanged:
                self.lines.append(f"{node.clock.t:.3f} {e.line}")
                self.checker.on_state(node.name, e.new, e.term, store)
            elif cls is Alarm:
                self.alarms.append((node.name, e))
                self.lines.append(f"{node.clock.t:.3f} ALARM {node.name} {e.code}: {e.message}")
            elif cls is Truncate:
                self.truncations.append((node.name, e.position))
        return effects

    def _check_node(self, node: SimNode) -> None:
        core = node.core
        if core is None:
            return
        if core.readable_position > core.commit_position:
            raise Violation(f"{node.name} exposes {core.readable_position} beyond commit "
                            f"{core.commit_position}")
        if core.commit_position < self.checker.commit_seen.get(node.name, -1):
            raise Violation(f"{node.name}: in-memory commit moved back")
        if node.store.commit > core.commit_position:
            raise Violation(f"{node.name}: persisted commit {node.store.commit} ahead of "
                            f"its commit {core.commit_position}")

    def _schedule_tick(self, node: SimNode) -> None:
        if node.replica is None or node.paused:
            return
        when = max(node.replica.next_wakeup, self.now + 0.001)
        if node.tick_at < self.now or when < node.tick_at:
            node.tick_at = when
            self.at(when, node.name, lambda n=node, w=when: self._tick(n, w), node.incarnation)

    def _tick(self, node: SimNode, when: float) -> None:
        if when != node.tick_at:
            return
        node.tick_at = -1.0
        self.post(node, Tick())

    # --- clients ------------------------------------------------------------------------------------
    def leaders(self) -> list[SimNode]:
        return [n for n in self.nodes.values()
                if n.up and not n.paused and n.core.accepts_writes]

    def client_write(self) -> bytes | None:
        """Send one single-event append to a node that accepts writes, or (one in four) have
        a follower's gateway forward it to the leader it knows."""
        candidates = self.leaders()
        if not candidates:
            return None
        node = self.rng.choice(candidates)
        self.write_counter += 1
        corr = self.write_counter
        write_id = f"w:{corr}".encode()
        event = EventData(write_id.decode(), "w")
        followers = [n for n in self.nodes.values() if n.up and not n.paused
                     and n.core.leader_id not in (None, n.name)]
        if followers and self.rng.random() < 0.25:
            origin = self.rng.choice(followers)
            self.outstanding[corr] = (origin.name, write_id)
            self.send(origin, origin.core.leader_id,
                      ForwardAppend(origin.name, corr, "sim", ANY, (event,)))
            return write_id
        self.outstanding[corr] = (node.name, write_id)
        request = AppendRequest("sim", ANY, (event,))
        self.post(node, WriteBatch([PendingWrite(b"client", corr, request)]))
        return write_id

    def client_reply(self, node: SimNode, corr: int, reply) -> None:
        ok = type(reply) is Reply
        self._outcome(node.name, corr, reply.body["position"] if ok else None)

    def forward_reply(self, origin: str, reply: ForwardReply) -> None:
        """The origin's gateway relays the leader's answer (late ones after a crash of the
        origin are dropped, as its gateway died with the forward)."""
        where, _ = self.outstanding.get(reply.forward_id, (None, None))
        if where == origin:
            ok = reply.kind == "ok"
            self._outcome(origin, reply.forward_id, reply.body["position"] if ok else None)

    def _outcome(self, node: str, corr: int, position: int | None) -> None:
        _, write_id = self.outstanding.pop(corr, (None, None))
        if write_id is None:
            raise Violation(f"{node} answered write {corr} twice (or one it never got)")
        if position is None:
            self.unknown += 1
            return
        # No state check here: a burst can carry the acks that commit a write and then a
        # newer term; the write is committed all the same (on_ack checks that it is).
        self.checker.on_ack(write_id, position)

    def pending_writes(self) -> set[bytes]:
        return {w for _, w in self.outstanding.values()}

    def start_clients(self, until: float, rate: float = 30.0) -> None:
        def fire():
            self.client_write()
            nxt = self.now + self.rng.expovariate(rate)
            if nxt < until:
                self.at(nxt, None, fire)
        self.at(self.now + self.rng.expovariate(rate), None, fire)

    # --- state queries ------------------------------------------------------------------------------
    def leader(self) -> SimNode | None:
        leaders = self.leaders()
        return max(leaders, key=lambda n: n.core.term) if leaders else None

    def converged(self) -> bool:
        lead = self.leader()
        if lead is None:
            return False
        target = lead.store.writer_position
        return all(n.up and n.core.commit_position == lead.core.commit_position == target
                   and n.store.writer_position == target for n in self.nodes.values())

    def heal(self) -> None:
        self.power_failure = 0.0
        self.net.recover()
        self.net.calm()
        for name in self.names:
            self.resume(name)
            self.restart(name)

    def describe(self) -> str:
        rows = []
        for n in self.nodes.values():
            if n.up:
                c = n.core
                rows.append(f"  {n.name}: {c.state.name} term={c.term} leader={c.leader_id} "
                            f"writer={n.store.writer_position} commit={c.commit_position} "
                            f"persisted={n.store.commit}{' PAUSED' if n.paused else ''}")
            else:
                rows.append(f"  {n.name}: DOWN writer={n.store.writer_position}")
        return "\n".join(rows)


def with_config(cluster: SimCluster, name: str, **changes) -> CoreConfig:
    return replace(cluster.core_config(name), **changes)
