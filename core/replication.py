"""Replication cores: the leader side (ship, count acks, advance the commit position) and the
replica side (subscribe, truncate a diverged tail on line, write, ack after fsync).

Both share the node's ``LogView`` and are created fresh for every term/leader by
``NodeCore``; neither knows about elections.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from esnode.core.cluster_messages import (
    Heartbeat,
    RecordsRead,
    ReplicaAck,
    ReplicaSubscribed,
    ReplicateRecords,
    SubscribeReplica,
)
from esnode.core.cluster_state import CoreConfig, LogView
from esnode.core.effects import (
    Alarm,
    Committed,
    Effect,
    PersistCommit,
    ReadRecords,
    Send,
    Truncate,
    WriteRecords,
)
from esnode.core.quorum import quorum_position, subscription_point


@dataclass(slots=True)
class Progress:
    """The leader's view of one replica."""

    subscription_id: int = -1
    base: int = -1
    """Subscription position: the replica holds our log up to here once subscribed."""
    match: int = -1
    """Highest durable position the replica acknowledged in this subscription."""
    sent: int = -1
    inflight: deque = field(default_factory=deque)  # (last_position, count, bytes) per batch
    reading: bool = False
    last_progress: float = 0.0
    next_heartbeat: float = 0.0

    @property
    def inflight_records(self) -> int:
        return sum(count for _, count, _ in self.inflight)

    @property
    def inflight_bytes(self) -> int:
        return sum(size for _, _, size in self.inflight)


