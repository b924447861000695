"""The composition root: builds one node from its topology entry and a set of factories.

Tests swap any factory (store, transport, clock, or an actor class) for a double; production
uses the defaults. Nothing else in the code base constructs actors or sockets.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import pykka
from prometheus_client import start_http_server

from esnode.actors.gateway import GatewayActor, split_writes
from esnode.actors.messages import (
    AdminCommand,
    ClientBatch,
    ClusterInbound,
    Committed,
    PeerGone,
    PendingWrite,
    Shutdown,
    StatusChanged,
    StopAccepting,
    Tick,
    WriteBatch,
)
from esnode.actors.metrics import MeteredStore, Metrics
from esnode.actors.persistent import GroupRequests, PersistentSubscriptionsActor
from esnode.actors.status import StatusBoard
from esnode.actors.storage import StorageActor
from esnode.actors.subscriptions import SubscriptionsActor
from esnode.core import messages as m
from esnode.core.clock import Clock, SystemClock
from esnode.core.cluster_messages import WIRE_MESSAGES
from esnode.core.config import NodeSection, Topology
from esnode.core.forwarding import (
    FORWARD_MESSAGES,
    ForwardAppend,
    ForwardDelete,
    ForwardReply,
)
from esnode.core.messages import GROUP_REQUESTS
from esnode.core.states import VNodeState
from esnode.core.types import NotLeader, NotReady
from esnode.storage.port import EventStore
from esnode.storage.scavenge import Scavenger
from esnode.transport.codec import error_body
from esnode.transport.port import Transport

TICK_INTERVAL_S = 0.02
"""Resolution of every timer in the node (elections, heartbeats, write timeouts)."""

FORWARD_TIMEOUT_FACTOR = 1.2
"""A forwarded write waits a little longer than the leader's own write timeout, so that the
leader's definite answer (even "outcome unknown") normally arrives before ours."""

DNS_REFRESH_S = 2.0
"""How often DNS discovery asks again."""

GATEWAY_TICK_EVERY = 5
"""The gateway's timers (forward timeouts) need only every fifth tick."""

SCAVENGE_PAUSE_S = 0.002
"""Between scavenge chunks: the writer gets the disk (and LMDB's write lock) first."""

CLIENT_ACTIVE_S = 60.0

POSITION_SAMPLES = 600
"""The leader's writer position, sampled every 0.1 s for a minute: replication lag in
seconds (``Node._lag_seconds``)."""

SHUTDOWN_DELAY_S = 0.1
"""A shutdown asked over the network starts after its answer has gone out."""

ADMIN_BOOTSTRAP_POLL_S = 0.2
BOOTSTRAP_PEER = b"\x00esnode-bootstrap"
"""The reply address of the admin bootstrap write (no client: its answer is dropped)."""

log = logging.getLogger("esnode.node")


def _inbox(ref: pykka.ActorRef) -> int:
    try:
        return ref.actor_inbox.qsize()
    except (AttributeError, NotImplementedError):
        return 0


def _subscriptions(ref: pykka.ActorRef | None) -> list | None:
    """The subscriptions actor's subscriptions, read from this thread (a snapshot for
    figures only; never changed from here)."""
    weak = getattr(ref, "_actor_weakref", None)
    actor = weak() if weak is not None else None
    subs = getattr(actor, "_subs", None)
    if subs is None:
        return None
    try:
        return list(subs.values())
    except RuntimeError:  # changed size while copied: the next scrape sees it
        return []


def _subscription_count(ref: pykka.ActorRef | None) -> int | None:
    subs = _subscriptions(ref)
    return None if subs is None else len(subs)


def _all_lag(ref: pykka.ActorRef | None, committed: int) -> int | None:
    """The most committed records any ``$all`` subscription has yet to be sent."""
    subs = _subscriptions(ref)
    if subs is None:
        return None
    lags = [max(0, committed - s.next + 1) for s in subs if s.stream == "$all"]
    return max(lags, default=0)


def _count(counter) -> dict:
    return {sample.labels["outcome"]: sample.value for metric in counter.collect()
            for sample in metric.samples if sample.name.endswith("_total")}


def default_store(node: NodeSection) -> EventStore:
    from esnode.storage import open_store

    return open_store(None if node.mem_db else node.data_dir)


