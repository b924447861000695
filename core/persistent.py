"""Persistent subscription groups (competing consumers), as a pure core: no threads, no
clock, no I/O. ``GroupCore`` takes messages and the current time and returns effects; the
actor on the leader feeds it and carries the effects out (docs/subscriptions.md).

What one group does:

* it reads its source (a stream or ``$all``) from a cursor into a buffer and dispatches
  each event to one connected consumer with credit, by strategy: ``RoundRobin``,
  ``DispatchToSingle`` (the first consumer with credit, in connection order), or ``Pinned``
  (by a stable hash of the event's stream, so a stream's events go to one consumer);
* an event in flight has a deadline (``message_timeout``); past it, or when its consumer
  nacks it with ``retry`` or goes away, it is dispatched again with its retry count + 1;
  over ``max_retry_count`` it is parked;
* an ack or a ``skip`` settles the event: the core returns ``PersistSettled`` and the actor
  makes it durable in the replicated log BEFORE the consumer is told the ack succeeded. A
  settled event is never dispatched again — the rebuilt core of a new leader starts from the
  durable checkpoint and skips every durably settled event after it;
* ``park`` (or too many retries) settles it too, by writing it to the parked stream;
* the checkpoint (every event at or before it settled) is persisted after
  ``min_checkpoint_count`` settlements (or ``max_checkpoint_count``, or ``checkpoint_after``
  seconds), so the settled set stays small.

Events are identified by their log ``position`` (stable on every node once committed).
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from esnode.core.types import ALL_STREAM, BadRequest, RecordedEvent

STRATEGIES = ("RoundRobin", "DispatchToSingle", "Pinned")
NACK_ACTIONS = ("park", "retry", "skip", "stop")
GROUP_STREAM_PREFIX = "$persistentsubscription-"


def group_stream(stream: str, group: str, suffix: str = "") -> str:
    """``$persistentsubscription-<stream>::<group>[-suffix]``: where a group keeps its
    settled events (``acks``), checkpoints (``checkpoint``) and parked events (``parked``)."""
    return f"{GROUP_STREAM_PREFIX}{stream}::{group}" + (f"-{suffix}" if suffix else "")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise BadRequest(message)


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """A group's settings, with Event Store's names and meanings (seconds for durations)."""

    start_from: int | str = "end"
    """``"start"``, ``"end"`` or a version (stream) / position (``$all``), exclusive."""
    message_timeout: float = 30.0
    max_retry_count: int = 10
    live_buffer_size: int = 500
    read_batch_size: int = 20
    history_buffer_size: int = 500
    checkpoint_after: float = 2.0
    min_checkpoint_count: int = 10
    max_checkpoint_count: int = 1000
    max_subscriber_count: int = 0
    """0: unlimited."""
    consumer_strategy: str = "RoundRobin"

    def __post_init__(self) -> None:
        s = self
        _check(s.start_from in ("start", "end") or (type(s.start_from) is int
                                                    and s.start_from >= 0),
               "start_from must be 'start', 'end' or an integer >= 0")
        for name in ("message_timeout", "checkpoint_after"):
            value = getattr(s, name)
            _check(type(value) in (int, float) and 0 < value <= 86_400,
                   f"{name} must be a number of seconds in (0, 86400]")
        for name, low, high in (("max_retry_count", 0, 1_000_000),
                                ("live_buffer_size", 1, 100_000),
                                ("read_batch_size", 1, 10_000),
                                ("history_buffer_size", 1, 100_000),
                                ("min_checkpoint_count", 1, 1_000_000),
                                ("max_checkpoint_count", 1, 1_000_000),
                                ("max_subscriber_count", 0, 100_000)):
            value = getattr(s, name)
            _check(type(value) is int and low <= value <= high,
                   f"{name} must be an integer between {low} and {high}")
        _check(s.min_checkpoint_count <= s.max_checkpoint_count,
               "min_checkpoint_count must not exceed max_checkpoint_count")
        _check(s.consumer_strategy in STRATEGIES,
               f"consumer_strategy must be one of {', '.join(STRATEGIES)}")

    def to_wire(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_wire(cls, body: Any, base: GroupSettings | None = None) -> GroupSettings:
        """Settings from a map; missing fields keep ``base``'s (or the defaults)."""
        _check(type(body) is dict, "settings must be a map")
        known = {f.name for f in fields(cls)}
        unknown = set(body) - known
        _check(not unknown, f"unknown setting(s): {', '.join(sorted(map(str, unknown)))}")
        merged = (base or cls()).to_wire() | body
        return cls(**merged)


