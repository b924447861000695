"""One connection's bookkeeping, without I/O: correlation ids, deadlines, the heartbeat,
and where each reply or subscription push goes."""

from __future__ import annotations

import heapq
import itertools
import logging
from typing import TYPE_CHECKING, Any

import msgpack
from esnode.client._calls import Call, GroupEvent, _event, _events, _ignore, ping
from esnode.client.errors import (
    ClientClosed,
    ConnectionLost,
    EsError,
    OperationTimeout,
    OutcomeUnknown,
    ProtocolError,
    WriteConnectionLost,
    WriteTimeout,
    error_from_body,
)
from esnode.transport.codec import encode_request

if TYPE_CHECKING:
    from esnode.client._cluster import ClientStats

log = logging.getLogger("esnode.client")

_RUN_OPS = frozenset(("ping", "subscribe", "connect_group", "cluster_info"))
"""Replies that carry the node's incarnation."""

# --- one connection ----------------------------------------------------------------------------
OK, ERROR, EVENTS, CAUGHT_UP, DROPPED, CLOSED = "ok", "error", "events", "caught_up", \
    "dropped", "closed"
CHECKPOINT = "checkpoint"
GROUP_EVENTS = "group_events"
LOST = "lost"
"""Push kind (made by the client, not the node): the subscription's connection is gone (the
node stopped answering heartbeats, or the client moved to another node); resubscribe."""

_unpackb = msgpack.unpackb
"""Replies are unpacked with ``use_list=False``: arrays become tuples, which the garbage
collector stops tracking once they hold only atoms (an event's nine fields), where lists stay
tracked and reach the oldest generation while a page is being built: full collections of the
client's heap were ~18 % of a ``$all`` scan (docs/performance.md). Where an API hands out a
user's own arrays (stream metadata) they are made lists again."""


