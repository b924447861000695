"""The threaded client: any number of threads call it; one I/O thread owns the socket.

Callers build the request in their own thread, put it on a deque and wake the I/O thread
through a pipe (only when it is not already awake). The I/O thread sends, receives, routes each
reply to the waiting caller's one-shot lock and each subscription push to that
subscription's queue, and enforces deadlines and the heartbeat — all through the shared
``ProtocolCore``. So a request costs one thread hop each way and any number of them are
pipelined on one connection.

Discovery, retries and failover are the core's flows, driven by the calling thread
(``_drive``); a re-discovery runs under ``_switch_lock`` and ends with a ``Connect`` that the
I/O thread performs by replacing its socket.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import zmq
from esnode.client import _core as core
from esnode.client._api import GroupView, Operations, SubscriptionView
from esnode.client._dns import resolve
from esnode.client.errors import ClientClosed, EsError, OperationTimeout
from esnode.client.settings import ConnectionSettings, settings_from
from esnode.core.filters import DEFAULT_CHECKPOINT_INTERVAL, EventFilter
from esnode.core.messages import FROM_START
from esnode.core.types import RecordedEvent
from esnode.transport.codec import MAX_FRAMES_PER_MESSAGE

log = logging.getLogger("esnode.client")

SEND_HWM = 100_000
OUTGOING_LIMIT = 10_000
"""Requests the asyncio client queues while the socket cannot take more; callers then wait."""
CLOSE_LINGER_MS = 200
"""How long closing waits to flush unsubscribes to the node."""
_GRACE = 5.0
"""Extra wait past a deadline before a caller gives up on the I/O thread itself."""


def configure_socket(sock: zmq.Socket, endpoint: str) -> None:
    """Options every client DEALER gets (both flavours)."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, SEND_HWM)
    sock.setsockopt(zmq.RCVHWM, SEND_HWM)
    if endpoint.startswith("tcp://["):
        sock.setsockopt(zmq.IPV6, 1)
    sock.connect(endpoint)


GONE_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
"""A probe's socket events that mean no answer will come (refused, or closed)."""
LINK_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
"""The connection's socket events: the node closed it; it is up (again)."""


def watch_disconnects(sock: zmq.Socket, events: int = LINK_EVENTS) -> zmq.Socket:
    """A monitor of ``sock``: the node closing the connection is seen at once (a killed
    process closes its TCP connections), which a DEALER otherwise hides by reconnecting."""
    return sock.get_monitor_socket(events)


def monitor_events(monitor: zmq.Socket) -> list[int]:
    """Drain ``monitor``: the events it held, in order."""
    from zmq.utils.monitor import recv_monitor_message

    seen = []
    while True:
        try:
            seen.append(recv_monitor_message(monitor, zmq.NOBLOCK)["event"])
        except zmq.Again:
            return seen


def link_events(pc: core.ProtocolCore, events: list[int]) -> list[tuple[Any, str, Any]]:
    """Feed the connection monitor's events to ``pc``; what failed, for the shell to
    deliver."""
    failed: list[tuple[Any, str, Any]] = []
    for event in events:
        if event == zmq.EVENT_DISCONNECTED:
            failed += pc.disconnected()
        else:
            pc.reconnected()
    return failed


def secure_context(ctx: zmq.Context, settings: ConnectionSettings) -> zmq.Context:
    """With ``serverKey``, every socket ``ctx`` makes is a CURVE client of that key (context
    default options), with the client's key pair from ``clientKeyFile`` or a fresh one."""
    if settings.server_key is not None:
        if settings.client_key_file:
            from esnode.transport.security import load_secret_key

            public, secret = load_secret_key(settings.client_key_file)
        else:
            public, secret = zmq.curve_keypair()
        ctx.setsockopt(zmq.CURVE_SERVERKEY, settings.server_key)
        ctx.setsockopt(zmq.CURVE_PUBLICKEY, public)
        ctx.setsockopt(zmq.CURVE_SECRETKEY, secret)
    return ctx


@dataclass(frozen=True, slots=True)
class _Call:
    call: core.Call
    waiter: _Waiter
    timeout: float | None
    inbox: Any


@dataclass(frozen=True, slots=True)
class _Credit:
    subscription: int
    n: int


@dataclass(frozen=True, slots=True)
class _Unsubscribe:
    subscription: int
    inbox: queue.SimpleQueue


@dataclass(frozen=True, slots=True)
class _Connect:
    endpoint: str
    waiter: _Waiter


