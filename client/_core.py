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

And the **flows** — generators that yield effects (``Request``, ``Probe``, ``Resolve``,
``Sleep``, ``Connect``, ``Rediscover``) which a shell performs and sends (or throws) back:
discovery of a node (gossip seeds, DNS or one direct node; ``choose_member``), the retry
policy of one operation (``retry_step``, ``perform``), re-discovery after a failure
(``reconnect``) and the resumption of a subscription on another node (``resubscribe``,
``resume_from``). ``ClusterState`` is what both flavours share about the cluster: the current
node and connection generation, the stats and the notices given to callbacks
(docs/client.md, "Clusters, failover and retries").
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import msgpack

from esnode.client.errors import (
    ClientClosed,
    ConnectionLost,
    EsError,
    NoQuorum,
    NotLeader,
    NotReady,
    OperationTimeout,
    OutcomeUnknown,
    ProtocolError,
    TooBusy,
    Unavailable,
    WriteTimeout,
    WriteUnavailable,
    error_from_body,
)
from esnode.client.model import ClusterInfo, MemberInfo, Pong
from esnode.client.settings import ConnectionSettings, zmq_endpoint
from esnode.core import messages as m
from esnode.core.types import (
    ALL_STREAM,
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

log = logging.getLogger("esnode.client")


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
    idempotent: bool = True
    """Sending it again after an unknown outcome cannot do it twice (reads; appends, whose
    event ids the node deduplicates). Deletes and metadata writes are not."""


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
                f"{'tombstone' if tombstone else 'delete'} of {stream!r}", False)


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
                _append_success, True, f"metadata write of {stream!r}", False)


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
LOST = "lost"
"""Push kind (made by the client, not the node): the subscription's connection is gone (the
node stopped answering heartbeats, or the client moved to another node); resubscribe."""

_unpackb = msgpack.unpackb


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
        self._keepalive = keepalive_interval
        self._keepalive_timeout = keepalive_timeout
        self._stats = stats
        self._heard = False
        self._check_at: float | None = None
        self._heartbeat: int | None = None

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
        self._heard = True
        try:
            corr, kind, body = _unpackb(frame, raw=False)
        except Exception:  # noqa: BLE001 - anything malformed is dropped, never fatal
            return None
        if kind == OK or kind == ERROR:
            if corr == self._heartbeat:
                self._heartbeat = None
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
                cls = OutcomeUnknown if lost else WriteTimeout
                error = cls(f"{call.what}: {reason}; it may or may not have happened")
            else:
                error = read_error(f"{call.what or call.op}: {reason}")
            out.append((handle, ERROR, error))
        kind = LOST if lost else CLOSED
        out.extend((inbox, kind, ConnectionLost(reason)) for inbox in self._subs.values())
        self._pending.clear()
        self._subs.clear()
        self._deadlines.clear()
        self._heartbeat = self._check_at = None
        self._heard = False
        return out


def _error(body: Any) -> EsError:
    if type(body) is dict:
        return error_from_body(body)
    return ProtocolError(f"malformed error from the node: {body!r}")


# --- the consumer side of a subscription ----------------------------------------------------
END = object()
"""``SubscriptionState.next_event`` result: the subscription was closed by the client."""
RESUME = object()
"""``SubscriptionState.next_event`` result: the connection was lost (or the node dropped the
subscription for a reason worth retrying) after every event before that was handed out: run
``resubscribe`` and go on."""


