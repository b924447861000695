"""Storage actor: the node's single writer, and the shell around its cluster core.

Everything that writes the log happens on this one thread: group-committed client writes,
replicated records, truncations, epochs, votes. The cluster core (``NodeCore``: election,
replication, gossip) lives here too, which is what makes the core's effect contract ("persist,
then send, then reply") a plain sequence: a persisting effect is carried out synchronously
before the next effect, with no thread hop and no actor waiting on another's future. (The
architecture guide suggests one actor per protocol; they share the node's log view, so
splitting them would need shared mutable state or extra hops on the append path.)

Group commit uses the actor's FIFO inbox: a write batch that finds more messages queued
schedules a ``Flush`` note to itself, which lands behind every batch already queued, so all of
them go into one LMDB transaction and one fsync; a batch that finds the inbox empty is
committed at once. A successful write is answered only when the core reports it
``Committed`` (on a majority's disks); errors are answered at once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pykka
from esnode.actors.messages import (
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
from esnode.core.config import Topology
from esnode.core.forwarding import (
    ForwardAppend,
    ForwardDelete,
    ForwardReply,
    claimed_sender,
)
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

log = logging.getLogger("esnode.storage")

_FLUSH = Flush()
COMMIT_PERSIST_INTERVAL_S = 0.2
"""How often a changed commit position is made durable when no replicated write carries it."""

LEADER_ROLES = (VNodeState.Leader, VNodeState.PreLeader)


@dataclass(order=True, slots=True)
class _Awaiting:
    """A successful write waiting for its position to be committed."""

    position: int
    seq: int
    deadline: float
    write: PendingWrite
    reply: Reply


class StorageActor(pykka.ThreadingActor):
    def __init__(self, store: EventStore, transport: Transport, clock: Clock,
                 board: StatusBoard, topology: Topology, node_name: str,
                 notify: Callable[[object], None],
                 on_failure: Callable[[str], None] | None = None,
                 core_class: type[NodeCore] = NodeCore, seed: int | None = None) -> None:
        super().__init__()
        self._store = store
        self._transport = transport
        self._clock = clock
        self._board = board
        self._topology = topology
        self._name = node_name
        self._notify = notify
        self._on_fatal = on_failure
        self._core_class = core_class
        self._rng = random.Random(seed)
        self._pending: list[PendingWrite] = []
        self._shipped_early = False
        self._flush_scheduled = False
        self._awaiting: list[_Awaiting] = []
        self._seq = itertools.count()
        self._write_timeout = topology.timers.write_timeout_ms / 1000
        self._peers = {n.name for n in topology.nodes if n.name != node_name}
        self._externals = {n.name: n.external_advertise for n in topology.nodes}
        self._commit_persisted = store.commit_position
        self._commit_persist_due = 0.0
        self._readable = store.commit_position
        self._state = VNodeState.Initializing

    # --- lifecycle -------------------------------------------------------------------------
    def on_start(self) -> None:
        store, now = self._store, self._clock.monotonic()
        config = CoreConfig.from_topology(self._topology, self._name)
        persisted = PersistedState(store.last_vote(), tuple(store.epochs()[-config.epoch_cache:]),
                                   store.writer_position, store.commit_position)
        self.core = self._core_class(config, persisted, self._rng, now, uuid.uuid4().hex)
        self._run(self.core.start(now))

    def on_receive(self, message: object) -> None:
        cls = type(message)
        if cls is WriteBatch:
            self._queue(message.writes)
        elif cls is Flush:
            self._flush()
        elif cls is ClusterInbound:
            self._cluster(message.messages)
        elif cls is Tick:
            self._tick()
        elif cls is Shutdown:
            self._flush()
            self._run(self.core.shutdown(self._clock.monotonic()))
            self._persist_commit(force=True)
        else:
            log.error("storage actor got an unknown message %r", message)

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        log.critical("storage actor crashed: %s: %s", exception_type.__name__, exception_value)
        if self._on_fatal is not None:
            self._on_fatal(f"storage actor crashed: {exception_value}")

    # --- client writes -----------------------------------------------------------------------
    def _queue(self, writes: list[PendingWrite]) -> None:
        self._pending.extend(writes)
        if self.actor_inbox.empty():
            self._flush()  # nothing else queued: commit now, skip a thread hop
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.actor_ref.tell(_FLUSH)

    def _refusal(self) -> EsError:
        core = self.core
        if core.state is VNodeState.PreLeader:
            return NotReady("this node is becoming the leader; retry shortly")
        leader = core.leader_id
        if leader is not None and leader != self._name:
            return NotLeader(self._externals.get(leader), f"the leader is {leader}")
        return NoQuorum("no leader: an election is in progress or a majority of the "
                        "cluster cannot be reached; the write was not made")

    def _flush(self) -> None:
        self._flush_scheduled = False
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
                raise RuntimeError(f"local write failed after its records were shipped: "
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
        self._run(self.core.step(LocalWritten(self._store.writer_position), now))
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
    def _cluster(self, messages: list[tuple[str, object]]) -> None:
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
            self._queue(forwarded)

    def _tick(self) -> None:
        now = self._clock.monotonic()
        if now >= self.core.next_wakeup:
            self._run(self.core.tick(now))
        if self._awaiting:
            expired = [i for i in self._awaiting if i.deadline <= now]
            if expired:
                self._awaiting = [i for i in self._awaiting if i.deadline > now]
                heapq.heapify(self._awaiting)
                error = OutcomeUnknown(f"the write was not committed within "
                                       f"{self._write_timeout:g}s; it may or may not be "
                                       "committed later: retry with the same event ids")
                self._answer([(i.write, ErrorReply(error)) for i in expired])
        if now >= self._commit_persist_due:
            self._commit_persist_due = now + COMMIT_PERSIST_INTERVAL_S
            self._persist_commit()
        self._board.members = self.core.client_view(now)

    def _persist_commit(self, force: bool = False) -> None:
        commit = min(self.core.commit_position, self._store.writer_position)
        if commit > self._commit_persisted or (force and commit > self._store.commit_position):
            self._store.set_commit_position(commit)
            self._commit_persisted = commit

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
                    commit = min(core.commit_position, records[-1][0]) if records else None
                    store.write_raw(records, commit_position=commit)
                    if commit is not None:
                        self._commit_persisted = max(self._commit_persisted, commit)
                    reports.append(RecordsWritten(store.writer_position))
                elif cls is fx.Committed:
                    self._release(e.position)
                elif cls is fx.PersistCommit:
                    pass  # made durable lazily (_persist_commit): safety never depends on it
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
        board.leader_external = self._externals.get(e.leader_id) if e.leader_id else None
        if e.new not in LEADER_ROLES:
            self._fail_awaiting(OutcomeUnknown(
                f"this node stopped being the leader ({e.new.name}); the write may or may "
                "not be committed by the next leader: retry with the same event ids"))
        self._notify(StatusChanged(e.new, e.term, e.leader_id))
