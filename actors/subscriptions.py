"""Subscriptions actor: catch-up subscriptions that turn live without gaps or duplicates.

A subscription is only a cursor over the committed log (a stream version or a ``$all``
position) plus the credit its client granted. Catching up and staying live are the same loop:
read after the cursor up to the commit position, push at most ``credit`` events, advance. A
new commit position just runs the loop again. Nothing is buffered per subscriber, so a client
that stops granting credit only stalls itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pykka
from esnode.actors.messages import (
    Committed,
    PeerGone,
    Shutdown,
    StatusChanged,
    SubscriptionRequest,
)
from esnode.actors.status import StatusBoard
from esnode.core import messages as m
from esnode.core.clock import Clock
from esnode.core.filters import EventFilter
from esnode.core.types import (
    ALL_STREAM,
    AllSlice,
    BadRequest,
    EsError,
    NotReady,
    StreamDeleted,
    StreamNotFound,
    TooBusy,
)
from esnode.storage.port import EventStore
from esnode.transport.port import Transport

log = logging.getLogger("esnode.subscriptions")

PAGE = 500
"""Most events read from the store in one go for one subscriber."""

MAX_SUBSCRIPTIONS_PER_CLIENT = 1000
"""Open subscriptions one client connection may hold; more are refused with ``too_busy``."""


@dataclass(slots=True)
class Subscription:
    peer: bytes
    id: int
    stream: str
    next: int  # next version (stream) or position ($all) to deliver
    credit: int
    caught_up: bool = False
    filter: EventFilter | None = None
    checkpoint_interval: int = 0
    scanned: int = 0  # records looked at since the last checkpoint


class SubscriptionsActor(pykka.ThreadingActor):
    def __init__(self, store: EventStore, transport: Transport, clock: Clock,
                 board: StatusBoard, on_failure: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self._store = store
        self._transport = transport
        self._clock = clock
        self._on_fatal = on_failure
        self._board = board
        self._committed = board.readable_position
        self._incarnation = board.incarnation
        self._subs: dict[tuple[bytes, int], Subscription] = {}

    def on_receive(self, message: object) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            log.error("subscriptions actor got an unknown message %r", message)
            return
        board = self._board
        if board.subscriptions_idle:  # not told of commits until now: catch up first
            board.subscriptions_idle = False
            self._committed = max(self._committed, board.readable_position)
        handler(self, message)
        if not self._subs:
            board.subscriptions_idle = True  # the writer stops waking us (Node._notify)

    def _on_committed(self, message: Committed) -> None:
        if message.position > self._committed:
            self._committed = message.position
            for sub in list(self._subs.values()):
                self._pump(sub)

    def _on_request(self, message: SubscriptionRequest) -> None:
        env = message.envelope
        handler = self._requests.get(type(env.request))
        if handler is not None:
            handler(self, env, env.request)

    def _on_status(self, message: StatusChanged) -> None:
        pass  # subscriptions read committed data only: a leader change loses nothing

    def _on_peer_gone(self, message: PeerGone) -> None:
        for key in [k for k in self._subs if k[0] == message.peer]:
            del self._subs[key]

    def _on_shutdown(self, message: Shutdown) -> None:
        self._transport.send_client(
            [(s.peer, s.id, m.SubscriptionDropped(NotReady("the node is shutting down")))
             for s in self._subs.values()])
        self._subs.clear()

    def _reply(self, peer: bytes, corr: int, message: object) -> None:
        self._transport.send_client([(peer, corr, message)])

    def _subscribe(self, env: m.ClientEnvelope, request: m.Subscribe) -> None:
        key = (env.peer, env.corr)
        if key in self._subs:
            self._reply(env.peer, env.corr, m.ErrorReply(BadRequest(
                f"subscription {env.corr} already exists on this connection")))
            return
        if sum(1 for peer, _ in self._subs if peer == env.peer) >= MAX_SUBSCRIPTIONS_PER_CLIENT:
            self._reply(env.peer, env.corr, m.ErrorReply(TooBusy(
                f"this connection already has {MAX_SUBSCRIPTIONS_PER_CLIENT} subscriptions "
                "(the limit); unsubscribe from some first")))
            return
        sub = Subscription(env.peer, env.corr, request.stream,
                           self._start(request.stream, request.from_), request.credit,
                           filter=request.filter,
                           checkpoint_interval=request.checkpoint_interval)
        self._subs[key] = sub
        # The start position, resolved ("end" becomes a number): a client that loses this
        # subscription before it delivers anything resumes from here, so nothing committed
        # after this confirmation is skipped on another node.
        self._reply(env.peer, env.corr, m.Reply({"subscription": env.corr,
                                                 "from": sub.next - 1,
                                                 "incarnation": self._incarnation}))
        self._pump(sub)

    def _credit(self, env: m.ClientEnvelope, request: m.Credit) -> None:
        sub = self._subs.get((env.peer, request.subscription))
        if sub is not None:
            sub.credit += request.n
            self._pump(sub)

    def _unsubscribe(self, env: m.ClientEnvelope, request: m.Unsubscribe) -> None:
        self._subs.pop((env.peer, request.subscription), None)
        self._reply(env.peer, env.corr, m.Reply({}))

    _handlers = {
        Committed: _on_committed,
        SubscriptionRequest: _on_request,
        StatusChanged: _on_status,
        PeerGone: _on_peer_gone,
        Shutdown: _on_shutdown,
    }
    """The messages this actor handles (Event Store's ``IHandle<T>``), one entry each."""

    _requests = {
        m.Subscribe: _subscribe,
        m.Credit: _credit,
        m.Unsubscribe: _unsubscribe,
    }
    """The client requests the gateway routes here."""

    def _start(self, stream: str, from_: int | str) -> int:
        if from_ == m.FROM_START:
            return 0
        if isinstance(from_, int):
            return from_ + 1  # delivery starts after the given version/position
        if stream == ALL_STREAM:
            return self._committed + 1
        # the last committed version: a later one may still be lost in a failover
        return self._store.stream_version(stream, up_to_position=self._committed) + 1

    def _pump(self, sub: Subscription) -> None:
        """Deliver what the subscriber has credit for, then report caught-up once."""
        try:
            while sub.credit > 0:
                count = min(sub.credit, PAGE)
                if sub.filter is not None:
                    page, events = self._scan(sub)
                elif sub.stream == ALL_STREAM:  # pushed as stored when no rule looks inside
                    page = self._store.read_all(sub.next, count, up_to_position=self._committed,
                                                encoded=True)
                    events, sub.next = page.events, page.next_position
                else:
                    try:
                        page = self._store.read_stream(
                            sub.stream, sub.next, count, up_to_position=self._committed,
                            now_us=self._clock.now_us(), encoded=True)
                    except StreamNotFound:
                        break  # nothing yet: wait for it to be written
                    events, sub.next = page.events, max(sub.next, page.next_version)
                if events:
                    sub.credit -= len(events)
                    if sub.filter is None:
                        self._reply(sub.peer, sub.id, m.EventsPushed(events))
                if page.is_end:
                    break
            else:
                return
            if not sub.caught_up:
                sub.caught_up = True
                self._reply(sub.peer, sub.id, m.CaughtUp(self._committed))
        except StreamDeleted as exc:
            self._drop(sub, exc)
        except EsError as exc:
            self._drop(sub, exc)

    def _scan(self, sub: Subscription) -> tuple[AllSlice, list]:
        """One page of a filtered ``$all`` subscription: the matches it has credit for, and
        a checkpoint whenever ``checkpoint_interval`` records were looked at (so a consumer
        can save its place even when nothing matches)."""
        start = sub.next
        page = self._store.read_all(start, PAGE, up_to_position=self._committed)
        matches = [e for e in page.events if sub.filter.matches(e)]
        if len(matches) > sub.credit:
            matches = matches[:sub.credit]
            sub.next = matches[-1].position + 1
        else:
            sub.next = page.next_position
        if matches:  # the events go out before a checkpoint that covers them
            self._reply(sub.peer, sub.id, m.EventsPushed(matches))
        sub.scanned += sub.next - start
        if sub.scanned >= sub.checkpoint_interval:
            sub.scanned = 0
            self._reply(sub.peer, sub.id, m.Checkpoint(sub.next - 1))
        done = page.is_end and sub.next >= page.next_position
        return AllSlice([], sub.next, done or sub.next == start), matches

    def _drop(self, sub: Subscription, error: EsError) -> None:
        self._subs.pop((sub.peer, sub.id), None)
        self._reply(sub.peer, sub.id, m.SubscriptionDropped(error))

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        log.critical("subscriptions actor crashed: %s: %s", exception_type.__name__,
                     exception_value)
        if self._on_fatal is not None:
            self._on_fatal(f"subscriptions actor crashed: {exception_value}")