class SubscriptionState:
    """Buffer, markers and credit of one subscription, driven from the consumer's side."""

    def __init__(self, subscription: int, window: int,
                 on_caught_up: Callable[[int | None], Any] | None = None,
                 stream: str = ALL_STREAM, from_: int | str = m.FROM_START,
                 generation: int = 0) -> None:
        self.id = subscription
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
            elif kind == LOST or (kind == DROPPED and isinstance(payload, RESUMABLE_DROPS)):
                self.lost_reason = payload
                buf.clear()
                return RESUME
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

    def restart(self, subscription: int, generation: int) -> None:
        """The subscription was made again (``resubscribe``) under a new id: fresh credit."""
        self.id, self.generation = subscription, generation
        self.lost_reason = None
        self._consumed = 0

    def credit_due(self) -> int:
        """Credit to grant now (0: not yet): granted in halves of the window."""
        if self._consumed < self._grant_at or self.ended:
            return 0
        n, self._consumed = self._consumed, 0
        return n


# --- what the client shares about the cluster: node, generation, stats, notices ---------------
@dataclass(frozen=True, slots=True)
class Reconnected:
    """The client connected again (after a failure), to ``node`` at ``endpoint``."""

    node: str | None
    endpoint: str
    reason: str

    def __str__(self) -> str:
        return f"reconnected to {self.node or 'node'} at {self.endpoint} ({self.reason})"


@dataclass(frozen=True, slots=True)
class NodeChanged:
    """The client moved from one node to another (failover, leader redirect)."""

    old_node: str | None
    old_endpoint: str
    node: str | None
    endpoint: str
    reason: str

    def __str__(self) -> str:
        return (f"moved from {self.old_node or 'node'} at {self.old_endpoint} to "
                f"{self.node or 'node'} at {self.endpoint} ({self.reason})")


@dataclass(frozen=True, slots=True)
class Retrying:
    """``op`` failed with ``error`` (a reason worth retrying); this is retry ``attempt``."""

    op: str
    attempt: int
    error: EsError

    def __str__(self) -> str:
        return f"retrying {self.op} (retry {self.attempt}) after {self.error.code}: {self.error}"


@dataclass(frozen=True, slots=True)
class Resubscribed:
    """A subscription was made again on the current node, from ``from_`` (exclusive)."""

    stream: str
    from_: int | str
    endpoint: str

    def __str__(self) -> str:
        return f"resubscribed to {self.stream!r} from {self.from_} at {self.endpoint}"


@dataclass(frozen=True, slots=True)
class DiscoveryFailed:
    """Re-discovery gave up (the error raised to the operation that needed it)."""

    error: EsError

    def __str__(self) -> str:
        return f"discovery failed: {self.error}"


Notice = Reconnected | NodeChanged | Retrying | Resubscribed | DiscoveryFailed


@dataclass(slots=True)
class ClientStats:
    """Counters of what the client did to keep going (``client.stats``)."""

    retries: int = 0
    reconnections: int = 0
    node_changes: int = 0
    resubscriptions: int = 0
    discovery_failures: int = 0
    heartbeat_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_COUNTERS = {Retrying: "retries", Reconnected: "reconnections", NodeChanged: "node_changes",
             Resubscribed: "resubscriptions", DiscoveryFailed: "discovery_failures"}


