"""The node's HTTP face: an aiohttp server on its own thread and asyncio loop.

It speaks to the node's actors exactly as the ZeroMQ transport does: each HTTP request becomes
the same typed request (``core.messages``) in a ``ClientEnvelope`` addressed from
``HTTP_PEER``; the envelopes of one loop iteration go to the node in one batch (``submit``,
the composition root's client handler: writes straight to the writer on the leader, the rest
to the gateway), and replies come back through the transport's ``send_client``, which
``ReplyRouter`` splits off for this face and hands over with one
``loop.call_soon_threadsafe`` per batch. No request ever blocks on an actor.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from esnode.core import messages as m
from esnode.core.types import NotReady

log = logging.getLogger("esnode.http")

HTTP_PEER = b"\x00esnode-http"
PRINCIPAL: contextvars.ContextVar = contextvars.ContextVar("esnode_principal", default=None)
"""Who the HTTP request being handled comes from (set by the API's middleware from HTTP
Basic): every request the handler sends carries it to the node's access gate."""
"""The reply address of every HTTP request. ZeroMQ's own peer ids are 5 bytes and ids a
client sets cannot start with a zero byte, so no ZeroMQ client can ever have this one."""


class ReplyRouter:
    """Wraps the transport: replies for ``HTTP_PEER`` go to the HTTP face, the rest on to
    the transport. Every other attribute is the transport's."""

    def __init__(self, transport: Any, deliver: Callable[[list], None]) -> None:
        self._transport = transport
        self._deliver = deliver

    def send_client(self, replies: Iterable[tuple[bytes, int, Any]]) -> None:
        replies = replies if isinstance(replies, list) else list(replies)
        mine = [r for r in replies if r[0] == HTTP_PEER]
        if not mine:
            self._transport.send_client(replies)
            return
        self._deliver(mine)
        if len(mine) < len(replies):
            self._transport.send_client([r for r in replies if r[0] != HTTP_PEER])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpFace:
    """Owns the loop thread, the aiohttp runner and the request/reply correlation.

    ``app_factory(face)`` returns the ``web.Application`` (``httpapi.api.build_app``); other
    routes (a dashboard, metrics) are added there. ``call`` sends one request and awaits its
    reply; ``subscribe`` opens a subscription whose pushes go to a callback (long polls)."""

    def __init__(self, bind: tuple[str, int], submit: Callable[[list], None],
                 app_factory: Callable[[HttpFace], web.Application], *,
                 idle_timeout: float = 15.0, max_field_size: int = 8190,
                 max_line_size: int = 8190, ssl_context: ssl.SSLContext | None = None,
                 users: Any = None) -> None:
        self.bind = bind
        self.users = users
        """``core.users.LiveUsers`` when the node authenticates (HTTP Basic), else None."""
        self.ssl_context = ssl_context
        self.scheme = "https" if ssl_context is not None else "http"
        self._submit = submit
        self._app_factory = app_factory
        self._idle_timeout = idle_timeout
        self._max_field_size = max_field_size
        self._max_line_size = max_line_size
        self._corr = itertools.count(1)
        self._once: dict[int, asyncio.Future] = {}
        self._streams: dict[int, Callable[[object], None]] = {}
        self._pending: list[m.ClientEnvelope] = []
        self.accepting = True
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.port = bind[1]

    # --- lifecycle (any thread) --------------------------------------------------------------
    def start(self) -> None:
        """Bind and serve on a new thread; returns once bound (raises if it cannot)."""
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._start_error is not None:
            raise self._start_error
        log.info("HTTP API on %s://%s:%d", self.scheme, self.bind[0], self.port)

    def _run(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._start_error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    async def _serve(self) -> None:
        app = self._app_factory(self)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=self._idle_timeout,
            shutdown_timeout=2.0,
            max_field_size=self._max_field_size, max_line_size=self._max_line_size)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind[0], self.bind[1], reuse_address=True,
                           backlog=1024, ssl_context=self.ssl_context)
        await site.start()
        sockets = self._runner.addresses
        if sockets:
            self.port = sockets[0][1]

    def stop_accepting(self) -> None:
        """The node is stopping: new requests get 503 (health checks too, so balancers
        move away)."""
        self.accepting = False

    def stop(self) -> None:
        """Fail what still waits, close the listener and connections, join the thread."""
        loop = self.loop
        if loop is None or self._thread is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(self._fail_all)
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(15)

    def _fail_all(self) -> None:
        error = m.ErrorReply(NotReady("the node is shutting down"))
        for future in self._once.values():
            if not future.done():
                future.set_result(error)
        self._once.clear()
        for callback in list(self._streams.values()):
            callback(m.SubscriptionDropped(error.error))
        self._streams.clear()

    # --- replies from the actors (any thread) -----------------------------------------------
    def deliver(self, replies: list[tuple[bytes, int, Any]]) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._dispatch, replies)
            except RuntimeError:
                pass  # the loop closed meanwhile: nobody waits any more

    def _dispatch(self, replies: list[tuple[bytes, int, Any]]) -> None:
        once, streams = self._once, self._streams
        for _, corr, message in replies:
            future = once.pop(corr, None)
            if future is not None:
                if not future.done():
                    future.set_result(message)
                continue
            callback = streams.get(corr)
            if callback is not None:
                callback(message)

    # --- requests (on the loop) --------------------------------------------------------------
    def _send(self, corr: int, request: object) -> None:
        if not self._pending:
            self.loop.call_soon(self._flush)
        self._pending.append(m.ClientEnvelope(HTTP_PEER, corr, request, PRINCIPAL.get()))

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._submit(batch)

    async def call(self, request: object, timeout: float) -> object:
        """Send one typed request; its reply (``Reply``, ``ErrorReply`` or
        ``RelayedReply``), or ``TimeoutError`` after ``timeout`` seconds."""
        if not self.accepting:  # stopping: the actors may already be gone
            return m.ErrorReply(NotReady("the node is shutting down"))
        corr = next(self._corr)
        future = self.loop.create_future()
        self._once[corr] = future
        self._send(corr, request)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._once.pop(corr, None)

    def subscribe(self, request: m.Subscribe, callback: Callable[[object], None]) -> int:
        """Open a subscription; every reply and push for it goes to ``callback`` (on the
        loop) until ``unsubscribe``."""
        corr = next(self._corr)
        self._streams[corr] = callback
        self._send(corr, request)
        return corr

    def unsubscribe(self, subscription: int) -> None:
        if self._streams.pop(subscription, None) is not None:
            self._send(next(self._corr), m.Unsubscribe(subscription))