def default_transport(topology: Topology, node: NodeSection) -> Transport:
    """Peers by name at the topology's endpoints, or, with ``[discovery]`` seeds or DNS,
    found through gossip seeds (their names learnt from their first message)."""
    from esnode.transport.discovery import gossip_seeds, uses_seeds
    from esnode.transport.internal_codec import InternalCodec
    from esnode.transport.security import node_security, warn_if_insecure
    from esnode.transport.zmq_transport import ZmqTransport

    others = [n for n in topology.nodes if n.name != node.name]
    seeded = uses_seeds(topology)
    security = node_security(topology, node)
    warn_if_insecure(security, node.name)
    return ZmqTransport(
        node.external_bind, internal_bind=node.internal_bind, node_name=node.name,
        peers={} if seeded else {n.name: n.internal_advertise for n in others},
        members=[n.name for n in others],
        seeds=gossip_seeds(topology, node) if seeded else (),
        seed_hints={n.internal_advertise: n.name for n in others},
        internal_codec=InternalCodec(WIRE_MESSAGES + FORWARD_MESSAGES), security=security,
        internal_also=(node.internal_gossip_port,)
        if node.internal_gossip_port not in (0, node.internal_port) else ())


def default_http_face(node: Node):
    """The HTTP API (docs/http.md) on the node's ``external_http_port``: an aiohttp server on
    its own thread, speaking to the actors through the same client handler as ZeroMQ."""
    from esnode.core.types import StorageLimits
    from esnode.httpapi.api import NodeView, build_app
    from esnode.httpapi.face import HttpFace

    config = node.config
    view = NodeView(node.board, node.topology, config.name,
                    getattr(node.store, "limits", None) or StorageLimits())
    context = None
    if config.http_cert_file:
        from esnode.httpapi.tls import server_context

        context = server_context(config.http_cert_file, config.http_key_file)
    return HttpFace(config.external_http_bind, node._on_client,
                    lambda face: build_app(face, view, extra_routes=node.metrics.routes),
                    ssl_context=context, users=node.users)


def default_users(node: Node):
    """Users read from the committed log, when the topology turns authentication on."""
    if not node.topology.security.authentication:
        return None
    from esnode.core.users import LiveUsers

    return LiveUsers(node.store.read_all, lambda: node.board.readable_position)


def default_authorizer(node: Node):
    """The access gate, when the topology turns authentication on."""
    if not node.topology.security.authentication:
        return None
    from esnode.core.authz import Authorizer

    return Authorizer(node.store, lambda: node.board.readable_position)


@dataclass(frozen=True)
class Factories:
    """How a node gets each of its parts; ``replace(...)`` one to swap it in a test."""

    store: Callable[[NodeSection], EventStore] = default_store
    transport: Callable[[Topology, NodeSection], Transport] = default_transport
    clock: Callable[[], Clock] = SystemClock
    storage_actor: type[pykka.ThreadingActor] = StorageActor
    gateway_actor: type[pykka.ThreadingActor] = GatewayActor
    subscriptions_actor: type[pykka.ThreadingActor] = SubscriptionsActor
    persistent_actor: type[pykka.ThreadingActor] = PersistentSubscriptionsActor
    http_face: Callable[[Node], Any] | None = default_http_face
    """Builds the HTTP face (``None``: no HTTP even when the topology gives a port)."""
    users: Callable[[Node], Any] | None = default_users
    """Builds the ``core.users.LiveUsers`` the faces authenticate against (``None``: no
    authentication, every request anonymous)."""
    authorizer: Callable[[Node], Any] | None = default_authorizer
    """Builds the ``core.authz.Authorizer`` every client request passes (``None``: no access
    control, the open topology)."""

    def replace(self, **changes: Any) -> Factories:
        return replace(self, **changes)