@dataclass(frozen=True, slots=True)
class _Close:
    pass


_Command = _Call | _Credit | _Unsubscribe | _Connect | _Close
"""What callers hand the I/O thread."""


class _Waiter:
    """A one-shot result slot: a pre-acquired lock released once by the I/O thread."""

    __slots__ = ("_lock", "value", "error")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.value: Any = None
        self.error: EsError | None = None

    def set(self, kind: str, payload: Any) -> None:
        if kind == core.OK:
            self.value = payload
        else:
            self.error = payload
        self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        return self._lock.acquire(timeout=-1 if timeout is None else timeout)


def probe(ctx: zmq.Context, effect: core.Probe) -> Any:
    """Ask ``effect.endpoint`` one question on a throwaway socket (discovery)."""
    sock = ctx.socket(zmq.DEALER)
    try:
        monitor = watch_disconnects(sock, GONE_EVENTS)
        configure_socket(sock, effect.endpoint)
        exchange = core.ProbeExchange(effect)
        sock.send(exchange.frame)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        deadline = time.monotonic() + effect.timeout
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(int(left * 1000) + 1))
            if sock in ready and exchange.answer(sock.recv()):
                return exchange.result
            if monitor in ready and monitor_events(monitor) and not sock.poll(0):
                raise exchange.refused()
        raise exchange.timeout()
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)


