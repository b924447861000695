"""Deterministic cluster simulator (Event Store's RandomTestRunner, TigerBeetle's VOPR).

One ``random.Random(seed)`` drives everything: network faults, disk latencies, election
timeouts, client writes, crashes. Events sit in a heap ordered by (virtual time, sequence).
The cores are driven directly (no threads, sockets or actors); the shell's job (carrying
out effects in order, feeding reports back) is done here by ``_apply``.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field, replace

from esnode.core.cluster_messages import (
    EpochWritten,
    LocalWritten,
    PeerDisconnected,
    RecordsRead,
    RecordsWritten,
    Truncated,
)
from esnode.core.cluster_state import CoreConfig
from esnode.core.effects import (
    Alarm,
    Committed,
    PersistCommit,
    PersistVote,
    ReadRecords,
    Send,
    StateChanged,
    Truncate,
    WriteEpoch,
    WriteRecords,
)
from esnode.core.node_core import NodeCore
from esnode.core.states import VNodeState

from .checkers import Checker, Violation
from .network import SimNetwork
from .simlog import SimLog, StorageViolation


@dataclass
class SimNode:
    name: str
    log: SimLog = field(default_factory=SimLog)
    core: NodeCore | None = None
    incarnation: int = 0
    paused: bool = False
    deferred: list = field(default_factory=list)
    tick_at: float = -1.0
    disk_free_at: float = 0.0
    pending: list = field(default_factory=list)  # client writes: (write_id, position)

    @property
    def up(self) -> bool:
        return self.core is not None


class SimCluster:
    disconnect_hints = True
    """A crashed node's peers get ``PeerDisconnected`` (a killed process closes its TCP
    connections at once; a paused or partitioned one does not)."""

    def __init__(self, seed: int, size: int = 3, core_class: type[NodeCore] = NodeCore,
                 loss: float = 0.0, duplicate: float = 0.0, fsync: tuple[float, float] = (0.001, 0.004),
                 **config):
        self.seed = seed
        self.rng = random.Random(seed)
        self.core_class = core_class
        self.names = tuple(f"n{i + 1}" for i in range(size))
        self.config = dict(election_timeout=1.0, heartbeat_interval=0.1, subscribe_timeout=0.3,
                           resend_timeout=0.3, batch_records=20, max_inflight_records=60,
                           max_truncation=1 << 30, gossip_interval=0.5)
        self.config.update(config)
        self.net = SimNetwork(self.rng, loss=loss, duplicate=duplicate)
        self.fsync = fsync
        self.nodes = {name: SimNode(name) for name in self.names}
        self.checker = Checker(size)
        self.now = 0.0
        self.heap: list = []
        self.seq = 0
        self.steps = 0
        self.alarms: list[tuple[str, Alarm]] = []
        self.lines: list[str] = []
        self.write_counter = 0
        self.unknown = 0
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
        node.core = self.core_class(self.core_config(name), node.log.persisted(), self.rng,
                                    self.now, f"{name}#{node.incarnation}")
        node.tick_at = -1.0
        node.disk_free_at = self.now
        self.checker.on_restart(name, node.log)
        self._apply(node, node.core.start(self.now))

    def crash(self, name: str) -> None:
        node = self.nodes[name]
        if not node.up:
            return
        node.core = None
        node.paused, node.deferred = False, []
        node.log.crash()
        self.unknown += len(node.pending)
        node.pending = []
        self.lines.append(f"{self.now:.3f} CRASH {name}")
        for other in self.names if self.disconnect_hints else ():
            peer = self.nodes[other]
            if other != name and peer.up and (name, other) not in self.net.blocked:
                self.at(self.now + self.net.min_delay, other,
                        self._deliver(other, PeerDisconnected(name)), peer.incarnation)

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
        log = node.log
        del log.positions[keep_records:]
        del log.data[keep_records:]
        log.synced = min(log.synced, keep_records)
        log.commit = min(log.commit, log.writer_position)
        self.checker.commit_seen[name] = log.commit
        self.lines.append(f"{self.now:.3f} LOSE-TAIL {name} keeps {keep_records} records")

    # --- the shell: carry out effects in order ------------------------------------------------
    def _feed(self, node: SimNode, message) -> None:
        self._apply(node, node.core.step(message, self.now))

    def _disk(self, node: SimNode, fn) -> None:
        """Complete a disk operation after the ones before it (fsync latency)."""
        done = max(self.now, node.disk_free_at) + self.rng.uniform(*self.fsync)
        node.disk_free_at = done
        self.at(done, node.name, fn, node.incarnation)

    def _apply(self, node: SimNode, effects) -> None:
        log = node.log
        for e in effects:
            if isinstance(e, Send):
                for delay in self.net.delays(node.name, e.to):
                    self.at(self.now + delay, e.to, self._deliver(e.to, e.message))
            elif isinstance(e, PersistVote):
                log.write_vote(e.vote)
            elif isinstance(e, WriteEpoch):
                epoch = log.write_epoch(e.number, e.leader_id)
                self._disk(node, lambda n=node, m=EpochWritten(epoch): self._feed(n, m))
            elif isinstance(e, ReadRecords):
                records = log.read_raw(e.after_position, e.max_count, e.max_bytes)
                msg = RecordsRead(e.peer, e.subscription_id, e.after_position, records)
                self.at(self.now, node.name, lambda n=node, m=msg: self._feed(n, m),
                        node.incarnation)
            elif isinstance(e, WriteRecords):
                self._guard(log.write_raw, e.records)
                self._disk(node, lambda n=node: self._synced(n, RecordsWritten))
            elif isinstance(e, Truncate):
                self._guard(log.truncate_after, e.position)
                self._disk(node, lambda n=node: self._feed(n, Truncated(n.log.writer_position)))
            elif isinstance(e, PersistCommit):
                self._guard(log.set_commit_position, e.position)
                leading = node.core.leader is not None
                self.checker.on_commit(node.name, e.position,
                                       node.core.term if leading else None, log,
                                       {n.name: n.log for n in self.nodes.values()})
            elif isinstance(e, Committed):
                self._acknowledge(node, e.position)
            elif isinstance(e, StateChanged):
                self.lines.append(f"{self.now:.3f} {e.line}")
                self.checker.on_state(node.name, e.new, e.term, log)
                if not e.new.is_leader_role:
                    self.unknown += len(node.pending)
                    node.pending = []
            elif isinstance(e, Alarm):
                self.alarms.append((node.name, e))
                self.lines.append(f"{self.now:.3f} ALARM {node.name} {e.code}: {e.message}")
        self._check_node(node)
        self._schedule_tick(node)

    def _guard(self, fn, arg) -> None:
        try:
            fn(arg)
        except StorageViolation as exc:
            raise Violation(f"storage refused: {exc}") from None

    def _synced(self, node: SimNode, report) -> None:
        node.log.sync()
        self._feed(node, report(node.log.writer_position))

    def _deliver(self, to: str, message):
        return lambda: self._feed(self.nodes[to], message)

    def _check_node(self, node: SimNode) -> None:
        core = node.core
        if core is None:
            return
        if core.readable_position > core.commit_position:
            raise Violation(f"{node.name} exposes {core.readable_position} beyond commit "
                            f"{core.commit_position}")
        if core.commit_position < self.checker.commit_seen.get(node.name, -1):
            raise Violation(f"{node.name}: in-memory commit moved back")

    def _schedule_tick(self, node: SimNode) -> None:
        if node.core is None or node.paused:
            return
        when = max(node.core.next_wakeup, self.now + 0.001)
        if node.tick_at < self.now or when < node.tick_at:
            node.tick_at = when
            self.at(when, node.name, lambda n=node, w=when: self._tick(n, w), node.incarnation)

    def _tick(self, node: SimNode, when: float) -> None:
        if when != node.tick_at:
            return
        node.tick_at = -1.0
        self._apply(node, node.core.tick(self.now))

    # --- clients ------------------------------------------------------------------------------------
    def leaders(self) -> list[SimNode]:
        return [n for n in self.nodes.values()
                if n.up and not n.paused and n.core.accepts_writes]

    def client_write(self) -> bytes | None:
        """Append one event at a node that accepts writes (fsync, then LocalWritten)."""
        candidates = self.leaders()
        if not candidates:
            return None
        node = self.rng.choice(candidates)
        self.write_counter += 1
        write_id = f"w:{self.write_counter}".encode()
        position = node.log.append(write_id)
        node.pending.append((write_id, position))
        self._disk(node, lambda n=node: self._synced(n, LocalWritten))
        return write_id

    def _acknowledge(self, node: SimNode, position: int) -> None:
        if node.core.state not in (VNodeState.Leader, VNodeState.PreLeader):
            raise Violation(f"{node.name} announced a commit while {node.core.state.name}")
        keep = []
        for write_id, pos in node.pending:
            if pos <= position:
                self.checker.on_ack(write_id, pos)
            else:
                keep.append((write_id, pos))
        node.pending = keep

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
        target = lead.log.writer_position
        return all(n.up and n.core.commit_position == lead.core.commit_position == target
                   and n.log.writer_position == target for n in self.nodes.values())

    def heal(self) -> None:
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
                            f"writer={n.log.writer_position} commit={c.commit_position}"
                            f"{' PAUSED' if n.paused else ''}")
            else:
                rows.append(f"  {n.name}: DOWN writer={n.log.writer_position}")
        return "\n".join(rows)


def with_config(cluster: SimCluster, name: str, **changes) -> CoreConfig:
    return replace(cluster.core_config(name), **changes)