class LeaderReplication:
    """Leader side for one term. ``epoch_start`` is None until our epoch record is durable;
    the commit position never advances before it reaches ``epoch_start`` (records of older
    terms are committed only as a prefix of our own epoch: Raft's figure-8 rule)."""

    def __init__(self, config: CoreConfig, log: LogView, term: int, now: float):
        self.config, self.log, self.term = config, log, term
        self.epoch_start: int | None = None
        self.peers = {peer: Progress(next_heartbeat=now) for peer in config.peers}

    @property
    def epoch_committed(self) -> bool:
        return self.epoch_start is not None and self.log.commit >= self.epoch_start

    def quorum_candidate(self) -> int:
        """The position a majority holds durably, this node included."""
        acked = [p.match if p.subscription_id >= 0 else -1 for p in self.peers.values()]
        return quorum_position([self.log.durable, *acked], self.config.cluster_size)

    def advance_commit(self) -> list[Effect]:
        candidate = self.quorum_candidate()
        if self.epoch_start is None or candidate < self.epoch_start or candidate <= self.log.commit:
            return []
        self.log.commit = candidate
        return [PersistCommit(candidate), Committed(candidate)]

    def epoch_written(self, start: int, now: float) -> list[Effect]:
        self.epoch_start = start
        return self.advance_commit() + self.ship_all(now)

    def local_written(self, now: float) -> list[Effect]:
        return self.advance_commit() + self.ship_all(now)

    # --- replica messages ----------------------------------------------------------------------
    def on_subscribe(self, m: SubscribeReplica, now: float) -> list[Effect]:
        progress = self.peers.get(m.replica_id)
        if progress is None:
            return [Alarm("unknown_replica", f"subscription from non-member {m.replica_id!r}")]
        point = subscription_point(self.log.epochs, self.log.durable, m.epochs, m.writer_position)
        if m.subscription_id != progress.subscription_id:
            self.peers[m.replica_id] = progress = Progress(
                subscription_id=m.subscription_id, base=point, match=-1, sent=point,
                last_progress=now, next_heartbeat=progress.next_heartbeat)
        reply = ReplicaSubscribed(self.term, self.config.node_id, m.subscription_id,
                                  progress.base, self.log.durable)
        return [Send(m.replica_id, reply)]

    def on_ack(self, m: ReplicaAck, now: float) -> list[Effect]:
        progress = self.peers.get(m.replica_id)
        if progress is None or m.subscription_id != progress.subscription_id:
            return []
        if m.durable_position > progress.match:
            progress.match = m.durable_position
            progress.last_progress = now
            while progress.inflight and progress.inflight[0][0] <= m.durable_position:
                progress.inflight.popleft()
        if progress.sent < progress.match:  # a batch sent before a rewind (tick) was acked
            progress.sent = progress.match
        return self.advance_commit() + self.ship(m.replica_id, now)

    def on_records_read(self, m: RecordsRead, now: float) -> list[Effect]:
        progress = self.peers.get(m.peer)
        if progress is None or m.subscription_id != progress.subscription_id:
            return []
        progress.reading = False
        if m.after_position != progress.sent or not m.records:
            return []
        last = m.records[-1][0]
        batch = ReplicateRecords(self.term, self.config.node_id, m.subscription_id,
                                 m.after_position, m.records,
                                 self.log.epochs_in(m.after_position, last), self.log.commit)
        progress.sent = last
        progress.inflight.append((last, len(m.records), sum(len(r[1]) for r in m.records)))
        if len(progress.inflight) == 1:
            progress.last_progress = now
        return [Send(m.peer, batch)] + self.ship(m.peer, now)

    # --- shipping ------------------------------------------------------------------------------
    def ship(self, peer: str, now: float) -> list[Effect]:
        """Ask storage for the next batch for ``peer`` if the window allows it."""
        p = self.peers[peer]
        cfg = self.config
        if (p.subscription_id < 0 or p.reading or p.sent >= self.log.durable
                or p.inflight_records >= cfg.max_inflight_records
                or p.inflight_bytes >= cfg.max_inflight_bytes):
            return []
        p.reading = True
        count = min(cfg.batch_records, cfg.max_inflight_records - p.inflight_records)
        return [ReadRecords(peer, p.subscription_id, p.sent, count, cfg.batch_bytes)]

    def ship_all(self, now: float) -> list[Effect]:
        return [e for peer in self.peers for e in self.ship(peer, now)]

    def ship_prepared(self, records: tuple, now: float) -> list[Effect]:
        """Ship records that are being made durable locally to every follower that is
        exactly caught up to them and has room in its window (the others get them later,
        read back from storage). Overlaps the followers' fsyncs with ours."""
        if not records:
            return []
        size = sum(len(r[1]) for r in records)
        effects: list[Effect] = []
        cfg = self.config
        for peer, p in self.peers.items():
            # ``log.written`` is still the end of the log before these records.
            if (p.subscription_id < 0 or p.reading or p.sent != self.log.written
                    or p.inflight_records + len(records) > cfg.max_inflight_records
                    or p.inflight_bytes + size > cfg.max_inflight_bytes):
                continue
            effects += self.on_records_read(
                RecordsRead(peer, p.subscription_id, p.sent, records), now)
        return effects

    def tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for peer, p in self.peers.items():
            if p.inflight and now - p.last_progress > self.config.resend_timeout:
                # ZeroMQ may have dropped a batch (or an ack): go back to what is acked.
                p.sent = max(p.match, p.base)
                p.inflight.clear()
                p.reading = False
                p.last_progress = now
                effects += self.ship(peer, now)
            if now >= p.next_heartbeat:
                p.next_heartbeat = now + self.config.heartbeat_interval
                effects.append(Send(peer, Heartbeat(self.term, self.config.node_id,
                                                     self.log.commit, self.log.durable,
                                                     p.subscription_id)))
        return effects

    @property
    def next_wakeup(self) -> float:
        times = [p.next_heartbeat for p in self.peers.values()]
        times += [p.last_progress + self.config.resend_timeout
                  for p in self.peers.values() if p.inflight]
        return min(times, default=float("inf"))


class Sub(Enum):
    SUBSCRIBING = "subscribing"
    TRUNCATING = "truncating"
    SUBSCRIBED = "subscribed"
    REFUSED = "refused"