# --- effects -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Deliver:
    """Send ``event`` to ``consumer``; ``retry_count`` is how often it was dispatched before."""

    consumer: Any
    event: RecordedEvent
    retry_count: int


@dataclass(frozen=True, slots=True)
class PersistSettled:
    """Make these settlements durable (acks and skips), then answer ``reply_to`` (the
    consumer's ack request): only then is the ack confirmed."""

    positions: tuple[int, ...]
    reply_to: Any


@dataclass(frozen=True, slots=True)
class Park:
    """Write ``event`` to the parked stream (that settles it), with ``reason``; answer
    ``reply_to`` (a nack request) once durable, if given."""

    event: RecordedEvent
    reason: str
    reply_to: Any = None


@dataclass(frozen=True, slots=True)
class PersistCheckpoint:
    """Every event at or before log ``position`` is settled: persist it as the checkpoint,
    with ``resume``, where a rebuilt group reads its source from again (the cursor)."""

    position: int
    resume: int | None


@dataclass(frozen=True, slots=True)
class PersistRetries:
    """Record these ``(position, retry count)`` pairs (events put back in line), so that a
    new leader delivers them with the counts they reached; nobody waits for it."""

    counts: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Refused:
    """A consumer's request was wrong (unknown or foreign event ids, ...): answer
    ``reply_to`` with ``error``; nothing else changed."""

    reply_to: Any
    error: Exception


@dataclass(frozen=True, slots=True)
class Dropped:
    """The group let go of ``consumer`` (it asked to stop, or the group was deleted)."""

    consumer: Any
    reason: str


Effect = (Deliver | PersistSettled | Park | PersistCheckpoint | PersistRetries | Refused
          | Dropped)


@dataclass(slots=True)
class _Consumer:
    id: Any
    window: int
    """Most events in flight to it at once: an ack, nack or timeout frees a place."""
    order: int
    inflight: set[int] = field(default_factory=set)

    @property
    def free(self) -> int:
        return self.window - len(self.inflight)


@dataclass(slots=True)
class _InFlight:
    event: RecordedEvent
    consumer: Any
    deadline: float
    retry_count: int


