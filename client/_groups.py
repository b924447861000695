"""The consumer side of a persistent subscription group, without I/O (both flavours):
buffer, credit granted back as events are settled, and coming back after a failover.

The node limits a consumer to ``window`` events in flight: an ack, a nack or a timeout frees
a place (no credit messages). After a reconnection the events that were in flight on
the old connection belong to nobody on the new one: the node redelivers them (retry count
+1) and acks for them are dropped here (never sent), which is the at-least-once part of the
guarantee (docs/subscriptions.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from esnode.client._calls import GroupEvent, Subscribed, connect_group
from esnode.client._cluster import ClusterState, Resubscribed
from esnode.client._flows import Flow, come_back, perform
from esnode.client._protocol import DROPPED, GROUP_EVENTS, LOST
from esnode.client._subscription import END, RESUMABLE_DROPS, RESUME, finished
from esnode.client.errors import EsError
from esnode.client.settings import ConnectionSettings
from esnode.core.types import RecordedEvent

DEFAULT_GROUP_WINDOW = 100


def positions_of(items: Iterable[GroupEvent | RecordedEvent | int]) -> list[int]:
    """Event positions from what a consumer holds: ``GroupEvent``s, events or positions."""
    out = []
    for item in items:
        if type(item) is GroupEvent:
            out.append(item.event.position)
        elif type(item) is RecordedEvent:
            out.append(item.position)
        elif type(item) is int:
            out.append(item)
        else:
            raise TypeError(f"cannot ack/nack {item!r}: give GroupEvents, events or positions")
    return out


class GroupState:
    """Buffer, settlement and credit of one group consumer."""

    def __init__(self, confirmation: Subscribed, window: int, stream: str, group: str,
                 generation: int) -> None:
        self.id = confirmation.id
        self.window, self.stream, self.group = window, stream, group
        self.generation = generation
        self.lost_reason: EsError | None = None
        self.error: EsError | None = None
        self.ended = False
        self.reconnections = 0
        self._buffer: deque = deque()
        self._mine: set[int] = set()  # delivered on the current connection, not settled

    @property
    def what(self) -> str:
        return f"connection to group {self.group!r} on {self.stream!r}"

    def feed(self, kind: str, payload: Any) -> None:
        if kind == GROUP_EVENTS:
            self._buffer.extend(payload)
            return
        if kind == LOST or kind == DROPPED:
            # Events not handed out yet came on a connection that is gone: their acks could
            # not be confirmed and the group delivers them again. Drop them.
            self._buffer = deque(x for x in self._buffer if type(x) is not GroupEvent)
        self._buffer.append((kind, payload))

    def next_event(self) -> GroupEvent | object | None:
        """The next ``GroupEvent``; None when nothing is buffered; ``END`` once closed;
        ``RESUME`` when the connection was lost (``rejoin``). Raises the node's error when it
        dropped the consumer for good."""
        buf = self._buffer
        while buf:
            item = buf.popleft()
            if type(item) is GroupEvent:
                self._mine.add(item.event.position)
                return item
            kind, payload = item
            if kind == LOST or (kind == DROPPED and isinstance(payload, RESUMABLE_DROPS)):
                self.lost_reason = payload
                buf.clear()
                return RESUME
            self.ended = True
            self.error = payload if kind == DROPPED else None
            buf.clear()
        return finished(self)

    def take(self) -> tuple[GroupEvent | object | None, int]:
        """``next_event()`` and 0: a group has no credit messages (settling frees places)."""
        return self.next_event(), 0

    def settle(self, items: Iterable[GroupEvent | RecordedEvent | int]) -> tuple[int, ...]:
        """The positions to send in an ack/nack: those delivered on this connection (the
        others will be redelivered anyway)."""
        mine = tuple(p for p in positions_of(items) if p in self._mine)
        self._mine.difference_update(mine)
        return mine

    def restart(self, confirmation: Subscribed, generation: int) -> None:
        self.id, self.generation = confirmation.id, generation
        self.lost_reason = None
        self.reconnections += 1
        self._mine.clear()


def open_group(stream: str, group: str, window: int, timeout: float,
               settings: ConnectionSettings, cluster: ClusterState) -> Flow:
    """Connect to a group (with retries: a follower's ``NotLeader`` sends the client to the
    leader, where the group lives); returns the ``GroupState``."""
    generation = cluster.generation
    confirmed = yield from perform(connect_group(stream, group, window), timeout, settings,
                                   cluster)
    return GroupState(confirmed, window, stream, group, generation)


def rejoin(state: GroupState, settings: ConnectionSettings, cluster: ClusterState) -> Flow:
    """Connect to the group again after the connection was lost (``come_back``: with
    patience); the node redelivers whatever was unsettled."""
    confirmed, generation = yield from come_back(
        state.what, state.lost_reason, state.generation,
        lambda: connect_group(state.stream, state.group, state.window), settings, cluster)
    state.restart(confirmed, generation)
    cluster.emit(Resubscribed(f"{state.stream}::{state.group}", "unsettled",
                              cluster.endpoint or ""))


__all__ = ["DEFAULT_GROUP_WINDOW", "END", "GroupState", "RESUME", "open_group",
           "positions_of", "rejoin"]