class ReplicaReplication:
    """Replica side for one (term, leader). Acks only durable positions; learns the commit
    position from the leader and exposes it only up to its own durable log."""

    def __init__(self, config: CoreConfig, log: LogView, term: int, leader_id: str,
                 new_subscription_id: Callable[[], int]):
        self.config, self.log, self.term, self.leader_id = config, log, term, leader_id
        self.new_subscription_id = new_subscription_id
        self.subscription_id = -1
        self.status = Sub.SUBSCRIBING
        self.sent_at = float("-inf")
        self.leader_commit = -1
        self.error: str | None = None
        self.was_caught_up = False
        self.base = -1
        """Subscription point: we hold the leader's log up to here (our last record may be
        below it when no record sits exactly at it)."""

    def subscribe(self, now: float) -> list[Effect]:
        """(Re)subscribe with a fresh id (ids never repeat, even across restarts)."""
        self.subscription_id = self.new_subscription_id()
        self.status, self.sent_at = Sub.SUBSCRIBING, now
        epochs = tuple(self.log.epochs[-self.config.subscription_epochs:])
        return [Send(self.leader_id, SubscribeReplica(self.term, self.config.node_id,
                                                      self.subscription_id, self.log.written,
                                                      epochs))]

    def _ack(self) -> list[Effect]:
        return [Send(self.leader_id, ReplicaAck(self.term, self.config.node_id,
                                                self.subscription_id, max(self.log.durable, -1)))]

    def _learn_commit(self, commit: int) -> list[Effect]:
        self.leader_commit = max(self.leader_commit, commit)
        self._note_progress()
        visible = min(self.leader_commit, self.log.durable)
        if self.status is not Sub.SUBSCRIBED or visible <= self.log.commit:
            return []
        self.log.commit = visible
        return [PersistCommit(visible)]

    def _note_progress(self) -> None:
        """CatchingUp -> Follower once we hold everything the leader had committed (and we
        stay Follower for this subscription, so the state does not flap with each batch)."""
        if self.status is Sub.SUBSCRIBED and self.log.durable >= self.leader_commit:
            self.was_caught_up = True

    # --- messages ------------------------------------------------------------------------------
    def on_subscribed(self, m: ReplicaSubscribed, now: float) -> list[Effect]:
        if self.status is not Sub.SUBSCRIBING or m.subscription_id != self.subscription_id:
            return []
        point, log = m.subscription_position, self.log
        self.leader_commit = max(self.leader_commit, -1)
        if point > log.written:
            return [Alarm("subscription_position_ahead",
                          f"leader {m.leader_id} subscribed us at {point}, past our log end "
                          f"{log.written}; resubscribing")] + self.subscribe(now)
        size = log.written - point
        if point < log.commit or size > self.config.max_truncation:
            why = (f"below our commit position {log.commit}" if point < log.commit
                   else f"{size} > max_truncation {self.config.max_truncation}")
            self.status = Sub.REFUSED
            self.error = (f"TRUNCATION REFUSED: leader {m.leader_id} (term {m.term}) asks us "
                          f"to truncate after {point}, our log ends at {log.written}: {why}")
            return [Alarm("truncation_refused", self.error)]
        # Truncate even when nothing seems to diverge (a no-op for storage then): writes our
        # storage still had queued when we stepped down land before it and are cut by it.
        self.status = Sub.TRUNCATING
        self.base = point
        log.truncate(point)
        return [Truncate(point)]

    def on_truncated(self, now: float) -> list[Effect]:
        if self.status is not Sub.TRUNCATING or self.log.truncating:
            return []
        self.status = Sub.SUBSCRIBED
        return self._ack()

    def on_records(self, m: ReplicateRecords, now: float) -> list[Effect]:
        if self.status is not Sub.SUBSCRIBED or m.subscription_id != self.subscription_id:
            return []
        log = self.log
        effects: list[Effect] = []
        if m.after_position <= max(log.written, self.base) and log.written < m.last_position:
            fresh = tuple(r for r in m.records if r[0] > log.written)
            log.add_epochs(m.epochs, self.config.epoch_cache)  # epochs only in (after, last]
            log.drop_epochs_after(fresh[-1][0])
            log.written = fresh[-1][0]
            effects.append(WriteRecords(fresh))
        # else: a duplicate (already written) or a gap (a batch was lost: the leader resends)
        return effects + self._learn_commit(m.commit_position)

    def on_durable(self, now: float) -> list[Effect]:
        """The log became durable further (``log.durable`` was updated): ack it."""
        if self.status is not Sub.SUBSCRIBED:
            return []
        return self._ack() + self._learn_commit(self.leader_commit)

    def on_heartbeat(self, m: Heartbeat, now: float) -> list[Effect]:
        if self.status is Sub.SUBSCRIBED and m.subscription_id != self.subscription_id:
            return self.subscribe(now)
        if self.status is not Sub.SUBSCRIBED:
            return []
        return self._ack() + self._learn_commit(m.commit_position)

    def tick(self, now: float) -> list[Effect]:
        if self.status is Sub.SUBSCRIBING and now - self.sent_at >= self.config.subscribe_timeout:
            return self.subscribe(now)
        return []

    @property
    def next_wakeup(self) -> float:
        if self.status is Sub.SUBSCRIBING:
            return self.sent_at + self.config.subscribe_timeout
        return float("inf")