class GroupCore:
    """One group's state machine on the leader (see the module docstring).

    ``cursor`` is where reading continues (exclusive: the last version/position read);
    ``settled`` the durably settled positions after ``checkpoint``. The actor reads from the
    source while ``wants()`` > 0 and feeds the events with ``events``."""

    def __init__(self, stream: str, group: str, settings: GroupSettings,
                 checkpoint: int = -1, settled: Iterable[int] = (), cursor: int | None = None,
                 now: float = 0.0, retries: dict[int, int] | None = None) -> None:
        self.stream, self.group, self.settings = stream, group, settings
        self.checkpoint = checkpoint
        """Every event at or before this log position is settled (durably)."""
        self.cursor = cursor
        """The last version ($all: position) read from the source; None: not started."""
        self.settled: set[int] = {p for p in settled if p > checkpoint}
        self.retries: dict[int, int] = {p: n for p, n in (retries or {}).items()
                                        if p > checkpoint and p not in self.settled}
        """Retry counts of unsettled events retried at least once (persisted with every
        retry and checkpoint): a rebuilt core delivers them with these counts."""
        self.replaying: dict[int, Any] = {}
        """Parked events put back in line and not settled yet, by position, with the tag the
        actor gave them (their parked version): persisted with checkpoints, so a new leader
        puts them back in line again."""
        self.consumers: dict[Any, _Consumer] = {}
        self.inflight: dict[int, _InFlight] = {}
        self.ready: deque[tuple[RecordedEvent, int]] = deque()
        """Events waiting for a consumer, with their retry counts, in dispatch order."""
        self.unsettled: dict[int, RecordedEvent] = {}
        """Every event read and not settled yet (ready, in flight), by position."""
        self.parked_count = 0
        self.parked_replayed = -1
        """The parked stream's last version put back in line by ``requeue``."""
        self.resume = cursor
        """The cursor saved with ``checkpoint`` (where a rebuild reads from again)."""
        self.live = False
        """The last read reached the end of the source (the actor says so): the buffer is
        bounded by ``live_buffer_size``, before that (history) by ``history_buffer_size``."""
        self._rr = 0
        self._orders = 0
        self._since_checkpoint = 0
        self._checkpoint_due = now + settings.checkpoint_after

    # --- consumers ----------------------------------------------------------------------------
    def connect(self, consumer: Any, window: int, now: float) -> list[Effect]:
        """A consumer that takes at most ``window`` events in flight at once (its credit:
        settling or timing out one gives it room for the next). Raises ``BadRequest`` when
        the group is full."""
        limit = self.settings.max_subscriber_count
        if limit and len(self.consumers) >= limit and consumer not in self.consumers:
            raise BadRequest(f"group {self.group!r} on {self.stream!r} has its maximum of "
                             f"{limit} consumer(s)")
        self._orders += 1
        self.consumers[consumer] = _Consumer(consumer, window, self._orders)
        return self._dispatch(now)

    def disconnect(self, consumer: Any, now: float) -> list[Effect]:
        """The consumer went away: its events in flight are retried (count + 1)."""
        c = self.consumers.pop(consumer, None)
        if c is None:
            return []
        effects: list[Effect] = []
        for position in sorted(c.inflight):
            effects += self._retry(position, "its consumer went away")
        return effects + self._dispatch(now)

    # --- reading the source -------------------------------------------------------------------
    def wants(self) -> int:
        """How many events the actor should read from the source now (0: enough buffered)."""
        buffered = len(self.ready)
        s = self.settings
        room = (s.live_buffer_size if self.live else s.history_buffer_size) - buffered
        if room <= 0 or (buffered and not self._any_credit()):
            return 0
        return min(room, self.settings.read_batch_size)

    def events(self, events: Iterable[RecordedEvent], now: float) -> list[Effect]:
        """Events read from the source after ``cursor``, in order. Those already settled
        (durably, before a leader change) are skipped."""
        for event in events:
            self.cursor = event.position if self.stream == ALL_STREAM else event.version
            p = event.position
            if p <= self.checkpoint or p in self.settled or p in self.unsettled:
                continue
            self.unsettled[p] = event
            self.ready.append((event, self.retries.get(p, 0)))
        return self._dispatch(now)

    def requeue(self, events: Iterable[RecordedEvent], now: float,
                tags: Iterable[Any] | None = None,
                retries: Iterable[int] | None = None) -> list[Effect]:
        """Put events (parked ones, replayed) back in line, with retry count 0 or the
        ``retries`` given (a new leader finishing a replay); one that is already waiting or in
        flight is left alone. ``tags`` (one per event: where it is parked) are kept in
        ``replaying`` until the event is settled."""
        events = list(events)
        tags = list(tags) if tags is not None else [None] * len(events)
        counts = list(retries) if retries is not None else [0] * len(events)
        for event, tag, count in zip(events, tags, counts):
            p = event.position
            if p in self.unsettled:
                continue
            self.replaying[p] = tag
            self.retries.pop(p, None)
            if count:
                self.retries[p] = count
            self.settled.discard(p)
            self.unsettled[p] = event
            self.ready.append((event, count))
        return self._dispatch(now)

    # --- acks and nacks -----------------------------------------------------------------------
    def ack(self, consumer: Any, positions: Iterable[int], reply_to: Any,
            now: float) -> list[Effect]:
        positions = tuple(positions)
        error = self._foreign(consumer, positions)
        if error is not None:
            return [Refused(reply_to, error)]
        for p in positions:
            self._settle(p)
        return [PersistSettled(positions, reply_to)] + self._dispatch(now) + \
            self._maybe_checkpoint(now)

    def nack(self, consumer: Any, positions: Iterable[int], action: str, reason: str,
             reply_to: Any, now: float) -> list[Effect]:
        positions = tuple(positions)
        if action not in NACK_ACTIONS:
            return [Refused(reply_to, BadRequest(
                f"nack action must be one of {', '.join(NACK_ACTIONS)}"))]
        error = self._foreign(consumer, positions)
        if error is not None:
            return [Refused(reply_to, error)]
        effects: list[Effect] = []
        if action == "skip":
            for p in positions:
                self._settle(p)
            effects.append(PersistSettled(positions, reply_to))
        elif action == "park":
            for p in positions:
                event = self.inflight[p].event
                self._settle(p)
                self.parked_count += 1
                effects.append(Park(event, reason or "parked by the consumer",
                                    reply_to if p == positions[-1] else None))
            if not positions:
                effects.append(PersistSettled((), reply_to))
        else:  # retry, stop
            for p in positions:
                effects += self._retry(p, reason or f"nack ({action})")
            effects.append(PersistSettled((), reply_to))  # nothing to persist: answer now
            if action == "stop":
                effects += self.disconnect(consumer, now)
                effects.append(Dropped(consumer, "the consumer asked to stop"))
        return effects + self._dispatch(now) + self._maybe_checkpoint(now)

    # --- time ---------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Effect]:
        """Retry what timed out (park it past ``max_retry_count``); checkpoint if due."""
        effects: list[Effect] = []
        for p in sorted(p for p, f in self.inflight.items() if f.deadline <= now):
            effects += self._retry(p, "no ack within the message timeout")
        return effects + self._dispatch(now) + self._maybe_checkpoint(now)

    def next_deadline(self) -> float | None:
        deadlines = [f.deadline for f in self.inflight.values()]
        if self._since_checkpoint:
            deadlines.append(self._checkpoint_due)
        return min(deadlines) if deadlines else None

    def info(self) -> dict:
        return {"stream": self.stream, "group": self.group,
                "settings": self.settings.to_wire(), "consumers": len(self.consumers),
                "in_flight": len(self.inflight), "ready": len(self.ready),
                "checkpoint": self.checkpoint, "cursor": self.cursor,
                "parked": self.parked_count}

    # --- internals ----------------------------------------------------------------------------
    def _foreign(self, consumer: Any, positions: tuple[int, ...]) -> Exception | None:
        c = self.consumers.get(consumer)
        if c is None:
            return BadRequest(f"not connected to group {self.group!r}")
        bad = [p for p in positions if p not in c.inflight]
        if bad:
            return BadRequest(f"event(s) at position(s) {bad[:5]} are not in flight to this "
                              "consumer (unknown, already settled, timed out and retried, or "
                              "another consumer's)")
        return None

    def _settle(self, position: int) -> None:
        f = self.inflight.pop(position)
        c = self.consumers.get(f.consumer)
        if c is not None:
            c.inflight.discard(position)
        self._forget(position)

    def _forget(self, position: int) -> None:
        """``position`` is settled (durably, once its effect is carried out)."""
        del self.unsettled[position]
        self.retries.pop(position, None)
        self.replaying.pop(position, None)
        self.settled.add(position)
        self._since_checkpoint += 1

    def _retry(self, position: int, reason: str) -> list[Effect]:
        f = self.inflight.pop(position)
        c = self.consumers.get(f.consumer)
        if c is not None:
            c.inflight.discard(position)
        if f.retry_count >= self.settings.max_retry_count:
            self._forget(position)
            self.parked_count += 1
            return [Park(f.event, f"{reason}; retried {f.retry_count} time(s)")]
        self.ready.appendleft((f.event, f.retry_count + 1))
        self.retries[position] = f.retry_count + 1
        return [PersistRetries(((position, f.retry_count + 1),))]

    def _any_credit(self) -> bool:
        return any(c.free > 0 for c in self.consumers.values())

    def _pick(self, event: RecordedEvent) -> _Consumer | None:
        strategy = self.settings.consumer_strategy
        consumers = sorted(self.consumers.values(), key=lambda c: c.order)
        if not consumers:
            return None
        if strategy == "Pinned":
            c = consumers[zlib.crc32(event.stream.encode()) % len(consumers)]
            return c if c.free > 0 else None
        if strategy == "DispatchToSingle":
            return next((c for c in consumers if c.free > 0), None)
        for i in range(len(consumers)):  # RoundRobin
            c = consumers[(self._rr + i) % len(consumers)]
            if c.free > 0:
                self._rr = (self._rr + i + 1) % len(consumers)
                return c
        return None

    def _dispatch(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if not self.consumers or not self.ready:
            return effects
        waiting: deque[tuple[RecordedEvent, int]] = deque()
        blocked: set[str] = set()  # Pinned: streams whose earlier event waits (keep order)
        while self.ready and self._any_credit():
            event, retries = self.ready.popleft()
            c = None if event.stream in blocked else self._pick(event)
            if c is None:
                waiting.append((event, retries))
                if self.settings.consumer_strategy != "Pinned":
                    break
                blocked.add(event.stream)
                continue
            c.inflight.add(event.position)
            self.inflight[event.position] = _InFlight(
                event, c.id, now + self.settings.message_timeout, retries)
            effects.append(Deliver(c.id, event, retries))
        waiting.extend(self.ready)
        self.ready = waiting
        return effects

    def _maybe_checkpoint(self, now: float) -> list[Effect]:
        s = self.settings
        n = self._since_checkpoint
        if not n or (n < s.min_checkpoint_count and now < self._checkpoint_due
                     and n < s.max_checkpoint_count):
            return []
        if self.unsettled:
            first = self.unsettled[min(self.unsettled)]
            floor = first.position - 1
            resume = floor if self.stream == ALL_STREAM else first.version - 1
        else:
            floor, resume = max([self.checkpoint, *self.settled]), self.cursor
        self._since_checkpoint = 0
        self._checkpoint_due = now + s.checkpoint_after
        if floor <= self.checkpoint:
            return []
        self.checkpoint, self.resume = floor, resume
        self.settled = {p for p in self.settled if p > floor}
        return [PersistCheckpoint(floor, resume)]