class ProtocolCore:
    """Requests in flight on one connection, and where pushes go. Not thread-safe: exactly
    one thread (or one event loop) calls it — the one that owns the socket.

    **Heartbeat.** With ``keepalive_interval`` > 0, while requests or subscriptions are open,
    ``expire`` checks every ``keepalive_interval`` seconds whether anything arrived since the
    last check; if not, it returns a ``ping`` frame to send. If that ping is not answered in
    ``keepalive_timeout`` the node is taken for dead: everything in flight fails (reads with
    ``ConnectionLost``, writes with ``OutcomeUnknown``) and subscriptions get ``LOST``, so
    the flows re-discover. (A ZeroMQ DEALER reconnects silently and never reports a dead
    peer, so silence is the only signal.)"""

    def __init__(self, endpoint: str = "", keepalive_interval: float = 0.0,
                 keepalive_timeout: float = 1.0, stats: ClientStats | None = None) -> None:
        self.endpoint = endpoint
        self._corrs = itertools.count(1)
        self._pending: dict[int, tuple[Call, Any]] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._subs: dict[int, Any] = {}
        self._groups: set[int] = set()  # which of them are group consumers
        self._keepalive = keepalive_interval
        self._keepalive_timeout = keepalive_timeout
        self._stats = stats
        self._heard = False
        self._check_at: float | None = None
        self._heartbeat: int | None = None
        self.incarnation: str | None = None
        """The run of the node this connection talks to, once a reply said it."""
        self.gone: str | None = None
        """Why the connection is down (the node closed it), until it is up again."""
        self.lost: list[tuple[Any, str, Any]] = []

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def subscriptions(self) -> list[int]:
        """Ids of the subscriptions whose pushes are routed on this connection."""
        return list(self._subs)

    def start(self, call: Call, handle: Any, now: float, timeout: float | None,
              inbox: Any = None) -> tuple[int, bytes]:
        """Track ``call`` (answered through ``handle``; pushes of a subscription go to
        ``inbox``) and return its correlation id and frame."""
        corr = next(self._corrs)
        self._pending[corr] = (call, handle)
        if timeout is not None:
            heapq.heappush(self._deadlines, (now + timeout, corr))
        if inbox is not None:
            self._subs[corr] = inbox
            if call.op == "connect_group":
                self._groups.add(corr)
        if self._check_at is None and handle is not None and self._keepalive:
            self._check_at = now + self._keepalive
        return corr, encode_request(call.op, corr, call.args)

    def credit(self, subscription: int, n: int) -> bytes:
        """A ``credit`` message (it has no reply)."""
        return encode_request("credit", next(self._corrs), {"subscription": subscription, "n": n})

    def unsubscribe(self, subscription: int) -> bytes | None:
        """Stop routing the subscription's pushes; the frame to send (None if it had ended)."""
        if self._subs.pop(subscription, None) is None:
            return None
        op = "unsubscribe"
        if subscription in self._groups:
            self._groups.discard(subscription)
            op = "leave_group"
        return self.start(Call(op, {"subscription": subscription}, _ignore), None, 0.0,
                          None)[1]

    def forget(self, corr: int) -> None:
        """The caller stopped waiting (e.g. its task was cancelled)."""
        self._pending.pop(corr, None)
        self._subs.pop(corr, None)

    def receive(self, frame: bytes) -> tuple[Any, str, Any] | None:
        """Decode one frame from the node into ``(handle, OK|ERROR, result|error)`` or
        ``(inbox, EVENTS|CAUGHT_UP|DROPPED, payload)``; None when nobody waits for it (a late
        reply after a timeout, or garbage)."""
        self._heard = True
        try:
            corr, kind, body = _unpackb(frame, raw=False, use_list=False)
        except Exception:  # noqa: BLE001 - anything malformed is dropped, never fatal
            return None
        if kind == OK or kind == ERROR:
            if corr == self._heartbeat:
                self._heartbeat = None
            entry = self._pending.pop(corr, None)
            self._prune()
            if entry is None:
                return None
            call, handle = entry
            if kind == OK and call.op in _RUN_OPS and type(body) is dict:
                self._check_run(body.get("incarnation"), corr)
            if handle is None:
                return None
            if kind == OK:
                try:
                    return handle, OK, call.decode(body)
                except Exception as exc:  # noqa: BLE001
                    return handle, ERROR, ProtocolError(
                        f"malformed reply to {call.what or call.op}: {exc!r}")
            if call.op == "subscribe" or call.op == "connect_group":
                self._subs.pop(corr, None)
                self._groups.discard(corr)
            return handle, ERROR, _error(body)
        inbox = self._subs.get(corr)
        if inbox is None:
            return None
        if kind == EVENTS:
            try:
                return inbox, EVENTS, _events(body)
            except TypeError:
                return None
        if kind == CAUGHT_UP:
            return inbox, CAUGHT_UP, body.get("position") if type(body) is dict else None
        if kind == GROUP_EVENTS:
            try:
                return inbox, GROUP_EVENTS, [GroupEvent(_event(e[:9]), e[9]) for e in body]
            except (TypeError, IndexError):
                return None
        if kind == CHECKPOINT:
            position = body.get("position") if type(body) is dict else None
            return (inbox, CHECKPOINT, position) if type(position) is int else None
        if kind == DROPPED:
            del self._subs[corr]
            return inbox, DROPPED, _error(body)
        return None

    def _check_run(self, incarnation: Any, corr: int) -> None:
        """A node that answers with another incarnation than before restarted at the same
        address (faster than the heartbeat noticed): what was in flight on the old run is
        gone. It all fails into ``lost`` (subscriptions get ``LOST``, so they resubscribe),
        except the request answered now."""
        if incarnation is None or incarnation == self.incarnation:
            return
        if self.incarnation is not None:
            inbox, check_at = self._subs.pop(corr, None), self._check_at
            old = self.incarnation
            if self._stats is not None:
                self._stats.node_restarts += 1
            log.warning("esnode client: %s restarted (run %s, now %s)",
                        self.endpoint or "the node", old, incarnation)
            self.lost.extend(self.close(
                f"{self.endpoint or 'the node'} restarted (run {old}, now {incarnation}): "
                "what was in flight on its previous run is gone", lost=True))
            if inbox is not None:
                self._subs[corr] = inbox
                self._check_at = check_at
        self.incarnation = incarnation

    def disconnected(self) -> list[tuple[Any, str, Any]]:
        """The node closed the TCP connection (a killed process closes its connections at
        once): fail what is in flight as lost now, rather than wait for the heartbeat; until
        ``reconnected``, so will whatever starts next (call this again after starting it)."""
        reason = f"{self.endpoint or 'the node'} closed the connection"
        failed: list[tuple[Any, str, Any]] = []
        if self._pending or self._subs:
            log.warning("esnode client: %s; taking it for gone", reason)
            failed = self.close(reason, lost=True)
        self.gone = reason
        return failed

    def reconnected(self) -> None:
        """The connection is up again (the node restarted at the same address)."""
        self.gone = None

    def take_lost(self) -> list[tuple[Any, str, Any]]:
        """What a node restart failed (see ``_check_run``), for the shell to deliver."""
        lost, self.lost = self.lost, []
        return lost

    def _prune(self) -> None:
        heap, pending = self._deadlines, self._pending
        while heap and heap[0][1] not in pending:
            heapq.heappop(heap)

    def next_deadline(self) -> float | None:
        """When ``expire`` must run next (a request's deadline or a heartbeat check)."""
        self._prune()
        first = self._deadlines[0][0] if self._deadlines else None
        check = self._check_at
        if check is None:
            return first
        return check if first is None or check < first else first

    def expire(self, now: float) -> tuple[list[tuple[Any, str, Any]], bytes | None]:
        """Fail every request whose deadline has passed, as ``(handle, ERROR, error)``
        (and, when a heartbeat went unanswered, everything else too, with ``(inbox, LOST,
        error)`` for subscriptions); the second item is a heartbeat ping frame to send, or
        None."""
        failed: list[tuple[Any, str, Any]] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, corr = heapq.heappop(heap)
            entry = self._pending.pop(corr, None)
            if entry is None:
                continue
            if corr == self._heartbeat:
                self._heartbeat = None
                if self._stats is not None:
                    self._stats.heartbeat_failures += 1
                reason = (f"{self.endpoint or 'the node'} did not answer a heartbeat within "
                          f"{self._keepalive_timeout:g}s")
                log.warning("esnode client: %s; taking it for dead", reason)
                return failed + self.close(reason, lost=True), None
            self._subs.pop(corr, None)
            call, handle = entry
            if handle is not None:
                failed.append((handle, ERROR, self._timeout_error(call)))
        frame = None
        if self._check_at is not None and self._check_at <= now:
            if not self._pending and not self._subs:
                self._check_at = None
            else:
                self._check_at = now + self._keepalive
                if self._heard:
                    self._heard = False
                elif self._heartbeat is None:
                    self._heartbeat, frame = self.start(ping(), None, now,
                                                        self._keepalive_timeout)
        return failed, frame

    def _timeout_error(self, call: Call) -> EsError:
        where = f" from {self.endpoint}" if self.endpoint else ""
        if call.write:
            return WriteTimeout(f"{call.what} got no answer{where} in time: it may or may not "
                                "have happened (retrying an append with the same event ids is "
                                "safe)")
        return OperationTimeout(f"{call.what or call.op} got no answer{where} in time")

    def close(self, reason: str, lost: bool = False) -> list[tuple[Any, str, Any]]:
        """Fail everything in flight and end every subscription: ``(handle, ERROR, error)``
        and ``(inbox, CLOSED or LOST, error)``, for the shell to deliver. Writes fail with an
        ``OutcomeUnknown`` (``WriteTimeout`` when the client closes); reads with
        ``ClientClosed``, or ``ConnectionLost`` when ``lost`` (the connection is gone or
        replaced, the client is not closing: the flows retry)."""
        out: list[tuple[Any, str, Any]] = []
        read_error = ConnectionLost if lost else ClientClosed
        for call, handle in self._pending.values():
            if handle is None:
                continue
            if call.write:
                cls = WriteConnectionLost if lost else WriteTimeout
                error = cls(f"{call.what}: {reason}; it may or may not have happened")
            else:
                error = read_error(f"{call.what or call.op}: {reason}")
            out.append((handle, ERROR, error))
        kind = LOST if lost else CLOSED
        out.extend((inbox, kind, ConnectionLost(reason)) for inbox in self._subs.values())
        self._pending.clear()
        self._subs.clear()
        self._groups.clear()
        self._deadlines.clear()
        self._heartbeat = self._check_at = None
        self._heard = False
        self.incarnation = None
        self.gone = None
        return out


def _error(body: Any) -> EsError:
    if type(body) is dict:
        return error_from_body(body)
    return ProtocolError(f"malformed error from the node: {body!r}")


