"""The client's protocol, without I/O: shared by the threaded and the asyncio client.

Three pieces, none of which owns a socket, a thread, a clock or an event loop:

* **Calls** (``append(...)``, ``read_stream(...)``, ...): build a request (validated with the
  same rules as the node, ``core.messages``) together with the decoder of its reply.
* ``ProtocolCore``: one connection's bookkeeping. ``start`` gives a request a correlation id,
  a deadline and its wire frame; ``receive`` turns a frame from the node into one completion
  (a typed result or a typed error for a waiting handle) or one subscription push;
  ``expire`` fails what ran past its deadline (``WriteTimeout`` for writes, else
  ``OperationTimeout``). Handles and inboxes are opaque: each shell uses its own futures.
* ``SubscriptionState``: the consumer side of a subscription: buffer, caught-up marker, end,
  and credit (granted back as the user consumes, so at most ``window`` events are ever in
  flight or buffered).

And the **flows** — generators that yield effects (``Request``, ``Probe``, ``Sleep``) which a
shell performs and sends (or throws) back: the retry policy of one operation and discovery of
a node to talk to. The cluster-aware behaviour (issue 5: re-discovery, failover) belongs
here, so both flavours get it at once.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Generator, Iterable
from typing import Any, NamedTuple

import msgpack

from esnode.client.errors import (
    ClientClosed,
    EsError,
    NoQuorum,
    NotReady,
    OperationTimeout,
    ProtocolError,
    Unavailable,
    WriteTimeout,
    error_from_body,
)
from esnode.client.model import ClusterInfo, Pong
from esnode.client.settings import ConnectionSettings
from esnode.core import messages as m
from esnode.core.types import (
    ANY,
    AllSlice,
    AppendSuccess,
    DeleteSuccess,
    EventData,
    RecordedEvent,
    StreamMetadata,
    StreamSlice,
)
from esnode.transport.codec import encode_request

DEFAULT_SUBSCRIPTION_WINDOW = 1000
"""Events a subscription may have in flight or buffered before the consumer takes them."""


# --- calls --------------------------------------------------------------------------------------
class Call(NamedTuple):
    """One request: ``op`` and ``args`` go on the wire; ``decode`` turns the ``ok`` body into
    the typed result; ``write`` says an unanswered call has an unknown outcome; ``what``
    names it in error messages."""

    op: str
    args: dict
    decode: Callable[[Any], Any]
    write: bool = False
    what: str = ""


_event = RecordedEvent._make


def _events(raw: list) -> list[RecordedEvent]:
    return [_event(e) for e in raw]


def _append_success(body: dict) -> AppendSuccess:
    return AppendSuccess(body["first_version"], body["last_version"], body["position"],
                         body.get("idempotent", False))


def _leader(args: dict, requires_leader: bool) -> dict:
    if requires_leader:
        args["requires_leader"] = True
    return args


def append(stream: str, events: Iterable[EventData] | EventData, expected_version: int = ANY,
           requires_leader: bool = False) -> Call:
    if isinstance(events, EventData):
        events = (events,)
    req = m.Append(stream, expected_version, tuple(events), requires_leader)
    return Call("append", _leader({"stream": stream, "expected_version": expected_version,
                                   "events": req.events}, requires_leader),
                _append_success, True, f"append to {stream!r}")


def read_stream(stream: str, from_version: int = 0, max_count: int = 500,
                backwards: bool = False, requires_leader: bool = False) -> Call:
    m.ReadStream(stream, from_version, max_count, backwards)

    def decode(body: dict) -> StreamSlice:
        return StreamSlice(stream, _events(body["events"]), body["next_version"],
                           body["last_version"], body["is_end"])

    return Call("read_stream", _leader({"stream": stream, "from_version": from_version,
                                        "max_count": max_count, "backwards": backwards},
                                       requires_leader), decode, False, f"read of {stream!r}")


def _all_slice(body: dict) -> AllSlice:
    return AllSlice(_events(body["events"]), body["next_position"], body["is_end"])


def read_all(from_position: int = 0, max_count: int = 1000, backwards: bool = False,
             requires_leader: bool = False) -> Call:
    m.ReadAll(from_position, max_count, backwards)
    return Call("read_all", _leader({"from_position": from_position, "max_count": max_count,
                                     "backwards": backwards}, requires_leader),
                _all_slice, False, "read of $all")


def delete(stream: str, expected_version: int = ANY, tombstone: bool = False,
           requires_leader: bool = False) -> Call:
    m.Delete(stream, expected_version, tombstone)
    return Call("delete", _leader({"stream": stream, "expected_version": expected_version,
                                   "tombstone": tombstone}, requires_leader),
                lambda body: DeleteSuccess(body["position"]), True,
                f"{'tombstone' if tombstone else 'delete'} of {stream!r}")


def get_metadata(stream: str, requires_leader: bool = False) -> Call:
    m.GetMetadata(stream)
    return Call("get_metadata", _leader({"stream": stream}, requires_leader),
                lambda b: StreamMetadata(b["stream"], b["version"], b["metadata"]), False,
                f"metadata read of {stream!r}")


def set_metadata(stream: str, metadata: dict, expected_version: int = ANY,
                 requires_leader: bool = False) -> Call:
    m.SetMetadata(stream, metadata, expected_version)
    return Call("set_metadata", _leader({"stream": stream, "metadata": metadata,
                                         "expected_version": expected_version}, requires_leader),
                _append_success, True, f"metadata write of {stream!r}")


def subscribe(stream: str, from_: int | str = m.FROM_START,
              window: int = DEFAULT_SUBSCRIPTION_WINDOW) -> Call:
    m.Subscribe(stream, from_, window)
    return Call("subscribe", {"stream": stream, "from": from_, "credit": window},
                lambda body: body["subscription"], False, f"subscription to {stream!r}")


def cluster_info() -> Call:
    return Call("cluster_info", {}, ClusterInfo.from_wire, False, "cluster_info")


def ping() -> Call:
    return Call("ping", {}, lambda b: Pong(b["node"], b["state"]), False, "ping")


def _ignore(body: Any) -> None:
    return None


# --- one connection ----------------------------------------------------------------------------
OK, ERROR, EVENTS, CAUGHT_UP, DROPPED, CLOSED = "ok", "error", "events", "caught_up", \
    "dropped", "closed"

_unpackb = msgpack.unpackb


class ProtocolCore:
    """Requests in flight on one connection, and where pushes go. Not thread-safe: exactly
    one thread (or one event loop) calls it — the one that owns the socket."""

    def __init__(self, endpoint: str = "") -> None:
        self.endpoint = endpoint
        self._corrs = itertools.count(1)
        self._pending: dict[int, tuple[Call, Any]] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._subs: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self._pending)

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
        return corr, encode_request(call.op, corr, call.args)

    def credit(self, subscription: int, n: int) -> bytes:
        """A ``credit`` message (it has no reply)."""
        return encode_request("credit", next(self._corrs), {"subscription": subscription, "n": n})

    def unsubscribe(self, subscription: int) -> bytes | None:
        """Stop routing the subscription's pushes; the frame to send (None if it had ended)."""
        if self._subs.pop(subscription, None) is None:
            return None
        return self.start(Call("unsubscribe", {"subscription": subscription}, _ignore), None,
                          0.0, None)[1]

    def forget(self, corr: int) -> None:
        """The caller stopped waiting (e.g. its task was cancelled)."""
        self._pending.pop(corr, None)
        self._subs.pop(corr, None)

    def receive(self, frame: bytes) -> tuple[Any, str, Any] | None:
        """Decode one frame from the node into ``(handle, OK|ERROR, result|error)`` or
        ``(inbox, EVENTS|CAUGHT_UP|DROPPED, payload)``; None when nobody waits for it (a late
        reply after a timeout, or garbage)."""
        try:
            corr, kind, body = _unpackb(frame, raw=False)
        except Exception:  # noqa: BLE001 - anything malformed is dropped, never fatal
            return None
        if kind == OK or kind == ERROR:
            entry = self._pending.pop(corr, None)
            self._prune()
            if entry is None or entry[1] is None:
                return None
            call, handle = entry
            if kind == OK:
                try:
                    return handle, OK, call.decode(body)
                except Exception as exc:  # noqa: BLE001
                    return handle, ERROR, ProtocolError(
                        f"malformed reply to {call.what or call.op}: {exc!r}")
            if call.op == "subscribe":
                self._subs.pop(corr, None)
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
        if kind == DROPPED:
            del self._subs[corr]
            return inbox, DROPPED, _error(body)
        return None

    def _prune(self) -> None:
        heap, pending = self._deadlines, self._pending
        while heap and heap[0][1] not in pending:
            heapq.heappop(heap)

    def next_deadline(self) -> float | None:
        self._prune()
        return self._deadlines[0][0] if self._deadlines else None

    def expire(self, now: float) -> list[tuple[Any, EsError]]:
        """Fail every request whose deadline has passed."""
        failed = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, corr = heapq.heappop(heap)
            entry = self._pending.pop(corr, None)
            if entry is None:
                continue
            self._subs.pop(corr, None)
            call, handle = entry
            if handle is not None:
                failed.append((handle, self._timeout_error(call)))
        return failed

    def _timeout_error(self, call: Call) -> EsError:
        where = f" from {self.endpoint}" if self.endpoint else ""
        if call.write:
            return WriteTimeout(f"{call.what} got no answer{where} in time: it may or may not "
                                "have happened (retrying an append with the same event ids is "
                                "safe)")
        return OperationTimeout(f"{call.what or call.op} got no answer{where} in time")

    def close(self, reason: str) -> tuple[list[tuple[Any, EsError]], list[Any]]:
        """Fail everything in flight (writes with ``OutcomeUnknown``) and return the inboxes
        of the live subscriptions, which the shell ends."""
        failed = []
        for call, handle in self._pending.values():
            if handle is not None:
                failed.append((handle, WriteTimeout(f"{call.what}: {reason}; it may or may not "
                                                    "have happened") if call.write
                               else ClientClosed(f"{call.what or call.op}: {reason}")))
        inboxes = list(self._subs.values())
        self._pending.clear()
        self._subs.clear()
        self._deadlines.clear()
        return failed, inboxes


