"""In-process network for tests: nodes of one process talk without sockets.

``InProcNetwork`` stands in for the wire between nodes. Each node gets an ``InProcTransport``
endpoint (``network.endpoint(name)``) that implements the Transport port
(``transport/port.py``): ``start(on_client, on_peer_gone, on_node)``, ``send_client``,
``send_node``, ``pause_receiving``, ``stop``, ``external_endpoint``. Cluster messages go
through the real ``InternalCodec`` (encoded when sent, decoded when delivered), so the wire
allow-list and each message's validation run as they do over zmq; client replies go through
the external codec's ``encode_reply`` for the same reason. Whatever fails there is kept in
``network.errors`` (``check()`` raises), instead of vanishing in a daemon thread.

Delivery runs on one network thread, never on the sender's: actors see the threading they
see in production (handlers called from a transport thread, which only ``tell``s). Messages
wait in a heap ordered by (delivery time, send sequence): without faults every link is FIFO,
and consecutive messages for one node are handed over as one batch, as the zmq poller does.

``FaultyNetwork`` adds etcd-raft's test-network vocabulary (``drop``, ``cut``, ``isolate``,
``ignore``, ``recover``, ``msg_hook``) plus ``delay``, ``duplicate``, ``reorder`` and
``cut_one_way``, with every random choice drawn from one seeded ``random.Random``. Cuts are
checked when a message is sent *and* when it would be delivered, so once ``cut``/``isolate``
returns nothing more crosses the link. Faults apply to cluster links only: clients reach any
node (a test talks to an isolated node to see it refuse writes).

Clients: ``network.client(name).call(Append(...), timeout=...)`` hands a ``ClientEnvelope``
to the node's ``on_client`` (on the network thread) and returns the first server message
sent back for that request (``Reply``, ``ErrorReply``, ``RelayedReply``...), or raises
``TimeoutError``; ``send``/``messages`` serve subscriptions, whose pushes share a ``corr``.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from esnode.core.cluster_messages import WIRE_MESSAGES, PeerDisconnected
from esnode.core.forwarding import FORWARD_MESSAGES
from esnode.core.messages import ClientEnvelope, ErrorReply, RelayedReply, Reply
from esnode.transport.codec import encode_reply
from esnode.transport.internal_codec import InternalCodec

log = logging.getLogger("tests.inproc")

Delay = float | tuple[float, float] | Callable[[random.Random], float]
"""Seconds; a ``(low, high)`` range drawn uniformly; or a function of the network's rng."""

ANY = None
"""Wildcard for a link end in the fault rules: ``drop(ANY, "n2", 0.5)``."""


class NetworkError(AssertionError):
    """Something the real transport would have failed on (encode/decode, a handler that
    raised) happened in the in-process network."""


@dataclass(order=True)
class _InFlight:
    at: float
    seq: int
    src: str = field(compare=False)
    dst: str = field(compare=False)
    payload: Any = field(compare=False)  # encoded frame (cluster) or ClientEnvelope (client)
    client: bool = field(compare=False, default=False)


class InProcTransport:
    """One node's endpoint on an ``InProcNetwork`` (the Transport port, without sockets)."""

    def __init__(self, network: InProcNetwork, name: str) -> None:
        self.network = network
        self.name = name
        self.running = False
        self.paused = False
        self._on_client: Callable | None = None
        self._on_peer_gone: Callable | None = None
        self._on_node: Callable | None = None

    @property
    def external_endpoint(self) -> str:
        return f"inproc://{self.name}"

    def start(self, on_client, on_peer_gone, on_node=None) -> None:
        self._on_client, self._on_peer_gone, self._on_node = on_client, on_peer_gone, on_node
        self.running = True
        self.network._attach(self)

    def send_client(self, replies: Iterable[tuple[bytes, int, Any]]) -> None:
        self.network._reply(self.name, list(replies))

    def send_node(self, messages: Iterable[tuple[str, Any]]) -> None:
        self.network._send(self.name, list(messages))

    def pause_receiving(self) -> None:
        self.paused = True

    def stop(self) -> None:
        self.running = False
        self.network._detach(self)

    def __repr__(self) -> str:
        return f"InProcTransport({self.name!r}, running={self.running})"


