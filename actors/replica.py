"""Replica: the node's single writer and the shell around its cluster core, in one synchronous
class with no thread of its own.

It carries out the cluster core's effects (``esnode.core.effects``) against the ``EventStore``
and ``Transport`` ports and a clock: group commit and write merging, shipping records to
followers before its own fsync, lazy commit-position persistence, the ledger of writes
waiting for their commit, replies to local and forwarded writes, and publication of the
readable position and of state changes. The storage actor (``actors/storage.py``) feeds it
its inbox in production; the simulator (``tests/sim``) feeds it for every simulated node, so
the seeded swarm runs exactly the code that production runs.

Group commit uses the caller's FIFO inbox (the ``Mailbox``): a write batch that finds more
messages queued posts a ``Flush`` note behind them, so all of them go into one transaction and
one fsync; a batch that finds the inbox empty is committed at once (no extra hop). A
successful write is answered only when the core reports it ``Committed`` (on a majority's
disks); errors are answered at once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from esnode.actors.messages import (
    AdminCommand,
    ClusterInbound,
    Committed,
    Flush,
    PendingWrite,
    Shutdown,
    StatusChanged,
    Tick,
    WriteBatch,
)
from esnode.actors.replies import reply_for
from esnode.actors.status import StatusBoard
from esnode.core import effects as fx
from esnode.core.clock import Clock
from esnode.core.cluster_messages import (
    EpochWritten,
    LocalPrepared,
    LocalWritten,
    PeerDisconnected,
    RecordsRead,
    RecordsWritten,
    Truncated,
)
from esnode.core.cluster_state import CoreConfig, PersistedState
from esnode.core.forwarding import ForwardAppend, ForwardDelete, ForwardReply, claimed_sender
from esnode.core.messages import ErrorReply, Reply
from esnode.core.node_core import NodeCore
from esnode.core.states import VNodeState
from esnode.core.types import (
    AppendRequest,
    DeleteRequest,
    EsError,
    NoQuorum,
    NotLeader,
    NotReady,
    OutcomeUnknown,
    StorageFull,
)
from esnode.storage.port import EventStore
from esnode.transport.codec import error_body
from esnode.transport.port import Transport

log = logging.getLogger("esnode.replica")

COMMIT_PERSIST_INTERVAL_S = 0.2
"""How long a changed commit position may stay unpersisted (the lazy contract in
``esnode.core.effects``): at most one extra fsync per interval, never one per commit."""

LEADER_ROLES = (VNodeState.Leader, VNodeState.PreLeader)


class Mailbox(Protocol):
    """The caller's inbox, as group commit needs it."""

    def empty(self) -> bool:
        """Whether nothing else is queued for this replica."""

    def post_flush(self) -> None:
        """Queue a ``Flush`` behind everything queued so far."""


class WriterStopped(RuntimeError):
    """A local write failed after its records were shipped: the node must stop."""


@dataclass(order=True, slots=True)
class _Awaiting:
    """A successful write waiting for its position to be committed."""

    position: int
    seq: int
    deadline: float
    write: PendingWrite
    reply: Reply


