"""The consumer side of a catch-up subscription, without I/O: buffer, markers, credit, and
where it resumes after a failover."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from esnode.client._calls import Subscribed
from esnode.client._protocol import CAUGHT_UP, CHECKPOINT, DROPPED, EVENTS, LOST
from esnode.client.errors import (
    ConnectionLost,
    EsError,
    NoQuorum,
    NotLeader,
    NotReady,
    OutcomeUnknown,
    Unavailable,
)
from esnode.core import messages as m
from esnode.core.filters import DEFAULT_CHECKPOINT_INTERVAL, EventFilter
from esnode.core.types import ALL_STREAM, RecordedEvent

RESUMABLE_DROPS = (NotReady, NotLeader, NoQuorum, OutcomeUnknown, Unavailable, ConnectionLost)
"""A subscription the node drops with one of these is made again (``resubscribe``)."""

# --- the consumer side of a subscription ----------------------------------------------------
END = object()
"""``SubscriptionState.next_event`` result: the subscription was closed by the client."""
RESUME = object()
"""``SubscriptionState.next_event`` result: the connection was lost (or the node dropped the
subscription for a reason worth retrying) after every event before that was handed out: run
``resubscribe`` and go on."""


def finished(state: Any) -> object | None:
    """What ``next_event`` returns with nothing buffered: ``END`` (or the node's error,
    raised) once the subscription ended, else None."""
    if state.ended:
        if state.error is not None:
            raise state.error
        return END
    return None


class SubscriptionState:
    """Buffer, markers and credit of one subscription, driven from the consumer's side."""

    def __init__(self, subscription: int, window: int,
                 on_caught_up: Callable[[int | None], Any] | None = None,
                 stream: str = ALL_STREAM, from_: int | str = m.FROM_START,
                 generation: int = 0, filter: EventFilter | None = None,
                 checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL,
                 on_checkpoint: Callable[[int], Any] | None = None) -> None:
        self.id = subscription
        self.filter = filter
        self.checkpoint_interval = checkpoint_interval
        self.checkpoint_position: int | None = None
        """The last ``$all`` position a filtered subscription's node said it scanned up to
        (every match up to it handed out)."""
        self._on_checkpoint = on_checkpoint
        self.window = window
        self.stream = stream
        self.from_ = from_
        self.generation = generation
        self.lost_reason: EsError | None = None
        self.caught_up = False
        self.caught_up_position: int | None = None
        self.last_event: RecordedEvent | None = None
        self.error: EsError | None = None
        self.ended = False
        self.resubscriptions = 0
        """How often it was made again after a loss (each time it catches up anew, and
        ``on_caught_up`` runs again)."""
        self._on_caught_up = on_caught_up
        self._buffer: deque = deque()
        self._consumed = 0
        self._grant_at = max(1, window // 2)

    def feed(self, kind: str, payload: Any) -> None:
        """A push from the connection (or ``CLOSED``), in the order it arrived."""
        if kind == EVENTS:
            self._buffer.extend(payload)
        else:
            self._buffer.append((kind, payload))

    def next_event(self) -> RecordedEvent | object | None:
        """The next event; None when nothing is buffered; ``END`` once closed. Raises the
        subscription's error once the node dropped it (after every event before the drop)."""
        buf = self._buffer
        while buf:
            item = buf.popleft()
            if type(item) is RecordedEvent:
                self._consumed += 1
                self.last_event = item
                return item
            kind, payload = item
            if kind == CAUGHT_UP:
                self.caught_up, self.caught_up_position = True, payload
                if self._on_caught_up is not None:
                    self._on_caught_up(payload)
            elif kind == CHECKPOINT:
                self.checkpoint_position = payload
                if self._on_checkpoint is not None:
                    self._on_checkpoint(payload)
            elif kind == LOST or (kind == DROPPED and isinstance(payload, RESUMABLE_DROPS)):
                self.lost_reason = payload
                buf.clear()
                return RESUME
            else:
                self.ended = True
                self.error = payload if kind == DROPPED else None
                buf.clear()
        return finished(self)

    def take(self) -> tuple[RecordedEvent | object | None, int]:
        """``next_event()`` and the credit to grant back now (0: none yet)."""
        event = self.next_event()
        return event, self.credit_due()

    def confirmed(self, confirmation: Subscribed) -> None:
        """The node confirmed the subscription: take the start it resolved (``"end"``
        becomes the position or version it stood at; -1 = before the first event)."""
        start = confirmation.from_
        if type(start) is int and not isinstance(self.from_, int):
            self.from_ = start if start >= 0 else m.FROM_START

    def restart(self, confirmation: Subscribed, generation: int) -> None:
        """The subscription was made again (``resubscribe``) under a new id: fresh credit."""
        self.id, self.generation = confirmation.id, generation
        self.confirmed(confirmation)
        self.lost_reason = None
        self.resubscriptions += 1
        self._consumed = 0

    def credit_due(self) -> int:
        """Credit to grant now (0: not yet): granted in halves of the window."""
        if self._consumed < self._grant_at or self.ended:
            return 0
        n, self._consumed = self._consumed, 0
        return n