class Client(Operations):
    """A connection to an esnode node. Thread-safe; use as a context manager or ``close()``.

    Create it with ``esnode.client.connect(...)``.
    """

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self._cluster = core.ClusterState(settings)
        self._opened = weakref.WeakSet()
        self._core = core.ProtocolCore("", settings.keepalive_interval,
                                       settings.keepalive_timeout, self._cluster.stats)
        self._switch_lock = threading.Lock()
        self._ctx = secure_context(zmq.Context(), settings)
        self._queue: deque = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._awake = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        try:
            self._thread = threading.Thread(target=self._io_main, name="esnode-client-io",
                                            daemon=True)
            self._thread.start()
            self._ready.wait()
            with self._switch_lock:
                self._drive(core.reconnect(self._cluster, settings, 0, "connect"))
        except BaseException:
            self.close()
            raise

    # --- operations beyond esnode.client._api.Operations ------------------------------------
    def iter_stream(self, stream: str, from_version: int = 0, backwards: bool = False,
                    limit: int | None = None, page_size: int = 500,
                    *, timeout: float | None = None) -> Iterator[RecordedEvent]:
        """Every event of a stream (or the first ``limit``), read page by page."""
        return self._pages(lambda start, n: self.read_stream(
            stream, start, n, backwards, timeout=timeout), from_version, limit, page_size)

    def iter_all(self, from_position: int = 0, backwards: bool = False,
                 limit: int | None = None, page_size: int = 1000,
                 *, filter: EventFilter | None = None, timeout: float | None = None) -> Iterator[RecordedEvent]:
        """Every event of ``$all`` (or the first ``limit``), read page by page."""
        return self._pages(lambda start, n: self.read_all(start, n, backwards, filter=filter,
                                                          timeout=timeout),
                           from_position, limit, page_size)

    def subscribe(self, stream: str, from_: int | str = FROM_START, *,
                  window: int = core.DEFAULT_SUBSCRIPTION_WINDOW,
                  on_caught_up: Callable[[int | None], Any] | None = None,
                  filter: EventFilter | None = None,
                  checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL,
                  on_checkpoint: Callable[[int], Any] | None = None,
                  timeout: float | None = None) -> Subscription:
        """Catch-up subscription to a stream or ``"$all"``: first the history after
        ``from_`` (``"start"``, ``"end"`` or a version/position, exclusive), then live events.
        Iterate it; ``caught_up`` turns True (and ``on_caught_up`` is called) once the
        history is delivered (again after each resubscription). At most ``window`` events
        are in flight or buffered. ``filter`` (``$all`` only) selects events on the node;
        ``on_checkpoint(position)`` is then called every ``checkpoint_interval`` scanned
        records, so you can save your place even when nothing matches."""
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        state = self._drive(core.open_subscription(
            stream, from_, window, on_caught_up, timeout or self.settings.operation_timeout,
            self.settings, self._cluster, filter, checkpoint_interval, on_checkpoint), inbox)
        return self._track(Subscription(self, state, inbox))

    def subscribe_group(self, stream: str, group: str, *,
                        window: int = core.DEFAULT_GROUP_WINDOW,
                        timeout: float | None = None) -> PersistentSubscription:
        """Join a persistent subscription group as one of its competing consumers (on the
        leader: a follower sends the client there). Iterate it for ``GroupEvent``s; ack or
        nack each. At most ``window`` events are delivered and not yet settled."""
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        state = self._drive(core.open_group(stream, group, window,
                                            timeout or self.settings.operation_timeout,
                                            self.settings, self._cluster), inbox)
        return self._track(PersistentSubscription(self, state, inbox))

    def close(self) -> None:
        """Fail what is in flight, end subscriptions, close the socket and stop the thread."""
        if self._closed:
            return
        self._closed = self._cluster.closed = True
        if self._thread is not None:
            self._queue.append(_Close())
            self._wake()
            self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<esnode Client {self.endpoint or '?'}{' closed' if self._closed else ''}>"

    # --- plumbing ---------------------------------------------------------------------------
    def _op(self, call: core.Call, timeout: float | None, inbox: Any = None) -> Any:
        if timeout is None:
            timeout = self.settings.operation_timeout
        return self._drive(core.perform(call, timeout, self.settings, self._cluster), inbox)

    def _drive(self, flow: core.Flow, inbox: Any = None) -> Any:
        """Perform a flow's effects until it returns."""
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
                    value = self._roundtrip(effect.call, effect.timeout, inbox)
                elif kind is core.Sleep:
                    time.sleep(effect.seconds)
                elif kind is core.Probe:
                    value = probe(self._ctx, effect)
                elif kind is core.Rediscover:
                    with self._switch_lock:
                        self._drive(core.reconnect(self._cluster, self.settings, *effect))
                elif kind is core.Connect:
                    self._switch(effect.endpoint)
                else:
                    value = resolve(effect)
            except EsError as exc:
                error = exc

    def _roundtrip(self, call: core.Call, timeout: float | None, inbox: Any) -> Any:
        if self._closed:
            raise ClientClosed(f"{call.what or call.op}: the client is closed")
        waiter = _Waiter()
        self._queue.append(_Call(call, waiter, timeout, inbox))
        if not self._awake:
            self._wake()
        if not waiter.wait(None if timeout is None else timeout + _GRACE):
            raise OperationTimeout(f"{call.what or call.op}: the client's I/O thread is stuck")
        if waiter.error is not None:
            raise waiter.error
        return waiter.value

    def _switch(self, endpoint: str) -> None:
        """Have the I/O thread replace its socket with one connected to ``endpoint``."""
        if self._closed:
            raise ClientClosed("the client is closed")
        waiter = _Waiter()
        self._queue.append(_Connect(endpoint, waiter))
        self._wake()
        while not waiter.wait(0.5):
            if not self._thread.is_alive():
                raise ClientClosed("the client is closed")
        if waiter.error is not None:
            raise waiter.error

    def _post(self, command: _Command) -> None:
        if not self._closed:
            self._queue.append(command)
            if not self._awake:
                self._wake()

    def _wake(self) -> None:
        self._awake = True
        try:
            os.write(self._wake_w, b"!")
        except (BlockingIOError, OSError):
            pass

    def _pages(self, read: Callable[[int, int], Any], start: int, limit: int | None,
               size: int) -> Iterator[RecordedEvent]:
        delivered = 0
        while start is not None:
            page = read(start, core.page_size(size, delivered, limit))
            for event in page.events[:None if limit is None else limit - delivered]:
                delivered += 1
                yield event
            start = core.next_page(page, delivered, limit, start)

    # --- the I/O thread ---------------------------------------------------------------------
    def _io_main(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)  # not connected until the first "connect"
        sock.setsockopt(zmq.LINGER, 0)
        monitor: zmq.Socket | None = None
        reason = "the client was closed"
        try:
            self._ready.set()
            while (switch := self._io_loop(sock, monitor)) is not None:
                endpoint, waiter = switch.endpoint, switch.waiter
                old = self._core.endpoint
                _deliver(self._core.close(f"the client moved from {old} to {endpoint}"
                                          if old else "connecting", lost=True))
                if monitor is not None:
                    sock.disable_monitor()
                    monitor.close(linger=0)
                sock.close(linger=0)
                sock = self._ctx.socket(zmq.DEALER)
                monitor = watch_disconnects(sock)
                configure_socket(sock, endpoint)
                self._core.endpoint = endpoint
                waiter.set(core.OK, None)
        except BaseException as exc:  # noqa: BLE001 - report, fail everyone, stop
            log.exception("esnode client I/O thread crashed")
            reason = f"the client's I/O thread crashed ({exc!r})"
        finally:
            self._closed = self._cluster.closed = True
            self._ready.set()
            _deliver(self._core.close(reason))
            for cmd in self._queue:
                if type(cmd) is _Call:
                    cmd.waiter.set(core.ERROR, ClientClosed(f"{cmd.call.what}: {reason}"))
                elif type(cmd) is _Connect:
                    cmd.waiter.set(core.ERROR, ClientClosed(reason))
            self._queue.clear()
            if monitor is not None:
                sock.disable_monitor()
                monitor.close(linger=0)
            sock.close(linger=CLOSE_LINGER_MS)

    def _io_loop(self, sock: zmq.Socket, monitor: zmq.Socket | None) -> _Connect | None:
        """Serve ``sock`` until the client closes (None) or a ``connect`` command comes
        (returned: the caller replaces the socket and calls again). ``monitor`` reports the
        node closing the connection."""
        pc = self._core
        commands = self._queue
        pending: list[bytes] = []  # this round's requests
        backlog: deque[list[bytes]] = deque()  # messages the socket could not take yet
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        if monitor is not None:
            poller.register(monitor, zmq.POLLIN)
        monotonic, noblock, again = time.monotonic, zmq.NOBLOCK, zmq.Again
        ok, error = core.OK, core.ERROR
        send, recv = sock.send_multipart, sock.recv
        out = pending.append

        def flush() -> None:
            """Send this round's requests, ``MAX_FRAMES_PER_MESSAGE`` per message."""
            while pending:
                chunk = pending[:MAX_FRAMES_PER_MESSAGE]
                del pending[:len(chunk)]
                if backlog:
                    backlog.append(chunk)
                    continue
                try:
                    send(chunk, noblock)
                except again:
                    backlog.append(chunk)
                    poller.modify(sock, zmq.POLLIN | zmq.POLLOUT)

        while True:
            deadline = pc.next_deadline()
            wait_ms = None if deadline is None else max(0, (deadline - monotonic()) * 1000)
            if commands:
                wait_ms = 0
            ready = dict(poller.poll(wait_ms))
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
                self._awake = False  # after the read: a wake written from here on is kept
            while commands:
                cmd = commands.popleft()
                kind = type(cmd)
                if kind is _Call:
                    out(pc.start(cmd.call, cmd.waiter, monotonic(), cmd.timeout, cmd.inbox)[1])
                elif kind is _Credit:
                    out(pc.credit(cmd.subscription, cmd.n))
                elif kind is _Unsubscribe:
                    frame = pc.unsubscribe(cmd.subscription)
                    if frame is not None:
                        out(frame)
                    cmd.inbox.put((core.CLOSED, None))
                elif kind is _Connect:
                    flush()
                    return cmd
                elif kind is _Close:
                    for sub in pc.subscriptions:
                        frame = pc.unsubscribe(sub)
                        if frame is not None:
                            out(frame)
                    flush()
                    while backlog:
                        try:
                            send(backlog.popleft(), noblock)
                        except again:
                            break
                    return None
            flush()
            if backlog and ready.get(sock, 0) & zmq.POLLOUT:
                while backlog:
                    try:
                        send(backlog[0], noblock)
                    except again:
                        break
                    backlog.popleft()
                if not backlog:
                    poller.modify(sock, zmq.POLLIN)
            while True:
                try:
                    frame = recv(noblock)
                except again:
                    break
                done = pc.receive(frame)
                if done is not None:
                    target, kind, payload = done
                    if kind == ok or kind == error:
                        target.set(kind, payload)
                    else:
                        target.put((kind, payload))
            if monitor is not None and monitor in ready:
                _deliver(link_events(pc, monitor_events(monitor)))
            if pc.gone is not None and len(pc):  # started on a connection known to be down
                _deliver(pc.disconnected())
            if pc.lost:
                _deliver(pc.take_lost())
            if deadline is not None and monotonic() >= deadline:
                failed, frame = pc.expire(monotonic())
                _deliver(failed)
                if frame is not None:
                    out(frame)
                    flush()