class Replica:
    def __init__(self, store: EventStore, transport: Transport, clock: Clock,
                 config: CoreConfig, *, mailbox: Mailbox, board: StatusBoard,
                 notify: Callable[[object], None],
                 externals: Mapping[str, tuple[str, int]] | None = None,
                 write_timeout: float = 5.0, core_class: type[NodeCore] = NodeCore,
                 rng: random.Random | None = None, instance_id: str | None = None) -> None:
        self._store = store
        self._transport = transport
        self._clock = clock
        self._mailbox = mailbox
        self._board = board
        self._notify = notify
        self._name = config.node_id
        self._peers = frozenset(config.peers)
        self._externals = dict(externals or {})
        self._write_timeout = write_timeout
        self._pending: list[PendingWrite] = []
        self._flush_posted = False
        self._shipped_early = False
        self._stopping = False
        self._awaiting: list[_Awaiting] = []
        self._seq = itertools.count()
        self._commit_persisted = store.commit_position
        self._commit_persist_due = 0.0
        self._readable = store.commit_position
        persisted = PersistedState(store.last_vote(), tuple(store.epochs()[-config.epoch_cache:]),
                                   store.writer_position, store.commit_position)
        self.core = core_class(config, persisted, rng or random.Random(), clock.monotonic(),
                               instance_id or uuid.uuid4().hex)

    def start(self) -> None:
        self._run(self.core.start(self._clock.monotonic()))

    # --- the inbox vocabulary (the storage actor and the simulator dispatch through it) -------
    def handle(self, message: object) -> None:
        self.handlers[type(message)](self, message)

    def shutdown(self) -> None:
        """Commit what is queued, leave the cluster, persist the commit position. Writes that
        reach the inbox after this (the transport hands over what it read before it paused)
        are refused as the node shutting down, not as a cluster without a leader."""
        self.flush()
        self._stopping = True
        self._run(self.core.shutdown(self._clock.monotonic()))
        self._persist_commit(force=True)

    # --- client writes -----------------------------------------------------------------------
    def append(self, writes: list[PendingWrite]) -> None:
        self._pending.extend(writes)
        if self._mailbox.empty():
            self.flush()  # nothing else queued: commit now, skip a thread hop
        elif not self._flush_posted:
            self._flush_posted = True
            self._mailbox.post_flush()

    def _refusal(self) -> EsError:
        if self._stopping:
            return NotReady("the node is shutting down")
        core = self.core
        if core.state is VNodeState.PreLeader:
            return NotReady("this node is becoming the leader; retry shortly")
        leader = core.leader_id
        if leader is not None and leader != self._name:
            return NotLeader(self._external_of(leader), f"the leader is {leader}")
        return NoQuorum("no leader: an election is in progress or a majority of the "
                        "cluster cannot be reached; the write was not made")

    def _external_of(self, name: str) -> tuple[str, int] | None:
        """A member's external endpoint: from the topology, else as it gossiped it."""
        known = self._externals.get(name)
        if known is None:
            for m in self._board.members:
                if m.name == name and m.external_port:
                    return (m.external_host, m.external_port)
        return known

    def admin(self, command: AdminCommand) -> None:
        """An operator's request for the cluster core (docs/operations.md)."""
        now = self._clock.monotonic()
        if command.action == "resign":
            log.info("resigning leadership on an operator's request")
            self._run(self.core.resign(now))
        elif command.action == "set_priority":
            log.info("election priority set to %d", command.value)
            self.core.set_priority(command.value, now)

    def flush(self) -> None:
        """One transaction and one fsync for every write queued since the last flush."""
        self._flush_posted = False
        pending, self._pending = self._pending, []
        if not pending:
            return
        now = self._clock.monotonic()
        if not self.core.accepts_writes:
            refusal = ErrorReply(self._refusal())
            self._answer([(p, refusal) for p in pending])
            return
        self._shipped_early = False
        try:
            outcomes = self._store.write([p.request for p in pending], self._clock.now_us(),
                                         before_commit=self._ship_early)
        except StorageFull as exc:
            if self._shipped_early:
                # Followers may now hold records this node failed to keep: it must not go
                # on leading with a log that differs from what it shipped.
                raise WriterStopped(f"local write failed after its records were shipped: "
                                    f"{exc}") from exc
            log.error("write of %d requests failed: %s", len(pending), exc)
            outcomes = [exc] * len(pending)
        answers = []
        deadline = now + self._write_timeout
        for p, outcome in zip(pending, outcomes):
            reply = reply_for(outcome)
            if isinstance(outcome, EsError):
                answers.append((p, reply))
            else:
                heapq.heappush(self._awaiting, _Awaiting(
                    outcome.position, next(self._seq), deadline, p, reply))
        self._answer(answers)
        self._run(self.core.step(LocalWritten(self._store.writer_position),
                                 self._clock.monotonic()))
        self._release(self.core.commit_position)  # e.g. idempotent retries of old writes

    def _ship_early(self, records: list[tuple[int, bytes]]) -> None:
        """Send records to caught-up followers before our own fsync, so that the fsyncs of
        the majority overlap instead of adding up (only sends can come out of this)."""
        effects = self.core.step(LocalPrepared(tuple(records)), self._clock.monotonic())
        sends = [(e.to, e.message) for e in effects if type(e) is fx.Send]
        if sends:
            self._shipped_early = True
            self._transport.send_node(sends)

    def _release(self, commit: int) -> None:
        awaiting, done = self._awaiting, []
        while awaiting and awaiting[0].position <= commit:
            item = heapq.heappop(awaiting)
            done.append((item.write, item.reply))
        if done:
            self._publish_readable()  # readers see it before the writer hears of it
            self._answer(done)

    def _fail_awaiting(self, error: EsError) -> None:
        if self._awaiting:
            log.warning("failing %d uncommitted writes: %s", len(self._awaiting), error)
            items, self._awaiting = self._awaiting, []
            self._answer([(i.write, ErrorReply(error)) for i in items])

    def _answer(self, answers: list[tuple[PendingWrite, Reply | ErrorReply]]) -> None:
        local, forwarded = [], []
        for write, reply in answers:
            if write.origin:
                if type(reply) is Reply:
                    kind, body = "ok", reply.body
                else:
                    kind, body = "error", error_body(reply.error)
                forwarded.append((write.origin, ForwardReply(self._name, write.corr, kind, body)))
            else:
                local.append((write.peer, write.corr, reply))
        if local:
            self._transport.send_client(local)
        if forwarded:
            self._transport.send_node(forwarded)

    # --- cluster -----------------------------------------------------------------------------
    def receive(self, messages: list[tuple[str, object]]) -> None:
        """A burst of ``(sender, message)`` from other nodes, in arrival order."""
        now = self._clock.monotonic()
        forwarded: list[PendingWrite] = []
        effects: list = []
        for sender, message in messages:
            if type(message) is PeerDisconnected:  # the transport's own hint, not a message
                effects += self.core.step(message, now)
                continue
            if claimed_sender(message) != sender or sender not in self._peers:
                log.warning("dropped %s from %r claiming to be %r", type(message).__name__,
                            sender, claimed_sender(message))
                continue
            cls = type(message)
            if cls is ForwardAppend:
                forwarded.append(PendingWrite(b"", message.forward_id, AppendRequest(
                    message.stream, message.expected_version, message.events), sender))
            elif cls is ForwardDelete:
                forwarded.append(PendingWrite(b"", message.forward_id, DeleteRequest(
                    message.stream, message.expected_version, message.tombstone), sender))
            else:
                effects += self.core.step(message, now)
        # One run for the whole burst: replicated records that arrived together are written
        # in one transaction and one fsync (see _run).
        self._run(effects)
        if forwarded:
            self.append(forwarded)

    def tick(self) -> None:
        now = self._clock.monotonic()
        if now >= self.core.next_wakeup:
            self._run(self.core.tick(now))
        if self._awaiting:
            self._expire(now)
        if now >= self._commit_persist_due:
            self._commit_persist_due = now + COMMIT_PERSIST_INTERVAL_S
            self._persist_commit()
        self._board.members = self.core.client_view(now)
        self._board.priorities = {name: m.priority  # as gossiped: runtime changes included
                                  for name, m in self.core.gossip.members.items()}

    def _expire(self, now: float) -> None:
        expired = [i for i in self._awaiting if i.deadline <= now]
        if not expired:
            return
        self._awaiting = [i for i in self._awaiting if i.deadline > now]
        heapq.heapify(self._awaiting)
        error = OutcomeUnknown(f"the write was not committed within "
                               f"{self._write_timeout:g}s; it may or may not be "
                               "committed later: retry with the same event ids")
        self._answer([(i.write, ErrorReply(error)) for i in expired])

    @property
    def next_wakeup(self) -> float:
        """When ``tick`` has something to do (production ticks every 20 ms instead)."""
        times = [self.core.next_wakeup]
        if self._awaiting:
            times.append(min(i.deadline for i in self._awaiting))
        if self._commit_to_persist() > self._commit_persisted:
            times.append(self._commit_persist_due)
        return min(times)

    def _commit_to_persist(self) -> int:
        return min(self.core.commit_position, self._store.writer_position)

    def _persist_commit(self, force: bool = False) -> None:
        commit = self._commit_to_persist()
        if commit > self._commit_persisted or (force and commit > self._store.commit_position):
            self._store.set_commit_position(commit)
            self._commit_persisted = commit

    # --- the effect loop -----------------------------------------------------------------------
    def _run(self, effects: list) -> None:
        """Carry out effects in order; persisting ones synchronously (durable before the next
        effect). Reports are fed back after the list, as the effect contract says."""
        store, core = self._store, self.core
        while effects:
            sends: list[tuple[str, object]] = []
            reports: list[object] = []
            merged: set[int] = set()
            for index, e in enumerate(effects):
                if index in merged:
                    continue
                cls = type(e)
                if cls is fx.Send:
                    sends.append((e.to, e.message))
                elif cls is fx.ReadRecords:
                    records = store.read_raw(e.after_position, e.max_count, e.max_bytes)
                    reports.append(RecordsRead(e.peer, e.subscription_id, e.after_position,
                                               tuple(records)))
                elif cls is fx.WriteRecords:
                    records = self._merge_writes(effects, index, merged)
                    # The commit position rides along in the same transaction (lazy contract).
                    commit = min(core.commit_position, records[-1][0]) if records else None
                    store.write_raw(records, commit_position=commit)
                    if commit is not None:
                        self._commit_persisted = max(self._commit_persisted, commit)
                    reports.append(RecordsWritten(store.writer_position))
                elif cls is fx.Committed:
                    self._release(e.position)
                elif cls is fx.PersistCommit:
                    pass  # lazy: ridden along with replicated writes, or on tick (_persist_commit)
                elif cls is fx.PersistVote:
                    store.write_vote(e.vote)
                elif cls is fx.WriteEpoch:
                    epoch = store.write_epoch(e.number, e.leader_id, self._clock.now_us())
                    reports.append(EpochWritten(epoch))
                elif cls is fx.Truncate:
                    if e.position < store.writer_position:
                        log.warning("truncating the uncommitted log tail after position %d "
                                    "(writer at %d)", e.position, store.writer_position)
                    store.truncate_after(e.position)
                    reports.append(Truncated(store.writer_position))
                elif cls is fx.StateChanged:
                    self._state_changed(e)
                elif cls is fx.Alarm:
                    log.error("ALARM %s: %s", e.code, e.message)
            if sends:
                self._transport.send_node(sends)
            effects = []
            now = self._clock.monotonic()
            for report in reports:
                effects += core.step(report, now)
        self._publish_readable()

    @staticmethod
    def _merge_writes(effects: list, index: int, merged: set[int]) -> list:
        """The records of ``effects[index]`` plus those of every later ``WriteRecords`` that
        only ``Send``s separate from it: writing them earlier, in one fsync, still has them
        durable before every effect that follows each of them."""
        records = list(effects[index].records)
        for later in range(index + 1, len(effects)):
            cls = type(effects[later])
            if cls is fx.WriteRecords:
                records += effects[later].records
                merged.add(later)
            elif cls is not fx.Send:
                break
        return records

    # --- publication ---------------------------------------------------------------------------
    def _publish_readable(self) -> None:
        readable = self.core.readable_position
        if readable > self._readable:
            self._readable = readable
            self._board.readable_position = readable
            self._notify(Committed(readable))

    def _state_changed(self, e: fx.StateChanged) -> None:
        log.info("state %s", e.line)
        board = self._board
        board.state, board.term, board.leader = e.new, e.term, e.leader_id
        board.leader_external = self._external_of(e.leader_id) if e.leader_id else None
        if e.new not in LEADER_ROLES:
            self._fail_awaiting(OutcomeUnknown(
                f"this node stopped being the leader ({e.new.name}); the write may or may "
                "not be committed by the next leader: retry with the same event ids"))
        self._notify(StatusChanged(e.new, e.term, e.leader_id))

    handlers: dict[type, Callable[[Replica, object], None]] = {
        WriteBatch: lambda self, m: self.append(m.writes),
        Flush: lambda self, m: self.flush(),
        ClusterInbound: lambda self, m: self.receive(m.messages),
        Tick: lambda self, m: self.tick(),
        Shutdown: lambda self, m: self.shutdown(),
        AdminCommand: lambda self, m: self.admin(m),
    }
    """Every message the replica's inbox carries, and what it does with it."""
