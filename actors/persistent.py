"""Persistent subscriptions actor: competing-consumer groups, run on the leader.

A thin shell around ``core.persistent.GroupCore`` (one per group): it feeds the cores client
requests, events read from the committed log and time, and carries out their effects.
Everything a group needs to survive a leader change lives in the replicated log:

* definitions: ``$persistentsubscriptions`` (``$GroupCreated``/``Updated``/``Deleted``);
  every node applies them from its committed log, so every node can list them;
* settlements: ``$persistentsubscription-<stream>::<group>-acks``, one ``$Acked`` event per
  ack batch, written BEFORE the consumer's ack is answered (the storage actor answers it
  once the write is committed on a majority): a confirmed ack is never redelivered; and
  ``$Retried`` events (the retry counts events reached), so counts survive a leader change;
* checkpoints: ``...-checkpoint`` (position, read cursor, settled set above it, and how far
  the acks and parked streams were), so a rebuild reads little;
* parked events: ``...-parked`` (a copy of the event, where it came from and why).

A node that becomes leader builds its cores once its commit position reaches the log it
had when elected (so it has applied every ack the old leader confirmed); until then group
consumers get ``NotReady``, and on a follower ``NotLeader`` naming the leader (the client
goes there).
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pykka
from esnode.actors.messages import (
    Committed,
    PeerGone,
    PendingWrite,
    Shutdown,
    StatusChanged,
    Tick,
    WriteBatch,
)
from esnode.actors.status import StatusBoard
from esnode.core import messages as m
from esnode.core import persistent as p
from esnode.core.clock import Clock
from esnode.core.types import (
    ALL_STREAM,
    ANY,
    AppendRequest,
    BadRequest,
    EsError,
    METADATA_TYPE,
    EventData,
    GroupExists,
    GroupNotFound,
    NotLeader,
    NotReady,
    RecordedEvent,
    StreamNotFound,
    metadata_stream_of,
)
from esnode.storage.port import EventStore
from esnode.transport.port import Transport

log = logging.getLogger("esnode.persistent")

DEFINITIONS = "$persistentsubscriptions"
CREATED, UPDATED, DELETED = "$GroupCreated", "$GroupUpdated", "$GroupDeleted"
ACKED, RETRIED, CHECKPOINTED = "$Acked", "$Retried", "$Checkpoint"
READ_PAGE = 1000
COMPACT_AFTER = 1000
"""Records of a group's acks (and checkpoint) stream a checkpoint has summarised before
they are cut off with ``$tb`` (one metadata record per this many, not per checkpoint)."""
NOBODY = (b"", 0)
"""Reply address of the actor's own writes (checkpoints, timed-out parks): nobody waits."""


@dataclass(frozen=True, slots=True)
class GroupRequests:
    """Client requests for persistent subscription groups, routed here by the node."""

    envelopes: list


@dataclass(slots=True)
class _Definition:
    stream: str
    group: str
    settings: p.GroupSettings
    cursor: int | None
    """Where the group began reading (``"end"`` resolved when it was created)."""


def _json_event(event_type: str, body: dict, event_id: str | None = None) -> EventData:
    return EventData(event_id or str(uuid.uuid4()), event_type,
                     json.dumps(body, separators=(",", ":")).encode(), b"", True)