def _deliver(done: list[tuple[Any, str, Any]]) -> None:
    """Hand failures to their waiters and ``LOST``/``CLOSED`` to subscription queues."""
    for target, kind, payload in done:
        if kind == core.ERROR:
            target.set(kind, payload)
        else:
            target.put((kind, payload))


def _wait_item(inbox: queue.SimpleQueue, deadline: float | None) -> Any:
    """The next push from a subscription's inbox; None once ``deadline`` (monotonic; None:
    never) has passed."""
    try:
        return inbox.get(timeout=None if deadline is None
                         else max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        return None


class _Consumer:
    """What both consumer kinds share: ``get`` (coming back after a loss with
    ``_come_back``: ``resubscribe`` or ``rejoin``), ``close()`` (unsubscribe or leave the
    group: iteration ends once the events already received are consumed) and the context
    manager."""

    _client: Client
    _state: Any
    _inbox: queue.SimpleQueue
    _closing: bool
    _come_back: Callable

    def get(self, timeout: float | None = None) -> Any:
        """The next event, waiting at most ``timeout`` seconds (None: as long as it takes);
        None on timeout or once the subscription is closed."""
        state, client = self._state, self._client
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            event, credit = state.take()
            if event is core.RESUME:
                client._drive(type(self)._come_back(state, client.settings, client._cluster),
                              self._inbox)
                continue
            if credit:
                client._post(_Credit(state.id, credit))
            if event is core.END:
                return None
            if event is not None:
                return event
            item = _wait_item(self._inbox, deadline)
            if item is None:
                return None
            state.feed(*item)
            while not self._inbox.empty():  # everything that arrived: a loss behind the
                state.feed(*self._inbox.get_nowait())  # events makes them stale

    def close(self) -> None:
        self._closing = True
        if self._client._closed:
            self._inbox.put((core.CLOSED, None))
        else:
            self._client._post(_Unsubscribe(self._state.id, self._inbox))

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscription(_Consumer, SubscriptionView):
    """An iterator of ``RecordedEvent``s; ends (StopIteration) after ``close()``, raises the
    node's error if the node drops it (e.g. ``StreamDeleted``). ``caught_up`` says the
    history has been delivered; ``last_event`` is the last event handed out."""

    def __init__(self, client: Client, state: core.SubscriptionState,
                 inbox: queue.SimpleQueue) -> None:
        self._client = client
        self._state = state
        self._inbox = inbox

    _come_back = staticmethod(core.resubscribe)

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> RecordedEvent:
        event = self.get()
        if event is None or event is core.END:
            raise StopIteration
        return event

class PersistentSubscription(_Consumer, GroupView):
    """A consumer of a persistent subscription group: an iterator of ``GroupEvent``s (the
    event and its retry count). ``ack`` returns once the node made the ack durable: an
    event whose ack returned is never delivered to the group again."""

    def __init__(self, client: Client, state: core.GroupState,
                 inbox: queue.SimpleQueue) -> None:
        self._client, self._state, self._inbox = client, state, inbox

    _come_back = staticmethod(core.rejoin)

    def __iter__(self) -> PersistentSubscription:
        return self

    def __next__(self) -> core.GroupEvent:
        event = self.get()
        if event is None:
            raise StopIteration
        return event

    def ack(self, *events: Any, timeout: float | None = None) -> tuple[int, ...]:
        """Acknowledge events (``GroupEvent``s, events or positions), durably; returns the
        positions whose acks the node confirmed. Events delivered before a reconnection are
        left out (not sent): the group delivers them again."""
        return self._settle(events, lambda sub, positions: core.group_ack(sub, positions),
                            timeout)

    def nack(self, *events: Any, action: str = "retry", reason: str = "",
             timeout: float | None = None) -> tuple[int, ...]:
        """Give events back: ``retry`` (again, retry count + 1), ``park`` (to the parked
        stream), ``skip`` (settle without processing) or ``stop`` (also leave the group)."""
        return self._settle(events, lambda sub, positions: core.group_nack(
            sub, positions, action, reason), timeout)

    def _settle(self, events: tuple, call: Callable,
                timeout: float | None) -> tuple[int, ...]:
        positions = self._state.settle(events)
        if positions:
            self._client._op(call(self._state.id, positions), timeout)
        return positions



def connect(target: str | ConnectionSettings = "tcp://127.0.0.1:2113", *,
            timeout: float | None = None, **options: Any) -> Client:
    """Connect to a node: ``target`` is a connection string (``tcp://host:port``,
    ``host:port`` or ``esnode://host:port,...?option=value``) or ``ConnectionSettings``.
    ``timeout`` is the default per-operation timeout in seconds; ``options`` override any
    other ``ConnectionSettings`` field. Raises ``Unavailable`` if no node answers."""
    if timeout is not None:
        options["operation_timeout"] = timeout
    return Client(settings_from(target, **options))
