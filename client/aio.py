"""The asyncio client: the same protocol core as the threaded one, on the event loop.

Everything runs on the event loop that connected. The DEALER is a plain (non-asyncio) socket:
coroutines send on it without blocking, and the loop watches its file descriptor
(``add_reader``) to drain every reply at once and route it to its future or subscription
queue. (``zmq.asyncio`` makes a future and several flag operations per message, which cost
the asyncio client half its throughput.) One loop timer (re-armed to the earliest deadline)
enforces per-operation timeouts and the heartbeat.
Discovery, retries and failover are the core's flows (as in the threaded client); a
re-discovery runs under an ``asyncio.Lock`` and its ``Connect`` replaces socket and reader.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import zmq
import zmq.asyncio
from esnode.client import _core as core
from esnode.client._api import GroupView, Operations, SubscriptionView
from esnode.client._dns import resolve_async
from esnode.client.errors import ClientClosed, EsError
from esnode.client.settings import ConnectionSettings, settings_from
from esnode.client.sync import (
    CLOSE_LINGER_MS,
    OUTGOING_LIMIT,
    GONE_EVENTS,
    configure_socket,
    link_events,
    monitor_events,
    secure_context,
    watch_disconnects,
)
from esnode.core.filters import DEFAULT_CHECKPOINT_INTERVAL, EventFilter
from esnode.core.messages import FROM_START
from esnode.core.types import RecordedEvent
from esnode.transport.codec import MAX_FRAMES_PER_MESSAGE

log = logging.getLogger("esnode.client")


async def probe(ctx: zmq.asyncio.Context, effect: core.Probe) -> Any:
    """Ask ``effect.endpoint`` one question on a throwaway socket (discovery)."""
    sock = ctx.socket(zmq.DEALER)
    try:
        monitor = watch_disconnects(sock, GONE_EVENTS)
        configure_socket(sock, effect.endpoint)
        exchange = core.ProbeExchange(effect)
        await sock.send(exchange.frame)
        poller = zmq.asyncio.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + effect.timeout
        while (left := deadline - loop.time()) > 0:
            ready = dict(await poller.poll(int(left * 1000) + 1))
            if sock in ready and exchange.answer(await sock.recv()):
                return exchange.result
            if monitor in ready and _drained(monitor) and not await sock.poll(0):
                raise exchange.refused()
        raise exchange.timeout()
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)


def _drained(monitor: zmq.asyncio.Socket) -> int:
    """``monitor_events`` for an asyncio monitor socket (its events are already queued)."""
    from zmq.utils.monitor import parse_monitor_message

    seen = 0
    while True:
        try:
            seen |= parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK).result())["event"]
        except zmq.Again:
            return seen


class AsyncClient(Operations):
    """An asyncio connection to an esnode node. Create it with ``await connect_async(...)``;
    use it from the event loop that created it, as ``async with`` or ``await close()``."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self._cluster = core.ClusterState(settings)
        self._opened = weakref.WeakSet()
        self._ctx = secure_context(zmq.asyncio.Context(), settings)  # discovery probes
        self._data_ctx = secure_context(zmq.Context(), settings)  # the DEALER, loop-watched
        self._sock: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        """Reports the node closing ``_sock``'s connection."""
        self._core = core.ProtocolCore("", settings.keepalive_interval,
                                       settings.keepalive_timeout, self._cluster.stats)
        self._switch_lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._outgoing: list[bytes] = []  # requests to send at the end of this turn
        self._turn_due = False  # _end_turn is scheduled
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _open(self) -> AsyncClient:
        self._loop = asyncio.get_running_loop()
        try:
            async with self._switch_lock:
                await self._drive(core.reconnect(self._cluster, self.settings, 0, "connect"))
        except BaseException:
            await self.close()
            raise
        return self

    # --- operations beyond esnode.client._api.Operations (the rest return awaitables) --------
    def iter_stream(self, stream: str, from_version: int = 0, backwards: bool = False,
                    limit: int | None = None, page_size: int = 500,
                    *, timeout: float | None = None) -> AsyncIterator[RecordedEvent]:
        return self._pages(lambda start, n: self.read_stream(
            stream, start, n, backwards, timeout=timeout), from_version, limit, page_size)

    def iter_all(self, from_position: int = 0, backwards: bool = False,
                 limit: int | None = None, page_size: int = 1000,
                 *, filter: EventFilter | None = None, timeout: float | None = None) -> AsyncIterator[RecordedEvent]:
        return self._pages(lambda start, n: self.read_all(start, n, backwards, filter=filter,
                                                          timeout=timeout),
                           from_position, limit, page_size)

    async def subscribe(self, stream: str, from_: int | str = FROM_START, *,
                        window: int = core.DEFAULT_SUBSCRIPTION_WINDOW,
                        on_caught_up: Callable[[int | None], Any] | None = None,
                        filter: EventFilter | None = None,
                        checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL,
                        on_checkpoint: Callable[[int], Any] | None = None,
                        timeout: float | None = None) -> AsyncSubscription:
        inbox: asyncio.Queue = asyncio.Queue()
        state = await self._drive(core.open_subscription(
            stream, from_, window, on_caught_up, timeout or self.settings.operation_timeout,
            self.settings, self._cluster, filter, checkpoint_interval, on_checkpoint), inbox)
        return self._track(AsyncSubscription(self, state, inbox))

    async def subscribe_group(self, stream: str, group: str, *,
                              window: int = core.DEFAULT_GROUP_WINDOW,
                              timeout: float | None = None) -> AsyncPersistentSubscription:
        """See ``Client.subscribe_group``."""
        inbox: asyncio.Queue = asyncio.Queue()
        state = await self._drive(core.open_group(stream, group, window,
                                                  timeout or self.settings.operation_timeout,
                                                  self.settings, self._cluster), inbox)
        return self._track(AsyncPersistentSubscription(self, state, inbox))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = self._cluster.closed = True
        linger = 0
        if self._sock is not None:
            for sub in self._core.subscriptions:
                frame = self._core.unsubscribe(sub)
                if frame is not None:
                    linger = CLOSE_LINGER_MS
                    self._outgoing.append(frame)
            self._send_outgoing()
        self._finish("the client was closed")
        self._close_socket(linger)
        self._ctx.term()
        self._data_ctx.term()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<esnode AsyncClient {self.endpoint}{' closed' if self._closed else ''}>"

    # --- plumbing ---------------------------------------------------------------------------
    def _op(self, call: core.Call, timeout: float | None, inbox: Any = None) -> Awaitable[Any]:
        if timeout is None:
            timeout = self.settings.operation_timeout
        return self._drive(core.perform(call, timeout, self.settings, self._cluster), inbox)

    async def _drive(self, flow: core.Flow, inbox: Any = None) -> Any:
        send, value, error = flow.send, None, None
        while True:
            try:
                effect = flow.throw(error) if error is not None else send(value)
            except StopIteration as stop:
                return stop.value
            value = error = None
            kind = type(effect)
            try:
                if kind is core.Request:
                    value = await self._roundtrip(effect.call, effect.timeout, inbox)
                elif kind is core.Sleep:
                    await asyncio.sleep(effect.seconds)
                elif kind is core.Probe:
                    value = await probe(self._ctx, effect)
                elif kind is core.Rediscover:
                    async with self._switch_lock:
                        await self._drive(core.reconnect(self._cluster, self.settings, *effect))
                elif kind is core.Connect:
                    await self._switch(effect.endpoint)
                else:
                    value = await resolve_async(effect)
            except EsError as exc:
                error = exc

    async def _roundtrip(self, call: core.Call, timeout: float | None, inbox: Any) -> Any:
        if self._closed or self._sock is None:
            raise ClientClosed(f"{call.what or call.op}: the client is closed")
        loop = self._loop
        fut = loop.create_future()
        now = loop.time()
        corr, frame = self._core.start(call, fut, now, timeout, inbox)
        when = self._core.next_deadline()
        if when is not None and when < self._timer_at:
            self._arm(when)
        try:
            await self._send(frame)
            if self._core.gone is not None:  # a connection known to be down: fail it now
                _deliver(self._core.disconnected())
            return await fut
        except asyncio.CancelledError:
            self._core.forget(corr)
            raise

    async def _send(self, frame: bytes) -> None:
        """Queue ``frame`` for the end of this turn of the loop, when every request of the
        turn goes out as one message (a send wakes ZeroMQ's I/O thread: one per turn, not one
        per request); while the socket cannot take more, the caller waits."""
        while len(self._outgoing) >= OUTGOING_LIMIT and self._sock is not None:
            await asyncio.sleep(0.001)
        self._outgoing.append(frame)
        self._end_turn_soon()

    def _end_turn_soon(self) -> None:
        if not self._turn_due:
            self._turn_due = True
            self._loop.call_soon(self._end_turn)

    def _end_turn(self) -> None:
        """Send what the turn queued, then look for replies: a send can consume the socket's
        edge-triggered readiness."""
        self._turn_due = False
        if self._send_outgoing():
            self._loop.call_later(0.001, self._end_turn_soon)  # at the high-water mark
        self._on_readable()

    def _send_outgoing(self) -> bool:
        """Send the queued requests, ``MAX_FRAMES_PER_MESSAGE`` per message; whether some
        are left (the socket would block)."""
        out, sock = self._outgoing, self._sock
        while out and sock is not None:
            chunk = out[:MAX_FRAMES_PER_MESSAGE]
            try:
                sock.send_multipart(chunk, zmq.NOBLOCK)
            except zmq.Again:
                return True
            del out[:len(chunk)]
        return False

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    async def _switch(self, endpoint: str) -> None:
        """Replace socket and reader with ones connected to ``endpoint``; what was in flight
        on the old connection fails (and is retried by its flow)."""
        if self._closed:
            raise ClientClosed("the client is closed")
        old = self._core.endpoint
        _deliver(self._core.close(f"the client moved from {old} to {endpoint}" if old
                                  else "connecting", lost=True))
        self._close_socket(0)
        self._sock = self._data_ctx.socket(zmq.DEALER)
        self._monitor = watch_disconnects(self._sock)
        configure_socket(self._sock, endpoint)
        self._core.endpoint = endpoint
        self._loop.add_reader(self._sock.getsockopt(zmq.FD), self._on_readable)
        self._loop.add_reader(self._monitor.getsockopt(zmq.FD), self._on_monitor)

    def _close_socket(self, linger: int) -> None:
        self._outgoing.clear()  # their calls failed with the connection (flows retry them)
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.getsockopt(zmq.FD))
                self._loop.remove_reader(self._monitor.getsockopt(zmq.FD))
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._sock.close(linger=linger)
            self._sock = self._monitor = None

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        failed, frame = self._core.expire(self._loop.time())
        _deliver(failed)
        if frame is not None and self._sock is not None:
            try:
                self._sock.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                pass  # a heartbeat ping: the next one will do
        when = self._core.next_deadline()
        if when is not None:
            self._arm(when)

    def _on_monitor(self) -> None:
        """The node closed the connection: fail what is in flight now (flows re-discover)."""
        if self._monitor is not None:
            _deliver(link_events(self._core, monitor_events(self._monitor)))

    def _on_readable(self) -> None:
        """Drain every reply the socket holds (its descriptor is edge-triggered: a
        non-blocking ``recv`` that finds nothing has processed the socket's commands, as
        ``getsockopt(EVENTS)`` would, so receiving until ``Again`` leaves nothing unseen)."""
        sock = self._sock
        if sock is None:
            return
        receive, ok, err = self._core.receive, core.OK, core.ERROR
        try:
            while True:
                done = receive(sock.recv(zmq.NOBLOCK))
                if done is not None:
                    target, kind, payload = done
                    if kind == ok:
                        if not target.done():
                            target.set_result(payload)
                    elif kind == err:
                        if not target.done():
                            target.set_exception(payload)
                    else:
                        target.put_nowait((kind, payload))
        except zmq.Again:
            pass
        except Exception as exc:  # noqa: BLE001 - fail everyone rather than hang them
            log.exception("esnode async client reader crashed")
            self._finish(f"the client's reader crashed ({exc!r})")
        if self._core.lost:
            _deliver(self._core.take_lost())

    def _finish(self, reason: str) -> None:
        self._closed = self._cluster.closed = True
        if self._timer is not None:
            self._timer.cancel()
        _deliver(self._core.close(reason))

    async def _send_credit(self, subscription: int, n: int) -> None:
        if not self._closed:
            await self._send(self._core.credit(subscription, n))

    async def _pages(self, read: Callable[[int, int], Awaitable[Any]], start: int,
                     limit: int | None, size: int) -> AsyncIterator[RecordedEvent]:
        delivered = 0
        while start is not None:
            page = await read(start, core.page_size(size, delivered, limit))
            for event in page.events[:None if limit is None else limit - delivered]:
                delivered += 1
                yield event
            start = core.next_page(page, delivered, limit, start)