class InProcClient:
    """A client peer talking to one node (typed requests in, typed server messages out)."""

    def __init__(self, network: InProcNetwork, node: str, peer: bytes,
                 principal: Any = None) -> None:
        self.network = network
        self.node = node
        self.peer = peer
        self.principal = principal
        """Who the face authenticated this peer as (``core.acl.Principal``), or None."""
        self._corrs = itertools.count(1)
        self._received: dict[int, list[Any]] = collections.defaultdict(list)
        self._cond = threading.Condition()

    def send(self, request: Any) -> int:
        """Send a request without waiting; returns its correlation id."""
        corr = next(self._corrs)
        self.network._submit(self.node, ClientEnvelope(self.peer, corr, request,
                                                        self.principal))
        return corr

    def call(self, request: Any, timeout: float = 5.0) -> Any:
        """Send ``request`` and return the first answer to it; ``TimeoutError`` if none came
        (for a write: its outcome is unknown to this client)."""
        corr = self.send(request)
        return self.wait(corr, timeout=timeout)

    def wait(self, corr: int, count: int = 1, timeout: float = 5.0) -> Any:
        """The ``count``-th message received for ``corr`` (waiting at most ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._received[corr]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer from {self.node} to request {corr} "
                                       f"within {timeout}s")
                self._cond.wait(left)
            return self._received[corr][count - 1]

    def messages(self, corr: int) -> list[Any]:
        with self._cond:
            return list(self._received[corr])

    def _deliver(self, corr: int, message: Any) -> None:
        with self._cond:
            self._received[corr].append(message)
            self._cond.notify_all()


def outcome(message: Any) -> tuple[str, Any]:
    """``("ok", body)`` or ``(error_code, detail)`` for a reply, local or relayed."""
    cls = type(message)
    if cls is Reply:
        return "ok", message.body
    if cls is ErrorReply:
        return message.error.code, str(message.error)
    if cls is RelayedReply:
        if message.kind == "ok":
            return "ok", message.body
        return message.body.get("code", "error"), message.body
    raise TypeError(f"not a reply: {message!r}")


class InProcNetwork:
    """The wire between in-process nodes; faultless (see ``FaultyNetwork``)."""

    def __init__(self, seed: int = 0, codec: bool = True, latency: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.latency = latency
        self.codec = InternalCodec(WIRE_MESSAGES + FORWARD_MESSAGES) if codec else None
        self.errors: list[str] = []
        self.stats: collections.Counter = collections.Counter()
        self._endpoints: dict[str, InProcTransport] = {}
        self._clients: dict[bytes, InProcClient] = {}
        self._client_ids = itertools.count(1)
        self._heap: list[_InFlight] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closing = False
        self._handing_over = 0
        self._thread = threading.Thread(target=self._deliver_loop, name="inproc-network",
                                        daemon=True)
        self._thread.start()

    # --- wiring ----------------------------------------------------------------------------
    def endpoint(self, name: str) -> InProcTransport:
        """A new endpoint for node ``name`` (a restarted node gets a fresh one)."""
        return InProcTransport(self, name)

    def transport_factory(self) -> Callable:
        """For ``Factories().replace(transport=network.transport_factory())``."""
        return lambda topology, node: self.endpoint(node.name)

    def client(self, node: str, principal: Any = None) -> InProcClient:
        peer = f"client-{next(self._client_ids)}".encode()
        client = InProcClient(self, node, peer, principal)
        with self._lock:
            self._clients[peer] = client
        return client

    def _attach(self, endpoint: InProcTransport) -> None:
        with self._lock:
            self._endpoints[endpoint.name] = endpoint

    def _detach(self, endpoint: InProcTransport) -> None:
        with self._lock:
            if self._endpoints.get(endpoint.name) is not endpoint:
                return
            del self._endpoints[endpoint.name]
            others = list(self._endpoints)
        for other in others:  # a stopped node's connections close: its peers hear of it
            self.hint(other, endpoint.name)

    def hint(self, to: str, about: str) -> None:
        """Tell ``to``'s node that its connection to ``about`` closed (the ZeroMQ transport's
        socket-monitor hint); tests also call it while ``about`` lives (a connection reset)."""
        with self._lock:
            endpoint = self._endpoints.get(to)
        if endpoint is not None and endpoint._on_node is not None:
            endpoint._on_node([(about, PeerDisconnected(about))])

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._heap.clear()
            self._cond.notify_all()
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise NetworkError("the network thread did not stop (a handler is stuck)")

    def in_flight(self) -> int:
        """Messages sent and not yet delivered (or dropped at delivery)."""
        with self._lock:
            return len(self._heap) + self._handing_over

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Until nothing is in flight (every delayed message delivered or dropped)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._handing_over:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._heap)} messages still in flight")
                self._cond.wait(left)

    def check(self) -> None:
        """Raise if anything failed that the real transport would have failed on."""
        if self.errors:
            raise NetworkError("in-process network errors:\n  " + "\n  ".join(self.errors))

    # --- faults: the faultless network has none ------------------------------------------
    def _fates(self, src: str, dst: str, message: Any) -> list[float]:
        """Delays of the copies of one message that will arrive (none: dropped). Called
        under the lock, so rules and the rng are consistent."""
        return [self.latency]

    def _link_open(self, src: str, dst: str) -> bool:
        return True

    # --- sending ---------------------------------------------------------------------------
    def _error(self, text: str) -> None:
        log.error("%s", text)
        with self._lock:
            self.errors.append(text)

    def _send(self, src: str, messages: list[tuple[str, Any]]) -> None:
        frames = []
        for dst, message in messages:
            try:
                frame = self.codec.encode(message) if self.codec is not None else message
            except Exception as exc:
                self._error(f"{src}->{dst}: cannot encode {type(message).__name__}: {exc}")
                continue
            frames.append((dst, message, frame))
        now = time.monotonic()
        with self._cond:
            for dst, message, frame in frames:
                kind = type(message).__name__
                self.stats["sent"] += 1
                fates = self._fates(src, dst, message)
                if not fates:
                    self.stats["dropped"] += 1
                    self.stats[f"dropped {kind}"] += 1
                    continue
                if len(fates) > 1:
                    self.stats["duplicated"] += len(fates) - 1
                for delay in fates:
                    heapq.heappush(self._heap, _InFlight(now + max(0.0, delay), next(self._seq),
                                                         src, dst, frame))
            self._cond.notify_all()

    def _submit(self, node: str, envelope: ClientEnvelope) -> None:
        with self._cond:
            heapq.heappush(self._heap, _InFlight(time.monotonic(), next(self._seq), "client",
                                                 node, envelope, client=True))
            self._cond.notify_all()

    def _reply(self, src: str, replies: list[tuple[bytes, int, Any]]) -> None:
        for peer, corr, message in replies:
            try:
                encode_reply(corr, message)  # what the zmq transport would put on the wire
            except Exception as exc:
                self._error(f"{src}: cannot encode the reply {message!r} to {peer!r}: {exc}")
                continue
            with self._lock:
                client = self._clients.get(peer)
            if client is not None:
                client._deliver(corr, message)

    # --- the network thread ----------------------------------------------------------------
    def _deliver_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closing:
                    now = time.monotonic()
                    if self._heap and self._heap[0].at <= now:
                        break
                    self._cond.wait(self._heap[0].at - now if self._heap else None)
                if self._closing:
                    return
                due = []
                while self._heap and self._heap[0].at <= now:
                    due.append(heapq.heappop(self._heap))
                # Decided under the lock: a cut made before this point stops these messages.
                due = [d for d in due if d.client or self._link_open(d.src, d.dst)]
                endpoints = dict(self._endpoints)
                self._handing_over = len(due)
            try:
                self._hand_over(due, endpoints)
            finally:
                with self._cond:
                    self._handing_over = 0
                    self._cond.notify_all()

    def _hand_over(self, due: list[_InFlight], endpoints: dict[str, InProcTransport]) -> None:
        """Consecutive messages for one node and of one kind go over as one batch."""
        batch: list = []
        target: tuple[str, bool] | None = None
        for item in due:
            key = (item.dst, item.client)
            if key != target and batch:
                self._call(target, batch, endpoints)
                batch = []
            target = key
            if item.client:
                batch.append(item.payload)
                continue
            try:
                message = (self.codec.decode(item.payload) if self.codec is not None
                           else item.payload)
            except Exception as exc:
                self._error(f"{item.src}->{item.dst}: cannot decode: {exc}")
                continue
            batch.append((item.src, message))
        if batch:
            self._call(target, batch, endpoints)

    def _call(self, target: tuple[str, bool], batch: list,
              endpoints: dict[str, InProcTransport]) -> None:
        dst, client = target
        endpoint = endpoints.get(dst)
        if endpoint is None or not endpoint.running or (client and endpoint.paused):
            self.stats["undeliverable"] += len(batch)
            return  # a stopped node: like a closed socket, the message is lost
        handler = endpoint._on_client if client else endpoint._on_node
        if handler is None:
            return
        try:
            handler(batch)
            self.stats["delivered"] += len(batch)
        except Exception as exc:  # the zmq poller would die on this: make it loud
            log.exception("handler of %s failed", dst)
            self._error(f"{dst}: {'client' if client else 'cluster'} handler raised {exc!r}")


@dataclass
class _Rule:
    src: str | None
    dst: str | None
    value: Any

    def matches(self, src: str, dst: str) -> bool:
        return self.src in (None, src) and self.dst in (None, dst)


class FaultyNetwork(InProcNetwork):
    """An ``InProcNetwork`` with faults per link, named after etcd-raft's test network.

    Links are ``(frm, to)`` node names; ``ANY`` (None) matches every node. The latest rule
    set for a link wins. Every random choice uses ``self.rng`` (seeded)."""

    def __init__(self, seed: int = 0, codec: bool = True, latency: float = 0.0) -> None:
        self._cuts: set[tuple[str, str]] = set()
        self._drops: list[_Rule] = []
        self._dups: list[_Rule] = []
        self._delays: list[_Rule] = []
        self._reorders: list[_Rule] = []
        self._ignored: set[str] = set()
        self.msg_hook: Callable[[str, str, Any], bool] | None = None
        """``hook(frm, to, message) -> deliver?``; runs on the sender's thread."""
        super().__init__(seed, codec, latency)

    # --- partitions --------------------------------------------------------------------------
    def cut(self, a: str, b: str) -> None:
        """No messages between ``a`` and ``b`` in either direction."""
        self.cut_one_way(a, b)
        self.cut_one_way(b, a)

    def cut_one_way(self, frm: str, to: str) -> None:
        """Messages from ``frm`` to ``to`` are lost; the other direction still works."""
        with self._lock:
            self._cuts.add((frm, to))

    def isolate(self, node: str, others: Iterable[str] | None = None) -> None:
        """Cut ``node`` from every other node (those attached now, or ``others``)."""
        with self._lock:
            names = set(others) if others is not None else set(self._endpoints)
        for other in names - {node}:
            self.cut(node, other)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between nodes of different groups."""
        groups = [set(g) for g in groups]
        for i, g in enumerate(groups):
            for h in groups[i + 1:]:
                for a in g:
                    for b in h:
                        self.cut(a, b)

    def heal(self) -> None:
        """Undo every cut (loss, delays and the rest stay)."""
        with self._lock:
            self._cuts.clear()

    def recover(self) -> None:
        """Back to a perfect network: no cuts, loss, duplication, delay, reordering, ignored
        types or hook (etcd-raft's ``recover``)."""
        with self._lock:
            self._cuts.clear()
            self._drops.clear()
            self._dups.clear()
            self._delays.clear()
            self._reorders.clear()
            self._ignored.clear()
            self.msg_hook = None

    # --- lossy links ---------------------------------------------------------------------
    def drop(self, frm: str | None, to: str | None, p: float) -> None:
        """Lose each message on the link with probability ``p``."""
        self._set(self._drops, frm, to, p)

    def duplicate(self, frm: str | None, to: str | None, p: float) -> None:
        """Deliver a second copy of a message with probability ``p`` (delayed on its own)."""
        self._set(self._dups, frm, to, p)

    def delay(self, frm: str | None, to: str | None, seconds: Delay) -> None:
        """Delay each message: a constant keeps the link FIFO; a range or a function of the
        rng makes later messages overtake earlier ones."""
        self._set(self._delays, frm, to, seconds)

    def reorder(self, frm: str | None, to: str | None, p: float, window: float = 0.05) -> None:
        """Hold back each message with probability ``p`` by up to ``window`` seconds, so
        that later ones overtake it."""
        self._set(self._reorders, frm, to, (p, window))

    def ignore(self, message_type: type | str) -> None:
        """Drop every message of this type (class or class name) on every link."""
        name = message_type if isinstance(message_type, str) else message_type.__name__
        with self._lock:
            self._ignored.add(name)

    def _set(self, rules: list[_Rule], frm: str | None, to: str | None, value: Any) -> None:
        with self._lock:
            rules[:] = [r for r in rules if (r.src, r.dst) != (frm, to)]
            rules.append(_Rule(frm, to, value))

    @staticmethod
    def _lookup(rules: list[_Rule], src: str, dst: str) -> Any:
        for rule in reversed(rules):
            if rule.matches(src, dst):
                return rule.value
        return None

    # --- the decisions (under the lock) ---------------------------------------------------
    def _link_open(self, src: str, dst: str) -> bool:
        return (src, dst) not in self._cuts

    def _draw_delay(self, spec: Delay | None) -> float:
        if spec is None:
            return self.latency
        if callable(spec):
            return float(spec(self.rng))
        if isinstance(spec, tuple):
            return self.rng.uniform(*spec)
        return float(spec)

    def _fates(self, src: str, dst: str, message: Any) -> list[float]:
        if (src, dst) in self._cuts or type(message).__name__ in self._ignored:
            return []
        hook = self.msg_hook
        if hook is not None and not hook(src, dst, message):
            return []
        rng = self.rng
        p = self._lookup(self._drops, src, dst)
        if p and rng.random() < p:
            return []
        p = self._lookup(self._dups, src, dst)
        copies = 2 if p and rng.random() < p else 1
        spec = self._lookup(self._delays, src, dst)
        reorder = self._lookup(self._reorders, src, dst)
        fates = []
        for _ in range(copies):
            delay = self._draw_delay(spec)
            if reorder is not None and rng.random() < reorder[0]:
                delay += rng.uniform(0, reorder[1])
            fates.append(delay)
        return fates