class Node:
    """One running node. ``start()`` returns once it serves; ``wait()`` blocks until it stops
    and returns an exit code (non-zero after a fatal actor failure)."""

    def __init__(self, topology: Topology, name: str, factories: Factories | None = None):
        self.topology = topology
        self.config = topology.node(name)
        self.factories = factories or Factories()
        self._names = {n.name for n in topology.nodes}
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._fatal: str | None = None
        self._refs: list[pykka.ActorRef] = []
        self._positions: collections.deque = collections.deque(maxlen=POSITION_SAMPLES)
        self._clients: dict[bytes, float] = {}  # peer -> when it last sent a request

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> Node:
        f, t = self.factories, self.topology
        admin_password = None
        if t.security.authentication:  # before anything starts: never a default password
            from esnode.core.users import admin_password as configured_admin_password

            admin_password = configured_admin_password(t.security.admin_password_file,
                                                       os.environ)
        self.clock = f.clock()
        self.metrics = Metrics(self.stats)
        self.store = MeteredStore(f.store(self.config), self.metrics)
        self.board = StatusBoard(self.store.commit_position)
        self.users = f.users(self) if f.users is not None else None
        self.transport = f.transport(t, self.config)
        if self.users is not None and hasattr(self.transport, "enable_logins"):
            self.transport.enable_logins(self.users.authenticate,
                                         t.security.allow_plaintext_passwords,
                                         getattr(self.users, "throttle", None))
        self.http = None
        if self.config.external_http_port and f.http_face is not None:
            from esnode.httpapi.face import ReplyRouter

            self.http = f.http_face(self)
            self.transport = ReplyRouter(self.transport, self.http.deliver)
        try:
            self.subscriptions = f.subscriptions_actor.start(
                self.store, self.transport, self.clock, self.board, on_failure=self.fail)
            self.gateway = self.persistent = None
            self.storage = f.storage_actor.start(
                self.store, self.transport, self.clock, self.board, t, self.config.name,
                notify=self._notify, on_failure=self.fail)
            self.gateway = f.gateway_actor.start(
                self.store, self.transport, self.clock, self.storage, self.subscriptions,
                self.board, self.cluster_info, self.config.name,
                forward_timeout=t.timers.write_timeout_ms / 1000 * FORWARD_TIMEOUT_FACTOR,
                on_failure=self.fail, admin=self.admin)
            self.persistent = f.persistent_actor.start(
                self.store, self.transport, self.clock, self.board, self.storage,
                on_failure=self.fail)
            self._refs = [self.gateway, self.storage, self.subscriptions, self.persistent]
            self.authorizer = f.authorizer(self) if f.authorizer is not None else None
            self.transport.start(self._on_client, self._on_peer_gone, self._on_node)
            if self.http is not None:
                self.http.start()
            self._ticker = threading.Thread(target=self._tick, name="ticker", daemon=True)
            self._ticker.start()
            self.scavenger = Scavenger(
                self.store, self.clock.now_us, SCAVENGE_PAUSE_S,
                committed=lambda: self.board.readable_position,
            ) if hasattr(self.store, "rewrite") else None  # (a test's stand-in store)
            if self.scavenger is not None:
                self.scavenger.resume()  # one the node was running when it went down
            if admin_password is not None and self.users is not None:
                threading.Thread(target=self._bootstrap_admin, args=(admin_password,),
                                 name="admin-bootstrap", daemon=True).start()
            if t.discovery.dns:
                threading.Thread(target=self._rediscover, name="dns-discovery",
                                 daemon=True).start()
            if self.config.metrics_port:
                self._metrics_server, _ = start_http_server(
                    self.config.metrics_port, self.config.external_host, self.metrics.registry)
        except BaseException:
            self._teardown()
            raise
        log.info("node %s of cluster %s: clients on %s%s, cluster on %s:%d (writer position "
                 "%d, commit position %d)", self.config.name, t.cluster.name,
                 self.transport.external_endpoint,
                 f", HTTP on {self.http.scheme}://{self.http.bind[0]}:{self.http.port}"
                 if self.http else "",
                 *self.config.internal_bind,
                 self.store.writer_position, self.store.commit_position)
        return self

    @property
    def state(self) -> VNodeState:
        board = getattr(self, "board", None)
        return board.state if board is not None else VNodeState.Initializing

    def _rediscover(self) -> None:
        """DNS answers change (nodes replaced, or DNS was down at start): ask again now and
        then; the transport ignores endpoints it already knows."""
        from esnode.transport.discovery import gossip_seeds

        while not self._stopped.wait(DNS_REFRESH_S):
            add = getattr(self.transport, "add_seeds", None)
            if add is not None:
                add(gossip_seeds(self.topology, self.config))

    def _tick(self) -> None:
        """The node's one timer thread: tells the writer (and now and then the gateway) that
        time passed. Stops with the node."""
        n = 0
        while not self._stopped.wait(TICK_INTERVAL_S) and self._refs:
            try:
                self.storage.tell(Tick())
                n += 1
                if n % GATEWAY_TICK_EVERY == 0 and self.gateway is not None:
                    self.gateway.tell(Tick())
                    self._positions.append((time.monotonic(), self.store.writer_position))
                    self.persistent.tell(Tick())
            except pykka.ActorDeadError:
                return

    def _bootstrap_admin(self, password: str) -> None:
        """First start of a secured cluster: the leader writes ``$user-admin`` (expected
        version ``no_stream``, so once however many nodes try); every node then reads it
        from the log. Returns once the log holds an admin."""
        while not self._stopped.wait(ADMIN_BOOTSTRAP_POLL_S):
            if not self.board.is_leader:
                continue
            write = self.users.refresh().bootstrap(password)
            if write is None:
                return
            try:  # the answer goes to a peer no socket knows: dropped; the loop re-checks
                self.storage.tell(WriteBatch([PendingWrite(BOOTSTRAP_PEER, 0, write)]))
            except pykka.ActorDeadError:
                return

    def fail(self, reason: str) -> None:
        """A crashed actor takes the node down loudly rather than leaving it half alive."""
        log.critical("fatal: %s; shutting the node down", reason)
        self._fatal = reason
        threading.Thread(target=self.stop, name="fatal-stop", daemon=True).start()

    def stop(self) -> None:
        """Graceful stop: refuse new work, answer or fail what is in flight, close storage."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            log.info("node %s shutting down", self.config.name)
            scavenger = getattr(self, "scavenger", None)
            if scavenger is not None:
                scavenger.stop(resumable=True)
            if self.http is not None:
                self.http.stop_accepting()
            if self._refs:
                self.transport.pause_receiving()
                self._try_tell(self.gateway, StopAccepting())
                # Barriers: the inboxes are FIFO, so once these return, every queued write
                # was committed and answered.
                for ref in (self.gateway, self.storage):
                    self._try_ask(ref, Shutdown())
                self._try_ask(self.subscriptions, Shutdown())
                self._try_ask(self.persistent, Shutdown())
            self._teardown()
            log.info("node %s stopped", self.config.name)
            self._stopped.set()

    @staticmethod
    def _try_tell(ref: pykka.ActorRef, message: object) -> None:
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            pass

    def _try_ask(self, ref: pykka.ActorRef, message: object) -> None:
        """Ask and wait; a failure inside the actor (say, the final flush at shutdown)
        makes the node exit non-zero, never vanishes."""
        try:
            ref.ask(message, timeout=10)
        except pykka.ActorDeadError:
            pass  # it died earlier, and said so then (on_failure)
        except (pykka.Timeout, Exception) as exc:
            reason = (f"{type(message).__name__} to {ref.actor_class.__name__} failed: "
                      f"{type(exc).__name__}: {exc}")
            log.critical("fatal: %s", reason, exc_info=exc)
            self._fatal = self._fatal or reason

    def stats(self) -> dict:
        """This node's figures (``esnode stats``, and the gauges of the metrics)."""
        board, store = self.board, self.store
        leader = board.is_leader
        writer = store.writer_position
        members = [{"name": m.name, "state": VNodeState(m.state).name, "alive": m.is_alive,
                    "member_alive": int(m.is_alive),
                    "member_writer_position": m.writer_position,
                    "replication_lag_records": max(0, writer - m.writer_position)
                    if leader and m.name != self.config.name else None,
                    "replication_lag_seconds": self._lag_seconds(m.writer_position, writer)
                    if leader and m.name != self.config.name else None}
                   for m in board.members]
        refs = {"gateway": getattr(self, "gateway", None),
                "storage": getattr(self, "storage", None),
                "subscriptions": getattr(self, "subscriptions", None),
                "persistent": getattr(self, "persistent", None)}
        queues = {name: _inbox(ref) for name, ref in refs.items() if ref is not None}
        progress = self.scavenger.progress if self.scavenger is not None else None
        path = getattr(store, "path", None)
        data_file = os.path.join(path, "data.mdb") if path else None
        return {
            "node": self.config.name, "state": board.state.name, "term": board.term,
            "is_leader": int(leader), "leader": board.leader, "writer_position": writer,
            "commit_position": board.readable_position,
            "subscriptions": _subscription_count(refs["subscriptions"]),
            "subscriptions_all_lag_max": _all_lag(refs["subscriptions"],
                                                  board.readable_position),
            "clients": self._active_clients(),
            "storage_live_bytes": store.live_bytes() if hasattr(store, "live_bytes") else None,
            "storage_file_bytes": os.path.getsize(data_file)
            if data_file and os.path.exists(data_file) else None,
            "storage_map_bytes": getattr(store, "map_size", None),
            "scavenge_running": int(bool(self.scavenger and self.scavenger.running)),
            "scavenge_percent": round(progress.percent, 1) if progress else None,
            "scavenge_records": progress.scavenged if progress else None,
            "scavenge_bytes_reclaimed": progress.bytes_reclaimed if progress else None,
            "gc_frozen_objects": gc.get_freeze_count(),
            "appends": _count(self.metrics.requests),
            "events_written": self.metrics.events._value.get(),
            "queues": queues, "members": members,
        }

    def _active_clients(self) -> int:
        """Clients (connections) that sent a request in the last ``CLIENT_ACTIVE_S``;
        ZeroMQ does not tell connections, so activity stands for them."""
        cutoff = time.monotonic() - CLIENT_ACTIVE_S
        seen = self._clients
        for peer in [p for p, t in list(seen.items()) if t < cutoff]:
            seen.pop(peer, None)
        return len(seen)

    def _lag_seconds(self, position: int, writer: int) -> float:
        """How long ago this node (the leader) first held a record that a member at
        ``position`` still lacks: its replication lag in time, to the sampling period (0.1 s);
        at most the samples' span (a minute)."""
        if position >= writer:
            return 0.0
        now = time.monotonic()
        samples = list(self._positions)
        for sampled_at, held in samples:
            if held > position:
                return round(now - sampled_at, 3)
        return round(now - samples[0][0], 3) if samples else 0.0

    def _teardown(self) -> None:
        server = getattr(self, "_metrics_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
        for ref in self._refs:
            try:
                ref.stop(timeout=10)
            except (pykka.ActorDeadError, pykka.Timeout):
                pass
        self._refs = []
        http = getattr(self, "http", None)
        if http is not None:
            http.stop()
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.stop()
        store = getattr(self, "store", None)
        if store is not None:
            store.close()

    def wait(self, timeout: float | None = None) -> int:
        self._stopped.wait(timeout)
        return 1 if self._fatal else 0

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    # --- wiring callbacks (run on the calling thread: keep them tiny) -----------------------
    def _on_client(self, envelopes: list) -> None:
        seen, now = self._clients, time.monotonic()  # for the clients gauge: one dict store
        for env in envelopes:                          # per request, no lock, no hop
            seen[env.peer] = now
        try:
            if self.authorizer is not None:  # one gate for ZeroMQ and HTTP, before any actor
                envelopes, refused = self.authorizer.screen(envelopes)
                if refused:
                    self.transport.send_client(refused)
                if not envelopes:
                    return
            groups = [e for e in envelopes if type(e.request) in GROUP_REQUESTS]
            if groups:  # persistent subscription groups have their own actor
                self.persistent.tell(GroupRequests(groups))
                envelopes = [e for e in envelopes if type(e.request) not in GROUP_REQUESTS]
                if not envelopes:
                    return
            if self.board.is_leader:
                writes, envelopes = split_writes(envelopes)
                if writes:
                    self.storage.tell(WriteBatch(writes))
                if not envelopes:
                    return
            self.gateway.tell(ClientBatch(envelopes))
        except pykka.ActorDeadError:
            pass  # stopping: the clients see their requests time out as outcome unknown

    def _on_peer_gone(self, peer: bytes) -> None:
        try:
            self.subscriptions.tell(PeerGone(peer))
            if self.persistent is not None:
                self.persistent.tell(PeerGone(peer))
        except pykka.ActorDeadError:
            pass

    def _on_node(self, batch: list) -> None:
        """Cluster traffic: forwarded-write answers go to the gateway, the rest to the
        writer (which checks that each message's claimed sender is its actual peer)."""
        if self.authorizer is not None and self.users is not None:
            batch = self._recheck_forwards(batch)
        replies = [item for item in batch if type(item[1]) is ForwardReply]
        try:
            if replies:
                self.gateway.tell(ClusterInbound(replies))
            if len(replies) < len(batch):
                self.storage.tell(ClusterInbound(
                    [item for item in batch if type(item[1]) is not ForwardReply]))
        except pykka.ActorDeadError:
            pass

    def _recheck_forwards(self, batch: list) -> list:
        """Writes other nodes forwarded are checked again here, with the user they carry
        and this node's ACLs; a refused one is answered to its sender at once."""
        kept, refused = [], []
        for sender, message in batch:
            if type(message) in (ForwardAppend, ForwardDelete):
                error = self.authorizer.check_forward(message, self.users)
                if error is not None:
                    refused.append((sender, ForwardReply(
                        self.config.name, message.forward_id, "error", error_body(error))))
                    continue
            kept.append((sender, message))
        if refused:
            self.transport.send_node(refused)
        return kept

    def _notify(self, message: object) -> None:
        """The writer's news: a new commit position (readers), a new status (everyone).

        A commit wakes only the actors that need it: the gateway reads the commit position
        from the board at each read, and the two subscription actors say on the board when
        they are idle. Waking three threads per commit cost a lone append about 0.1 ms (they
        took the GIL before the transport thread could send the answer; docs/performance.md)."""
        board = self.board
        try:
            if type(message) is Committed:
                if not board.subscriptions_idle:
                    self.subscriptions.tell(message)
                if self.persistent is not None and not board.groups_idle:
                    self.persistent.tell(message)
                return
            if self.gateway is not None:
                self.gateway.tell(message)
            if type(message) is StatusChanged:
                self.subscriptions.tell(message)
                if self.persistent is not None:
                    self.persistent.tell(message)
        except pykka.ActorDeadError:
            pass

    def admin(self, request: m.Admin) -> dict:
        """An operator's request (docs/operations.md), answered at once: resign and priority
        go to the writer's cluster core, a shutdown starts after the answer is sent, scavenge
        runs on its own thread (its progress is the answer)."""
        action = request.action
        if action in ("resign", "set_priority"):
            if action == "resign" and not self.board.is_leader:
                raise NotLeader(self.board.leader_external,
                                f"only the leader resigns; the leader is {self.board.leader}")
            self.storage.tell(AdminCommand(action, request.value))
            return {"node": self.config.name, "action": action, "accepted": True}
        if action == "shutdown":
            log.info("shutdown requested by an operator")
            threading.Timer(SHUTDOWN_DELAY_S, self.stop).start()
            return {"node": self.config.name, "action": action, "accepted": True}
        if action == "stats":
            return self.stats()
        if self.scavenger is None:
            raise NotReady("this node's store cannot scavenge")
        if action == "scavenge":
            self.scavenger.start()
        elif action == "scavenge_stop":
            self.scavenger.stop()
        progress = self.scavenger.progress
        return {"node": self.config.name, "action": action,
                "scavenge": None if progress is None else
                {**asdict(progress), "percent": round(progress.percent, 1),
                 "running": self.scavenger.running}}

    def cluster_info(self) -> dict:
        board, c = self.board, self.config
        members = [{
            "name": m.name, "state": VNodeState(m.state).name, "alive": m.is_alive,
            "external": [m.external_host, m.external_port], "epoch": m.epoch_number,
            "writer_position": m.writer_position, "commit_position": m.commit_position,
            "priority": board.priorities.get(m.name, self.topology.node(m.name).priority
                                             if m.name in self._names else 0),
        } for m in board.members]
        if not members:  # before the first gossip round: at least this node
            members = [{"name": c.name, "state": board.state.name, "alive": True,
                        "external": list(c.external_advertise), "epoch": board.term,
                        "writer_position": self.store.writer_position,
                        "commit_position": board.readable_position, "priority": c.priority}]
        return {"cluster": self.topology.cluster.name, "node": c.name,
                "state": board.state.name, "leader": board.leader, "members": members,
                "incarnation": board.incarnation}