def _error(body: Any) -> EsError:
    if type(body) is dict:
        return error_from_body(body)
    return ProtocolError(f"malformed error from the node: {body!r}")


# --- the consumer side of a subscription ----------------------------------------------------
END = object()
"""``SubscriptionState.next_event`` result: the subscription was closed by the client."""


class SubscriptionState:
    """Buffer, markers and credit of one subscription, driven from the consumer's side."""

    def __init__(self, subscription: int, window: int,
                 on_caught_up: Callable[[int | None], Any] | None = None) -> None:
        self.id = subscription
        self.window = window
        self.caught_up = False
        self.caught_up_position: int | None = None
        self.last_event: RecordedEvent | None = None
        self.error: EsError | None = None
        self.ended = False
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
            else:
                self.ended = True
                self.error = payload if kind == DROPPED else None
                buf.clear()
        if self.ended:
            if self.error is not None:
                raise self.error
            return END
        return None

    def take(self) -> tuple[RecordedEvent | object | None, int]:
        """``next_event()`` and the credit to grant back now (0: none yet)."""
        event = self.next_event()
        return event, self.credit_due()

    def credit_due(self) -> int:
        """Credit to grant now (0: not yet): granted in halves of the window."""
        if self._consumed < self._grant_at or self.ended:
            return 0
        n, self._consumed = self._consumed, 0
        return n