def _deliver(done: list[tuple[Any, str, Any]]) -> None:
    """Fail futures; hand ``LOST``/``CLOSED`` to subscription queues."""
    for target, kind, payload in done:
        if kind == core.ERROR:
            if not target.done():
                target.set_exception(payload)
        else:
            target.put_nowait((kind, payload))


async def _wait_item(inbox: asyncio.Queue, deadline: float | None,
                     loop: asyncio.AbstractEventLoop) -> Any:
    """The next push from a subscription's inbox; None once ``deadline`` (loop time; None:
    never) has passed."""
    try:
        if deadline is None:
            return await inbox.get()
        return await asyncio.wait_for(inbox.get(), max(0.0, deadline - loop.time()))
    except TimeoutError:
        return None


class _AsyncConsumer:
    """What both consumer kinds share: ``get`` (coming back after a loss with
    ``_come_back``: ``resubscribe`` or ``rejoin``), ``await close()`` and ``async with``."""

    _client: AsyncClient
    _state: Any
    _inbox: asyncio.Queue
    _closing: bool
    _come_back: Callable

    async def get(self, timeout: float | None = None) -> Any:
        """The next event, waiting at most ``timeout`` seconds; None on timeout or once
        closed."""
        state, client = self._state, self._client
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            event, credit = state.take()
            if event is core.RESUME:
                await client._drive(type(self)._come_back(state, client.settings,
                                                          client._cluster), self._inbox)
                continue
            if credit:
                await client._send_credit(state.id, credit)
            if event is core.END:
                return None
            if event is not None:
                return event
            item = await _wait_item(self._inbox, deadline, loop)
            if item is None:
                return None
            state.feed(*item)
            while not self._inbox.empty():  # everything that arrived: a loss behind the
                state.feed(*self._inbox.get_nowait())  # events makes them stale

    async def close(self) -> None:
        self._closing = True
        client = self._client
        frame = None if client._closed else client._core.unsubscribe(self._state.id)
        if frame is not None:
            await client._send(frame)
        self._inbox.put_nowait((core.CLOSED, None))

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncSubscription(_AsyncConsumer, SubscriptionView):
    """``async for event in subscription``; see ``esnode.client.Subscription``."""

    def __init__(self, client: AsyncClient, state: core.SubscriptionState,
                 inbox: asyncio.Queue) -> None:
        self._client = client
        self._state = state
        self._inbox = inbox

    _come_back = staticmethod(core.resubscribe)

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> RecordedEvent:
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event