class ClusterState:
    """The node a client talks to and the ``generation`` of its connection (bumped on every
    (re)connection, so that of many callers failing at once only the first re-discovers),
    the last cluster view, the stats and the callbacks. Shared by every flow of one client;
    its methods are safe from any thread."""

    def __init__(self, settings: ConnectionSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.generation = 0
        self.closed = False
        """Set by the shell when the client closes: nothing is retried any more."""
        self.endpoint: str | None = None
        self.node: str | None = None
        self.members: tuple[MemberInfo, ...] = ()
        self.stats = ClientStats()
        self.rng = rng or random.Random()
        self._listeners: list[Callable[[Notice], Any]] = []
        self._lock = threading.Lock()

    def on_event(self, callback: Callable[[Notice], Any]) -> Callable[[], None]:
        """Call ``callback(notice)`` for every notice; returns a function that removes it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners \
            else None

    def emit(self, notice: Notice) -> None:
        """Count, log (one line) and hand ``notice`` to the callbacks."""
        counter = _COUNTERS[type(notice)]
        with self._lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        level = logging.INFO if type(notice) in (Retrying, Resubscribed) else logging.WARNING
        log.log(level, "esnode client: %s", notice)
        for callback in list(self._listeners):
            try:
                callback(notice)
            except Exception:  # noqa: BLE001 - a broken callback must not break the client
                log.exception("esnode client: an on_event callback failed")

    def connected(self, endpoint: str, node: str | None, reason: str) -> None:
        old_endpoint, old_node = self.endpoint, self.node
        self.endpoint, self.node = endpoint, node
        self.generation += 1
        if old_endpoint is None:
            log.debug("esnode client: connected to %s at %s", node or "node", endpoint)
            return
        self.emit(Reconnected(node, endpoint, reason))
        if old_endpoint != endpoint:
            self.emit(NodeChanged(old_node, old_endpoint, node, endpoint, reason))


# --- flows: generators of effects, performed by the shells -------------------------------------
class ProbeExchange:
    """One discovery question on a throwaway socket, without the I/O (both flavours): the
    frame to send, then ``answer(frame)`` for each frame received until it returns True."""

    def __init__(self, effect: "Probe") -> None:
        self.effect = effect
        self._pc = ProtocolCore(effect.endpoint)
        _, self.frame = self._pc.start(effect.call, True, 0.0, None)
        self.result: Any = None

    def answer(self, frame: bytes) -> bool:
        """Feed a received frame; True once the answer is in ``result`` (an error raises)."""
        done = self._pc.receive(frame)
        if done is None:
            return False
        _, kind, payload = done
        if kind == ERROR:
            raise payload
        self.result = payload
        return True

    def timeout(self) -> EsError:
        e = self.effect
        return OperationTimeout(f"{e.call.op} got no answer from {e.endpoint} within "
                                f"{e.timeout:g}s")


class Request(NamedTuple):
    """Send ``call`` on the connection and wait for its answer (or ``timeout``)."""

    call: Call
    timeout: float | None


class Probe(NamedTuple):
    """Send ``call`` to ``endpoint`` on a throwaway connection and wait up to ``timeout``."""

    endpoint: str
    call: Call
    timeout: float


class Resolve(NamedTuple):
    """Every A record of ``name`` (a list of address strings), asking ``server`` (host, port)
    or the system's resolver; raise an ``EsError`` when there is none."""

    name: str
    server: tuple[str, int] | None
    timeout: float


class Sleep(NamedTuple):
    seconds: float


class Connect(NamedTuple):
    """Make ``endpoint`` the client's connection: a fresh socket; whatever was in flight on
    the old one fails (``ProtocolCore.close(..., lost=True)``)."""

    endpoint: str


class Rediscover(NamedTuple):
    """Run ``reconnect(cluster, settings, generation, reason, hint)``, one caller at a time
    (the shell holds a lock around it)."""

    generation: int
    reason: str
    hint: str | None = None


Flow = Generator[Request | Probe | Resolve | Sleep | Connect | Rediscover, Any, Any]

RETRYABLE = (NotReady, NoQuorum, TooBusy)
"""Errors after which the node has done nothing and the same request may be sent again."""

REFUSALS = (NotReady, NoQuorum, NotLeader, Unavailable, ConnectionLost)
"""Errors that say the request was not even looked at (nothing about earlier attempts)."""

RESUMABLE_DROPS = (NotReady, NotLeader, NoQuorum, OutcomeUnknown, Unavailable, ConnectionLost)
"""A subscription the node drops with one of these is made again (``resubscribe``)."""

SERVING_STATES = ("Leader", "Follower", "ReadOnlyReplica")


def choose_member(info: ClusterInfo, preference: str,
                  rng: random.Random | None = None) -> MemberInfo | None:
    """The member to talk to in a cluster view, by ``preference``: ``leader`` = the leader
    (below), None while there is none; ``follower`` = a random alive ``Follower`` (read-only
    replicas count), else the leader; ``random`` = any alive serving member. Members without
    an external endpoint are never chosen.

    The leader is the alive member with the highest epoch among those shown as ``Leader`` and
    the one the answering node names as its leader (``info.leader``; it wins a tie). The
    answering node learns a new leader at once, while the states in its member list are
    gossip and may be a round or two old (the old leader still shown alive and ``Leader``,
    the new one still ``Follower``)."""
    usable = [x for x in info.members if x.alive and x.external]
    leaders = sorted((x for x in usable if x.state == "Leader" or x.name == info.leader),
                     key=lambda x: (-x.epoch, x.name != info.leader))
    if preference == "leader":
        return leaders[0] if leaders else None
    followers = [x for x in usable if x.state in SERVING_STATES[1:] and x not in leaders[:1]]
    pool = (followers or leaders[:1]) if preference == "follower" else followers + leaders[:1]
    return (rng or random).choice(pool) if pool else None


class RetryStep(NamedTuple):
    delay: float
    rediscover: bool
    hint: str | None = None


def retry_step(error: EsError, call: Call, attempt: int,
               settings: ConnectionSettings) -> RetryStep | None:
    """Whether an operation that failed with ``error`` after ``attempt`` retries is tried
    again, after what delay, and whether the node must be re-discovered first (with the
    endpoint to try first, e.g. the leader named by ``NotLeader``). None: raise ``error``."""
    if attempt >= settings.max_retries:
        return None
    if isinstance(error, NotLeader):
        if settings.direct:
            return None
        hint = zmq_endpoint(*error.leader) if error.leader else None
        return RetryStep(0.0 if hint else settings.retry_delay, True, hint)
    if isinstance(error, RETRYABLE):
        return RetryStep(settings.retry_delay, not settings.direct)
    if isinstance(error, OutcomeUnknown):  # includes WriteTimeout and a lost write
        if not call.idempotent:
            return None
        return RetryStep(0.0 if isinstance(error, TimeoutError) else settings.retry_delay, True)
    if isinstance(error, (OperationTimeout, ConnectionLost)):
        return RetryStep(0.0, True)
    return None


def perform(call: Call, timeout: float | None, settings: ConnectionSettings,
            cluster: ClusterState | None = None) -> Flow:
    """One operation with the retry policy both flavours share: on a retryable failure
    (``retry_step``) notify ``Retrying``, wait, re-discover the node when it is suspect and
    send the SAME request again (an append keeps its event ids), at most ``max_retries``
    times. ``timeout`` applies to each attempt."""
    cluster = cluster if cluster is not None else ClusterState(settings)
    what = call.what or call.op
    attempt = 0
    unknown: EsError | None = None
    while True:
        generation = cluster.generation
        try:
            return (yield Request(call, timeout))
        except EsError as error:
            if call.write and isinstance(error, OutcomeUnknown):
                unknown = error
            step = retry_step(error, call, attempt, settings)
            if step is None or cluster.closed:
                if unknown is not None and isinstance(error, REFUSALS):
                    # The last attempt was refused before it was looked at, so it says
                    # nothing about the earlier one, which may have been made.
                    raise OutcomeUnknown(
                        f"{what}: {_detail(what, unknown)}; a retry was then refused "
                        f"({error.code}: {_detail(what, error)}): the write may or may not "
                        "have been made; retry it with the same event ids") from error
                raise
            attempt += 1
            cluster.emit(Retrying(what, attempt, error))
            if step.delay:
                yield Sleep(step.delay)
            if step.rediscover:
                try:
                    yield Rediscover(generation, f"{what}: {error.code}", step.hint)
                except Unavailable as exc:
                    if unknown is not None:
                        raise WriteUnavailable(f"{what}: {_detail(what, unknown)}; then {exc}") \
                            from error
                    raise Unavailable(f"{what} failed ({error.code}: {_detail(what, error)}); "
                                      f"then {exc}") from error


def _detail(what: str, error: EsError) -> str:
    """``error``'s message without a leading ``what: `` (the client's own errors name the
    operation already)."""
    return str(error).removeprefix(f"{what}: ")


def discover(settings: ConnectionSettings, cluster: ClusterState | None = None,
             hint: str | None = None, leaving: str | None = None) -> Flow:
    """Find the node to talk to; returns ``(zmq endpoint, node name or None)``.

    Direct: ping the one endpoint (any answer will do). Otherwise, each round: the seeds
    (``hint`` first, then the listed endpoints or the A records of the DNS name, then the
    members of the last known view) are asked for ``cluster_info`` in turn; the first view
    with a member to choose (``choose_member``) wins, once that member answers a ping.
    Endpoints that did not answer earlier in this discovery (a dead node: every probe of it
    costs ``gossip_timeout``), and ``leaving`` (the node the client is moving away from), are
    tried last in each round, and a view that chooses one of them sends the client on to the
    other endpoints first (then to it, at the end of the round). ``discovery_attempts`` rounds, ``discovery_interval`` apart; then ``Unavailable``
    saying what each endpoint answered in the last round."""
    cluster = cluster if cluster is not None else ClusterState(settings)
    attempts, timeout = settings.discovery_attempts, settings.gossip_timeout
    why: dict[str, str] = {}
    suspects: set[str] = {leaving} if leaving else set()
    for attempt in range(1, attempts + 1):
        why = {}
        if settings.direct:
            endpoint = settings.zmq_endpoints[0]
            try:
                pong = yield Probe(endpoint, ping(), timeout)
                return endpoint, getattr(pong, "node", None)
            except OperationTimeout as exc:
                why[endpoint] = str(exc)
            except EsError:  # any answer, even an error, means it is there
                return endpoint, None
        else:
            endpoints = yield from _seeds(settings, cluster, hint, why)
            queue = [e for e in endpoints if e not in suspects] + \
                [e for e in endpoints if e in suspects]
            silent: set[str] = set()  # did not answer in this round
            for endpoint in queue:  # may grow: a suspect chosen by a view is tried at the end
                if endpoint in silent:
                    continue
                try:
                    info = yield Probe(endpoint, cluster_info(), timeout)
                except EsError as exc:
                    why[endpoint] = f"{exc.code}: {exc}"
                    if isinstance(exc, OperationTimeout):
                        suspects.add(endpoint)
                        silent.add(endpoint)
                    continue
                suspects.discard(endpoint)
                cluster.members = info.members
                member = choose_member(info, settings.node_preference, cluster.rng)
                if member is None:
                    states = ", ".join(f"{x.name} {x.state}{'' if x.alive else ' (dead)'}"
                                       for x in info.members)
                    why[endpoint] = (f"no {settings.node_preference} to choose in its view "
                                     f"({states})")
                    continue
                target = zmq_endpoint(*member.external)
                if target != endpoint:
                    if target in suspects:
                        why[endpoint] = (f"chose {member.name} at {target}, which did not "
                                         "answer before")
                        if target not in silent and target not in queue:
                            queue.append(target)
                        continue
                    try:
                        yield Probe(target, ping(), timeout)
                    except OperationTimeout as exc:
                        why[endpoint] = f"chose {member.name} at {target}, which did not " \
                                        f"answer ({exc})"
                        suspects.add(target)
                        silent.add(target)
                        continue
                    except EsError:
                        pass
                return target, member.name
        if attempt < attempts:
            yield Sleep(settings.discovery_interval)
    mode = ("direct connection" if settings.direct
            else f"DNS name {settings.endpoints[0][0]!r}" if settings.dns
            else f"{len(settings.endpoints)} seed(s)")
    tried = "; ".join(f"{endpoint}: {reason}" for endpoint, reason in why.items())
    raise Unavailable(f"no node answered after {attempts} attempt(s) ({mode}, node preference "
                      f"{settings.node_preference}); last attempt: {tried or 'nothing to try'}")


def _seeds(settings: ConnectionSettings, cluster: ClusterState, hint: str | None,
           why: dict[str, str]) -> Generator[Any, Any, list[str]]:
    if settings.dns:
        name, port = settings.endpoints[0]
        try:
            ipaddress.ip_address(name)
            addresses = [name]
        except ValueError:
            try:
                addresses = yield Resolve(name, settings.dns_server, settings.gossip_timeout)
            except EsError as exc:
                why[f"DNS {name}"] = str(exc)
                addresses = []
        seeds = [zmq_endpoint(address, port) for address in addresses]
    else:
        seeds = settings.zmq_endpoints
    known = [zmq_endpoint(*x.external) for x in cluster.members if x.external]
    return list(dict.fromkeys(([hint] if hint else []) + seeds + known))


def reconnect(cluster: ClusterState, settings: ConnectionSettings, generation: int,
              reason: str, hint: str | None = None) -> Flow:
    """Discover a node and connect to it — unless the connection changed since
    ``generation`` (another caller did it already); the node the client is on now is tried
    last. The first connection is ``reconnect(cluster, settings, 0, "connect")``."""
    if cluster.generation != generation:
        return
    try:
        endpoint, node = yield from discover(settings, cluster, hint,
                                             cluster.endpoint if generation else None)
    except Unavailable as exc:
        if generation:
            cluster.emit(DiscoveryFailed(exc))
        raise
    yield Connect(endpoint)
    cluster.connected(endpoint, node, reason)


def resume_from(state: SubscriptionState) -> int | str:
    """Where a subscription continues after a failover, exclusive: after the last event it
    handed out (its version, or its position for ``$all``); with none yet, after the
    ``$all`` position it caught up at; else where it started."""
    last = state.last_event
    if last is not None:
        return last.position if state.stream == ALL_STREAM else last.version
    if state.stream == ALL_STREAM and state.caught_up_position is not None \
            and state.caught_up_position >= 0:
        return state.caught_up_position
    return state.from_


def resubscribe(state: SubscriptionState, settings: ConnectionSettings,
                cluster: ClusterState) -> Flow:
    """Make a lost subscription again (after re-discovery if its node is suspect), from
    ``resume_from(state)``: no gap, no duplicate. The shell performs it with the
    subscription's inbox."""
    reason = state.lost_reason
    yield Rediscover(state.generation, f"subscription to {state.stream!r}: "
                     f"{getattr(reason, 'code', 'lost')}")
    from_ = resume_from(state)
    generation = cluster.generation
    sub_id = yield from perform(subscribe(state.stream, from_, state.window),
                                settings.operation_timeout, settings, cluster)
    state.restart(sub_id, generation)
    cluster.emit(Resubscribed(state.stream, from_, cluster.endpoint or ""))


def next_page(page: StreamSlice | AllSlice, delivered: int, limit: int | None) -> int | None:
    """Where the next page of a paged read starts, or None when the read is done."""
    if page.is_end or not page.events or (limit is not None and delivered >= limit):
        return None
    return page.next_version if type(page) is StreamSlice else page.next_position


def page_size(default: int, delivered: int, limit: int | None) -> int:
    return default if limit is None else max(1, min(default, limit - delivered))


def open_subscription(stream: str, from_: int | str, window: int,
                      on_caught_up: Callable[[int | None], Any] | None, timeout: float,
                      settings: ConnectionSettings, cluster: ClusterState) -> Flow:
    """Subscribe (with retries); returns the ``SubscriptionState`` to consume it with."""
    generation = cluster.generation
    sub_id = yield from perform(subscribe(stream, from_, window), timeout, settings, cluster)
    return SubscriptionState(sub_id, window, on_caught_up, stream, from_, generation)