class PersistentSubscriptionsActor(pykka.ThreadingActor):
    def __init__(self, store: EventStore, transport: Transport, clock: Clock,
                 board: StatusBoard, storage: pykka.ActorRef,
                 on_failure: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self._store, self._transport, self._clock = store, transport, clock
        self._board, self._storage, self._on_fatal = board, storage, on_failure
        self._committed = board.readable_position
        self._defs: dict[tuple[str, str], _Definition] = {}
        self._defs_version = -1
        self._pending: set[tuple[str, str]] = set()
        self._cores: dict[tuple[str, str], p.GroupCore] = {}
        self._consumers: dict[tuple[bytes, int], tuple[str, str]] = {}
        self._active = False
        self._activate_at: int | None = None
        self._stopping = False

    def on_start(self) -> None:
        self._apply_definitions()
        self._sync_role()  # it may have become leader before this actor started

    def on_receive(self, message: object) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            log.error("persistent subscriptions actor got an unknown message %r", message)
            return
        board = self._board
        if board.groups_idle:  # not told of commits until now (definitions, activation)
            board.groups_idle = False
            self._advance(board.readable_position)
        handler(self, message)
        # With no group defined nor being created, commits are read on the next message
        # (a tick at the latest): the writer stops waking us (Node._notify).
        board.groups_idle = not (self._defs or self._pending)

    # --- node events --------------------------------------------------------------------------
    def _on_committed(self, message: Committed) -> None:
        self._advance(message.position)

    def _advance(self, committed: int) -> None:
        if committed <= self._committed:
            return
        self._committed = committed
        self._apply_definitions()
        self._sync_role()
        for key in list(self._cores):
            self._pump(key)

    def _on_status(self, message: StatusChanged) -> None:
        self._sync_role()

    def _sync_role(self) -> None:
        """Run the groups while this node leads (once its commit position reached the log
        it had when it became leader); drop their consumers when it stops leading. Checked
        on every status change, commit and tick, so no notice can be missed."""
        published = self._board.readable_position
        if published > self._committed:  # ahead of our notices (or we were idle)
            self._committed = published
            self._apply_definitions()  # a leader activates with every definition applied
        if self._board.is_leader:
            if not self._active and self._activate_at is None:
                self._activate_at = self._store.writer_position
            if not self._active and self._committed >= self._activate_at:
                self._activate()
        elif self._active or self._activate_at is not None:
            self._deactivate(self._not_leader())

    def _on_tick(self, message: Tick) -> None:
        self._sync_role()
        now = self._clock.monotonic()
        for key, core in list(self._cores.items()):
            deadline = core.next_deadline()
            if deadline is not None and deadline <= now:
                self._settled(key, core.tick(now))

    def _on_peer_gone(self, message: PeerGone) -> None:
        now = self._clock.monotonic()
        for consumer in [c for c in self._consumers if c[0] == message.peer]:
            key = self._consumers.pop(consumer)
            core = self._cores.get(key)
            if core is not None:
                self._settled(key, core.disconnect(consumer, now))

    def _on_shutdown(self, message: Shutdown) -> None:
        self._stopping = True
        self._deactivate(NotReady("the node is shutting down"))

    def _on_requests(self, message: GroupRequests) -> None:
        for env in message.envelopes:
            request = env.request
            try:
                if self._stopping:
                    raise NotReady("the node is shutting down")
                self._requests[type(request)](self, env, request)
            except EsError as exc:
                self._reply(env.peer, env.corr, m.ErrorReply(exc))

    # --- group management ---------------------------------------------------------------------
    def _create(self, env: m.ClientEnvelope, request: m.CreateGroup) -> None:
        self._require_leader()
        key = (request.stream, request.group)
        if key in self._defs or key in self._pending:
            raise GroupExists(f"group {request.group!r} on {request.stream!r} already exists")
        start = request.settings.start_from
        if start == "start":
            cursor = None
        elif start == "end":
            cursor = self._committed if request.stream == ALL_STREAM \
                else self._store.stream_version(request.stream)
        else:
            cursor = start
        self._pending.add(key)
        self._write(env.peer, env.corr, DEFINITIONS, _json_event(CREATED, {
            "stream": request.stream, "group": request.group,
            "settings": request.settings.to_wire(), "cursor": cursor}))

    def _update(self, env: m.ClientEnvelope, request: m.UpdateGroup) -> None:
        self._require_leader()
        definition = self._definition(request.stream, request.group)
        settings = p.GroupSettings.from_wire(request.changes, definition.settings)
        self._write(env.peer, env.corr, DEFINITIONS, _json_event(UPDATED, {
            "stream": request.stream, "group": request.group, "settings": settings.to_wire()}))

    def _delete(self, env: m.ClientEnvelope, request: m.DeleteGroup) -> None:
        self._require_leader()
        self._definition(request.stream, request.group)
        self._write(env.peer, env.corr, DEFINITIONS, _json_event(DELETED, {
            "stream": request.stream, "group": request.group}))

    def _list(self, env: m.ClientEnvelope, request: m.ListGroups) -> None:
        groups = [self._describe(d) for d in self._defs.values()
                  if request.stream is None or d.stream == request.stream]
        self._reply(env.peer, env.corr, m.Reply({"groups": groups}))

    def _info(self, env: m.ClientEnvelope, request: m.GroupInfo) -> None:
        definition = self._definition(request.stream, request.group)
        self._reply(env.peer, env.corr, m.Reply(self._describe(definition)))

    def _describe(self, d: _Definition) -> dict:
        core = self._cores.get((d.stream, d.group))
        doc = {"stream": d.stream, "group": d.group, "settings": d.settings.to_wire(),
               "live": core is not None}
        if core is not None:
            doc.update(core.info())
        return doc

    def _replay(self, env: m.ClientEnvelope, request: m.ReplayParked) -> None:
        key = (request.stream, request.group)
        core = self._live_core(key)
        parked = p.group_stream(*key, "parked")
        try:
            page = self._store.read_stream(parked, core.parked_replayed + 1, request.max_count,
                                           up_to_position=self._committed)
        except StreamNotFound:
            page = None
        if page is not None and page.events:
            core.parked_replayed = page.events[-1].version
            effects = core.requeue([self._unpark(e) for e in page.events],
                                   self._clock.monotonic(), [e.version for e in page.events])
            # the replay is recorded (what is replaying, how far) before anything is sent
            self._checkpoint(key, p.PersistCheckpoint(core.checkpoint, core.resume))
            self._settled(key, effects)
        self._reply(env.peer, env.corr, m.Reply({
            "replayed": len(page.events) if page is not None else 0}))

    # --- consumers ----------------------------------------------------------------------------
    def _connect(self, env: m.ClientEnvelope, request: m.ConnectGroup) -> None:
        key = (request.stream, request.group)
        core = self._live_core(key)
        consumer = (env.peer, env.corr)
        effects = core.connect(consumer, request.credit, self._clock.monotonic())
        self._consumers[consumer] = key
        self._reply(env.peer, env.corr, m.Reply({
            "subscription": env.corr, "incarnation": self._board.incarnation}))
        self._carry(key, effects)
        self._pump(key)

    def _consumer(self, peer: bytes, subscription: int) -> tuple[tuple, p.GroupCore]:
        consumer = (peer, subscription)
        key = self._consumers.get(consumer)
        core = self._cores.get(key) if key is not None else None
        if core is None:
            # on a node that does not lead (one restarted at the same address before the
            # client noticed, say) the consumer's connection is gone: the group moved
            self._require_leader()
            raise BadRequest(f"subscription {subscription} is not a group consumer on this "
                             "connection (never connected, left, or the group moved)")
        return consumer, core

    def _ack(self, env: m.ClientEnvelope, request: m.GroupAck) -> None:
        consumer, core = self._consumer(env.peer, request.subscription)
        self._settled(self._consumers[consumer], core.ack(
            consumer, request.positions, (env.peer, env.corr), self._clock.monotonic()))

    def _nack(self, env: m.ClientEnvelope, request: m.GroupNack) -> None:
        consumer, core = self._consumer(env.peer, request.subscription)
        key = self._consumers[consumer]
        self._settled(key, core.nack(consumer, request.positions, request.action,
                                     request.reason, (env.peer, env.corr),
                                     self._clock.monotonic()))

    def _leave(self, env: m.ClientEnvelope, request: m.LeaveGroup) -> None:
        consumer = (env.peer, request.subscription)
        key = self._consumers.pop(consumer, None)
        if key is not None and key in self._cores:
            self._settled(key, self._cores[key].disconnect(consumer, self._clock.monotonic()))
        self._reply(env.peer, env.corr, m.Reply({}))

    # --- effects ------------------------------------------------------------------------------
    def _settled(self, key: tuple[str, str], effects: list) -> None:
        """Carry out effects that may have made room (acks, nacks, timeouts, a consumer
        gone), then read on: the buffer may have run dry while every consumer was full, and
        no new commit may come to trigger a read."""
        self._carry(key, effects)
        self._pump(key)

    def _carry(self, key: tuple[str, str], effects: list) -> None:
        pushes: dict[tuple[bytes, int], list] = {}
        replies = []
        retries: list[tuple[int, int]] = []
        for e in effects:
            cls = type(e)
            if cls is p.Deliver:
                pushes.setdefault(e.consumer, []).append((e.event, e.retry_count))
            elif cls is p.PersistSettled:
                if e.positions:
                    self._write(*e.reply_to, p.group_stream(*key, "acks"),
                                _json_event(ACKED, {"positions": list(e.positions)}))
                else:
                    replies.append((*e.reply_to, m.Reply({})))
            elif cls is p.Park:
                self._write(*(e.reply_to or NOBODY), p.group_stream(*key, "parked"),
                            self._parked(key, e.event, e.reason))
            elif cls is p.PersistCheckpoint:
                self._checkpoint(key, e)
            elif cls is p.PersistRetries:
                retries += e.counts
            elif cls is p.Refused:
                replies.append((*e.reply_to, m.ErrorReply(e.error)))
            elif cls is p.Dropped:
                self._consumers.pop(e.consumer, None)
                replies.append((*e.consumer, m.SubscriptionDropped(BadRequest(e.reason))))
        if retries:  # one record for the lot; before the pushes that carry the new counts
            self._write(*NOBODY, p.group_stream(*key, "acks"),
                        _json_event(RETRIED, {"retries": retries}))
        out = [(c[0], c[1], m.GroupEventsPushed(events)) for c, events in pushes.items()]
        if out or replies:
            self._transport.send_client(out + replies)

    def _write(self, peer: bytes, corr: int, stream: str, event: EventData) -> None:
        self._storage.tell(WriteBatch([PendingWrite(peer, corr,
                                                    AppendRequest(stream, ANY, (event,)))]))

    def _checkpoint(self, key: tuple[str, str], e: p.PersistCheckpoint) -> None:
        core = self._cores[key]
        acks, checkpoints = p.group_stream(*key, "acks"), p.group_stream(*key, "checkpoint")
        acks_version = self._store.stream_version(acks)
        previous = self._store.stream_version(checkpoints)
        self._write(*NOBODY, checkpoints, _json_event(CHECKPOINTED, {
            "position": e.position, "resume": e.resume, "settled": sorted(core.settled),
            "acks_version": acks_version,
            "parked_version": self._store.stream_version(p.group_stream(*key, "parked")),
            "parked_replayed": core.parked_replayed,
            "retries": sorted(core.retries.items()),
            "replaying": sorted(core.replaying.items())}))
        self._compact(acks, acks_version + 1)
        self._compact(checkpoints, previous)

    def _compact(self, stream: str, keep_from: int) -> None:
        """Cut off ``stream``'s records before ``keep_from`` once a checkpoint summarised
        them (and ``COMPACT_AFTER`` piled up). The ``$tb`` is written after that checkpoint,
        so in every log that holds the ``$tb`` the checkpoint is there too: a new leader
        never misses what the cut-off records said."""
        old = self._store.get_metadata(stream)
        if keep_from - (old.truncate_before or 0) >= COMPACT_AFTER:
            data = json.dumps({**old.raw, "$tb": keep_from}, separators=(",", ":")).encode()
            self._write(*NOBODY, metadata_stream_of(stream),
                        EventData(str(uuid.uuid4()), METADATA_TYPE, data, b"", True))

    @staticmethod
    def _parked(key: tuple[str, str], event: RecordedEvent, reason: str) -> EventData:
        origin = {"$stream": event.stream, "$version": event.version,
                  "$position": event.position, "$event_id": event.event_id,
                  "$created": event.created, "$reason": reason,
                  "$metadata": base64.b64encode(event.metadata).decode()}
        # the same id for the same event in the same group: a retried park is idempotent
        eid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{key[0]}::{key[1]}@{event.position}"))
        return EventData(eid, event.event_type, event.data,
                         json.dumps(origin, separators=(",", ":")).encode(), event.is_json)

    @staticmethod
    def _unpark(parked: RecordedEvent) -> RecordedEvent:
        o = json.loads(parked.metadata)
        return RecordedEvent(o["$event_id"], o["$stream"], o["$version"], parked.event_type,
                             parked.data, base64.b64decode(o["$metadata"]), parked.is_json,
                             o["$created"], o["$position"])

    def _reply(self, peer: bytes, corr: int, message: object) -> None:
        self._transport.send_client([(peer, corr, message)])

    # --- reading ------------------------------------------------------------------------------
    def _pump(self, key: tuple[str, str]) -> None:
        """Read the group's source while its core wants events (never past the commit)."""
        core = self._cores.get(key)
        now = self._clock.monotonic()
        while core is not None and core.consumers and (want := core.wants()) > 0:
            start = -1 if core.cursor is None else core.cursor
            if core.stream == ALL_STREAM:
                page = self._store.read_all(start + 1, max(want, READ_PAGE // 4),
                                            up_to_position=self._committed)
                events = [e for e in page.events if not e.stream.startswith("$")]
                effects = core.events(events, now)
                core.cursor = max(start, page.next_position - 1)
                done = page.is_end or page.next_position <= start + 1
            else:
                try:
                    page = self._store.read_stream(core.stream, start + 1, want,
                                                   up_to_position=self._committed)
                except StreamNotFound:
                    return
                effects = core.events(page.events, now)
                done = page.is_end or not page.events
            core.live = page.is_end
            self._carry(key, effects)
            if done:
                return

    def _apply_definitions(self) -> None:
        """Apply new definition events from the committed log (every node does)."""
        try:
            page = self._store.read_stream(DEFINITIONS, self._defs_version + 1, READ_PAGE,
                                           up_to_position=self._committed)
        except StreamNotFound:
            return
        for event in page.events:
            self._defs_version = event.version
            body = json.loads(event.data)
            key = (body["stream"], body["group"])
            self._pending.discard(key)
            if event.event_type == CREATED:
                settings = p.GroupSettings.from_wire(body["settings"])
                self._defs[key] = _Definition(*key, settings, body.get("cursor"))
                if self._active:
                    self._cores[key] = self._rebuild(self._defs[key])
            elif event.event_type == UPDATED and key in self._defs:
                settings = p.GroupSettings.from_wire(body["settings"])
                self._defs[key].settings = settings
                if key in self._cores:
                    self._cores[key].settings = settings
            elif event.event_type == DELETED and key in self._defs:
                del self._defs[key]
                core = self._cores.pop(key, None)
                if core is not None:
                    self._drop_consumers(key, core, GroupNotFound(
                        f"group {key[1]!r} on {key[0]!r} was deleted"))
        if not page.is_end:
            self._apply_definitions()

    def _rebuild(self, d: _Definition) -> p.GroupCore:
        """A group's core from the log: the last checkpoint, then the settlements after it."""
        key = (d.stream, d.group)
        checkpoint, resume, settled = -1, d.cursor, set()
        acks_from = parked_from = 0
        replayed, retries, replaying = -1, {}, {}
        try:
            last = self._store.read_stream(p.group_stream(*key, "checkpoint"), -1, 1, True,
                                           up_to_position=self._committed).events
        except StreamNotFound:
            last = []
        if last:
            c = json.loads(last[0].data)
            checkpoint, resume, settled = c["position"], c["resume"], set(c["settled"])
            acks_from, parked_from = c["acks_version"] + 1, c["parked_version"] + 1
            replayed = c.get("parked_replayed", -1)
            retries = dict(c.get("retries", ()))
            replaying = dict(c.get("replaying", ()))
        after = set()
        for event in self._read_all_of(p.group_stream(*key, "acks"), acks_from):
            body = json.loads(event.data)
            if event.event_type == RETRIED:
                retries.update(body["retries"])
            else:
                after.update(body["positions"])
        parked_stream = p.group_stream(*key, "parked")
        after.update(json.loads(e.metadata)["$position"]
                     for e in self._read_all_of(parked_stream, parked_from))
        core = p.GroupCore(d.stream, d.group, d.settings, checkpoint, settled | after, resume,
                           self._clock.monotonic(), retries)
        core.parked_count = max(0, self._store.stream_version(parked_stream) + 1)
        core.parked_replayed = replayed
        # a replay of parked events not settled before the leader changed: again, here
        again = []
        for version in sorted(v for pos, v in replaying.items() if pos not in after):
            parked = self._read_version(parked_stream, version)
            if parked is not None:
                again.append(self._unpark(parked))
        core.requeue(again, self._clock.monotonic(), [replaying[e.position] for e in again],
                     [retries.get(e.position, 0) for e in again])
        return core

    def _read_version(self, stream: str, version: int) -> RecordedEvent | None:
        try:
            events = self._store.read_stream(stream, version, 1,
                                             up_to_position=self._committed).events
        except StreamNotFound:
            return None
        return events[0] if events and events[0].version == version else None

    def _read_all_of(self, stream: str, start: int) -> list[RecordedEvent]:
        out: list[RecordedEvent] = []
        while True:
            try:
                page = self._store.read_stream(stream, start, READ_PAGE,
                                               up_to_position=self._committed)
            except StreamNotFound:
                return out
            out += page.events
            if page.is_end or not page.events:
                return out
            start = page.next_version

    # --- leadership ---------------------------------------------------------------------------
    def _activate(self) -> None:
        self._apply_definitions()
        self._cores = {key: self._rebuild(d) for key, d in self._defs.items()}
        self._active, self._activate_at = True, None
        log.info("persistent subscriptions: %d group(s) live on this leader", len(self._cores))

    def _deactivate(self, error: EsError) -> None:
        for key, core in self._cores.items():
            self._drop_consumers(key, core, error)
        self._cores, self._active, self._activate_at = {}, False, None
        self._pending.clear()

    def _drop_consumers(self, key: tuple[str, str], core: p.GroupCore, error: EsError) -> None:
        gone = [c for c, k in self._consumers.items() if k == key]
        for consumer in gone:
            del self._consumers[consumer]
        if gone:
            self._transport.send_client([(c[0], c[1], m.SubscriptionDropped(error))
                                         for c in gone])

    def _require_leader(self) -> None:
        if not self._board.is_leader:
            raise self._not_leader()

    def _not_leader(self) -> NotLeader:
        board = self._board
        if board.leader and board.leader_external:
            return NotLeader(board.leader_external, f"persistent subscription groups live on "
                             f"the leader, {board.leader}")
        return NotLeader(None, "persistent subscription groups live on the leader; none is "
                         "known")

    def _definition(self, stream: str, group: str) -> _Definition:
        d = self._defs.get((stream, group))
        if d is None:
            raise GroupNotFound(f"no group {group!r} on {stream!r}")
        return d

    def _live_core(self, key: tuple[str, str]) -> p.GroupCore:
        self._require_leader()
        if not self._active:
            raise NotReady("this leader is still catching up on persistent subscription "
                           "groups; retry shortly")
        self._definition(*key)
        core = self._cores.get(key)
        if core is None:
            raise NotReady(f"group {key[1]!r} on {key[0]!r} is being set up; retry shortly")
        return core

    _handlers = {
        Committed: _on_committed,
        StatusChanged: _on_status,
        Tick: _on_tick,
        PeerGone: _on_peer_gone,
        Shutdown: _on_shutdown,
        GroupRequests: _on_requests,
    }
    """The messages this actor handles, one entry each."""

    _requests = {
        m.CreateGroup: _create,
        m.UpdateGroup: _update,
        m.DeleteGroup: _delete,
        m.ListGroups: _list,
        m.GroupInfo: _info,
        m.ConnectGroup: _connect,
        m.GroupAck: _ack,
        m.GroupNack: _nack,
        m.LeaveGroup: _leave,
        m.ReplayParked: _replay,
    }

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        log.critical("persistent subscriptions actor crashed: %s: %s",
                     exception_type.__name__, exception_value)
        if self._on_fatal is not None:
            self._on_fatal(f"persistent subscriptions actor crashed: {exception_value}")