# --- flows: generators of effects, performed by the shells -------------------------------------
class Request(NamedTuple):
    """Send ``call`` on the connection and wait for its answer (or ``timeout``)."""

    call: Call
    timeout: float | None


class Probe(NamedTuple):
    """Send ``call`` to ``endpoint`` on a throwaway connection and wait up to ``timeout``."""

    endpoint: str
    call: Call
    timeout: float


class Sleep(NamedTuple):
    seconds: float


Flow = Generator[Request | Probe | Sleep, Any, Any]

RETRYABLE = (NotReady, NoQuorum)
"""Errors after which the node has done nothing and the same request may simply be sent
again (after ``retry_delay``, at most ``max_retries`` times)."""


def perform(call: Call, timeout: float | None, settings: ConnectionSettings) -> Flow:
    """One operation with the retry policy both flavours share."""
    attempt = 0
    while True:
        try:
            return (yield Request(call, timeout))
        except RETRYABLE:
            if attempt >= settings.max_retries:
                raise
            attempt += 1
            yield Sleep(settings.retry_delay)


def discover(settings: ConnectionSettings) -> Flow:
    """Find a node to talk to: for now the first endpoint that answers a ping, trying each in
    turn up to ``discovery_attempts`` times. Returns the chosen ZeroMQ endpoint."""
    tried: list[str] = []
    attempts = settings.discovery_attempts
    for attempt in range(1, attempts + 1):
        for endpoint in settings.zmq_endpoints:
            try:
                yield Probe(endpoint, ping(), settings.gossip_timeout)
            except OperationTimeout as exc:  # any answer, even an error, means reachable
                tried.append(f"{endpoint} ({exc})" if attempt == attempts else endpoint)
                continue
            return endpoint
        if attempt < attempts:
            yield Sleep(settings.discovery_interval)
    last = "; ".join(tried[-len(settings.endpoints):])
    raise Unavailable(f"no node answered after {attempts} attempt(s) of "
                      f"{len(settings.endpoints)} endpoint(s): {last}")


def next_page(page: StreamSlice | AllSlice, delivered: int, limit: int | None) -> int | None:
    """Where the next page of a paged read starts, or None when the read is done."""
    if page.is_end or not page.events or (limit is not None and delivered >= limit):
        return None
    return page.next_version if type(page) is StreamSlice else page.next_position


def page_size(default: int, delivered: int, limit: int | None) -> int:
    return default if limit is None else max(1, min(default, limit - delivered))