class AsyncPersistentSubscription(_AsyncConsumer, GroupView):
    """``async for item in consumer``; see ``esnode.client.PersistentSubscription``."""

    def __init__(self, client: AsyncClient, state: core.GroupState,
                 inbox: asyncio.Queue) -> None:
        self._client, self._state, self._inbox = client, state, inbox

    _come_back = staticmethod(core.rejoin)

    def __aiter__(self) -> AsyncPersistentSubscription:
        return self

    async def __anext__(self) -> core.GroupEvent:
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def ack(self, *events: Any, timeout: float | None = None) -> tuple[int, ...]:
        return await self._settle(events, core.group_ack, (), timeout)

    async def nack(self, *events: Any, action: str = "retry", reason: str = "",
                   timeout: float | None = None) -> tuple[int, ...]:
        return await self._settle(events, core.group_nack, (action, reason), timeout)

    async def _settle(self, events: tuple, call: Callable, extra: tuple,
                      timeout: float | None) -> tuple[int, ...]:
        positions = self._state.settle(events)
        if positions:
            await self._client._op(call(self._state.id, positions, *extra), timeout)
        return positions



class Connecting:
    """What ``connect_async`` returns: ``await`` it for the client, or use it directly as
    ``async with connect_async(...) as client`` (closed on exit)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def __await__(self):
        return self._client._open().__await__()

    async def __aenter__(self) -> AsyncClient:
        return await self._client._open()

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()


def connect_async(target: str | ConnectionSettings = "tcp://127.0.0.1:2113", *,
                  timeout: float | None = None, **options: Any) -> Connecting:
    """The asyncio twin of ``esnode.client.connect``: ``client = await connect_async(...)``
    or ``async with connect_async(...) as client``."""
    if timeout is not None:
        options["operation_timeout"] = timeout
    return Connecting(AsyncClient(settings_from(target, **options)))
