"""Flows: generators that yield effects (``Request``, ``Probe``, ``Resolve``, ``Sleep``,
``Connect``, ``Rediscover``) which a shell performs and sends (or throws) back: discovery,
the retry policy of one operation, re-discovery, and the resumption of a subscription."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Generator
from typing import Any, NamedTuple

from esnode.client._calls import Call, authenticate, cluster_info, ping, subscribe
from esnode.client._cluster import (
    ClusterState,
    DiscoveryFailed,
    Resubscribed,
    Resubscribing,
    Retrying,
)
from esnode.client._protocol import ERROR, ProtocolCore
from esnode.client._subscription import RESUMABLE_DROPS, SubscriptionState
from esnode.client.errors import (
    ClientClosed,
    ConnectionLost,
    EsError,
    NoQuorum,
    NotAuthenticated,
    NotLeader,
    NotReady,
    OperationTimeout,
    OutcomeUnknown,
    TooBusy,
    Unavailable,
    WriteConnectionLost,
    WriteUnavailable,
)
from esnode.client.model import ClusterInfo, MemberInfo
from esnode.client.settings import ConnectionSettings, zmq_endpoint
from esnode.core.filters import DEFAULT_CHECKPOINT_INTERVAL, EventFilter
from esnode.core.types import ALL_STREAM, AllSlice, StreamSlice


# --- flows: generators of effects, performed by the shells -------------------------------------
class ProbeExchange:
    """One discovery question on a throwaway socket, without the I/O (both flavours): the
    frame to send, then ``answer(frame)`` for each frame received until it returns True."""

    def __init__(self, effect: Probe) -> None:
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

    def refused(self) -> EsError:
        """Nothing listens at the endpoint (or it closed the connection): no answer will
        come, so say so now instead of waiting out the timeout (a dead node must not cost
        ``gossip_timeout`` per question while its peers elect a new leader)."""
        e = self.effect
        return OperationTimeout(f"{e.call.op} got no answer from {e.endpoint}: the connection "
                                "was refused or closed")

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


SERVING_STATES = ("Leader", "Follower")
"""States (core/states.py names) in which a member serves clients; the server has no
read-only replicas."""


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
    """Whether an operation that failed with ``error`` is tried again, after what delay
    (the first; ``perform`` backs off from there), ``attempt`` being how many of its
    attempts timed out before (at most ``max_retries`` are retried: each cost a whole
    timeout; refusals are bounded by ``perform``'s deadline instead), and whether the node must be re-discovered first (with the
    endpoint to try first, e.g. the leader named by ``NotLeader``). None: raise ``error``."""
    if isinstance(error, TimeoutError) and attempt >= settings.max_retries:
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
        if isinstance(error, WriteConnectionLost):  # the node is gone: find another now
            return RetryStep(0.0, True)
        return RetryStep(0.0 if isinstance(error, TimeoutError) else settings.retry_delay, True)
    if isinstance(error, (OperationTimeout, ConnectionLost)):
        return RetryStep(0.0, True)
    return None


BACKOFF_CAP = 1.0
"""Longest wait between two retries of one operation."""
RESUBSCRIBE_BACKOFF_CAP = 2.0
"""Longest wait between two attempts of a subscription to come back."""


def backoff(first: float, n: int, cap: float) -> float:
    """The wait before retry ``n`` (1, 2, ...): ``first``, then doubling (from at least
    50 ms) up to ``cap``."""
    if n <= 1:
        return first
    return min(cap, max(first, 0.05) * 2 ** min(n - 1, 30))


def perform(call: Call, timeout: float | None, settings: ConnectionSettings,
            cluster: ClusterState | None = None) -> Flow:
    """One operation with the retry policy both flavours share: on a retryable failure
    (``retry_step``) notify ``Retrying``, wait (backing off), re-discover the node when it is
    suspect and send the SAME request again (an append keeps its event ids).

    Refusals (``NotReady``, ``NoQuorum``, ``NotLeader``, a lost connection, no node found)
    are retried until ``timeout`` has passed since the operation began, however many it
    takes: an election that outlasts a few quick retries does not fail the operation.
    Attempts that timed out are retried at most ``max_retries`` times. ``timeout`` applies
    to each attempt."""
    cluster = cluster if cluster is not None else ClusterState(settings)
    clock = cluster.clock
    what = call.what or call.op
    deadline = clock() + (timeout if timeout is not None else settings.operation_timeout)
    attempt = timed_out = fast = 0
    unknown: EsError | None = None
    last: EsError = Unavailable("no attempt yet")
    rediscover: Rediscover | None = None
    relogged = False
    while True:
        if rediscover is not None:
            try:
                yield rediscover
            except Unavailable as exc:
                if clock() >= deadline or cluster.closed:
                    if unknown is not None:
                        raise WriteUnavailable(f"{what}: {_detail(what, unknown)}; then {exc}") \
                            from last
                    raise Unavailable(f"{what} failed ({last.code}: {_detail(what, last)}); "
                                      f"then {exc}") from last
                attempt += 1
                fast += 1
                cluster.emit(Retrying(what, attempt, exc))
                yield Sleep(min(backoff(settings.retry_delay, fast, BACKOFF_CAP),
                                max(0.0, deadline - clock())))
                rediscover = Rediscover(cluster.generation, f"{what}: {exc.code}")
                continue
            rediscover = None
        generation = cluster.generation
        try:
            return (yield Request(call, timeout))
        except EsError as error:
            last = error
            if isinstance(error, NotAuthenticated) and settings.user and not relogged:
                # The connection lost its login (a silent ZeroMQ reconnect is a new, anonymous
                # connection on the node): the request was refused unread; log in on a fresh
                # connection and send it again, once.
                relogged = True
                rediscover = Rediscover(generation, f"{what}: {error.code}")
                continue
            if call.write and isinstance(error, OutcomeUnknown):
                unknown = error
            step = retry_step(error, call, timed_out, settings) if call.retry else None
            timed = isinstance(error, TimeoutError)
            if step is not None and not timed and clock() >= deadline:
                step = None
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
            if timed:
                timed_out += 1
            else:
                fast += 1
            cluster.emit(Retrying(what, attempt, error))
            delay = step.delay if timed else min(backoff(step.delay, fast, BACKOFF_CAP),
                                                 max(0.0, deadline - clock()))
            if delay:
                yield Sleep(delay)
            if step.rediscover:
                rediscover = Rediscover(generation, f"{what}: {error.code}", step.hint)


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
    if settings.user:  # a new connection is anonymous on the node: log in before anything
        yield Request(authenticate(settings.user, settings.password), settings.operation_timeout)
    cluster.connected(endpoint, node, reason)


def resume_from(state: SubscriptionState) -> int | str:
    """Where a subscription continues after a failover, exclusive: after the last event it
    handed out (its version, or its position for ``$all``); with none yet, after the
    ``$all`` position it caught up at; else where it started (``"end"`` resolved to a
    number by the node's confirmation, so nothing written after it is skipped)."""
    last = state.last_event
    if state.stream != ALL_STREAM:
        return last.version if last is not None else state.from_
    # $all: the furthest of what was handed out, where it caught up, and how far a filtered
    # scan got (each means every event up to it was handed out)
    marks = [p for p in (last.position if last is not None else None,
                         state.caught_up_position, state.checkpoint_position)
             if p is not None and p >= 0]
    return max(marks) if marks else state.from_


def come_back(what: str, lost_reason: EsError | None, generation: int,
              make_call: Callable[[], Call], settings: ConnectionSettings,
              cluster: ClusterState) -> Flow:
    """Re-discover (if the node is suspect) and send ``make_call()`` again — a subscription
    or a group connection that was lost — until it is confirmed; returns ``(confirmation,
    generation)``.

    It keeps trying (waits backing off up to ``RESUBSCRIBE_BACKOFF_CAP``, each announced by a
    ``Resubscribing`` notice) for ``settings.patience`` seconds from the loss — forever with
    ``keep_reconnecting`` — so a consumer rides out any outage shorter than that; then
    ``Unavailable``."""
    clock = cluster.clock
    started = clock()
    patience = settings.patience
    reason = lost_reason
    waits = 0
    while True:
        if cluster.closed:
            raise ClientClosed(f"{what}: the client is closed")
        try:
            yield Rediscover(generation, f"{what}: {getattr(reason, 'code', 'lost')}")
            generation = cluster.generation
            confirmed = yield from perform(make_call(), settings.operation_timeout, settings,
                                           cluster)
            return confirmed, generation
        except (*RESUMABLE_DROPS, OperationTimeout) as exc:
            elapsed = clock() - started
            if cluster.closed:
                raise
            if elapsed >= patience:
                raise Unavailable(f"{what} gave up after {elapsed:.1f}s (patience "
                                  f"{patience:g}s): {exc}") from exc
            waits += 1
            delay = min(backoff(settings.retry_delay, waits, RESUBSCRIBE_BACKOFF_CAP),
                        patience - elapsed)
            cluster.emit(Resubscribing(what, waits, elapsed, patience, delay, exc))
            yield Sleep(delay)
            reason, generation = exc, cluster.generation


def resubscribe(state: SubscriptionState, settings: ConnectionSettings,
                cluster: ClusterState) -> Flow:
    """Make a lost subscription again (``come_back``: after re-discovery, with patience),
    from ``resume_from(state)``: no gap, no duplicate. The shell performs it with the
    subscription's inbox."""
    sent: list = []

    def call() -> Call:
        sent[:] = [resume_from(state)]
        return subscribe(state.stream, sent[0], state.window, state.filter,
                         state.checkpoint_interval)

    confirmed, generation = yield from come_back(
        f"subscription to {state.stream!r}", state.lost_reason, state.generation, call,
        settings, cluster)
    state.restart(confirmed, generation)
    cluster.emit(Resubscribed(state.stream, sent[0], cluster.endpoint or ""))


def next_page(page: StreamSlice | AllSlice, delivered: int, limit: int | None,
              start: int | None = None) -> int | None:
    """Where the next page of a paged read starts, or None when the read is done. A
    filtered ``$all`` page may hold no event and still not be the end: it goes on while
    the scan moved past ``start``."""
    if page.is_end or (limit is not None and delivered >= limit):
        return None
    if type(page) is StreamSlice:
        return page.next_version if page.events else None
    moved = start is not None and page.next_position != start
    return page.next_position if page.events or moved else None


def page_size(default: int, delivered: int, limit: int | None) -> int:
    return default if limit is None else max(1, min(default, limit - delivered))


def open_subscription(stream: str, from_: int | str, window: int,
                      on_caught_up: Callable[[int | None], Any] | None, timeout: float,
                      settings: ConnectionSettings, cluster: ClusterState,
                      filter: EventFilter | None = None,
                      checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL,
                      on_checkpoint: Callable[[int], Any] | None = None) -> Flow:
    """Subscribe (with retries); returns the ``SubscriptionState`` to consume it with."""
    generation = cluster.generation
    confirmed = yield from perform(subscribe(stream, from_, window, filter, checkpoint_interval),
                                   timeout, settings, cluster)
    state = SubscriptionState(confirmed.id, window, on_caught_up, stream, from_, generation,
                              filter, checkpoint_interval, on_checkpoint)
    state.confirmed(confirmed)
    return state
