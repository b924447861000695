"""The composition root: builds one node from its topology entry and a set of factories.

Tests swap any factory (store, transport, clock, or an actor class) for a double; production
uses the defaults. Nothing else in the code base constructs actors or sockets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pykka

from esnode.actors.gateway import GatewayActor
from esnode.actors.messages import ClientBatch, Committed, PeerGone, Shutdown, StopAccepting
from esnode.actors.storage import StorageActor
from esnode.actors.subscriptions import SubscriptionsActor
from esnode.core.clock import Clock, SystemClock
from esnode.core.config import NodeSection, Topology
from esnode.storage.port import EventStore
from esnode.transport.port import Transport

log = logging.getLogger("esnode.node")


def default_store(node: NodeSection) -> EventStore:
    from esnode.storage import open_store

    return open_store(None if node.mem_db else node.data_dir)


def default_transport(node: NodeSection) -> Transport:
    from esnode.transport.zmq_transport import ZmqTransport

    return ZmqTransport(node.external_bind)


@dataclass(frozen=True)
class Factories:
    """How a node gets each of its parts; ``replace(...)`` one to swap it in a test."""

    store: Callable[[NodeSection], EventStore] = default_store
    transport: Callable[[NodeSection], Transport] = default_transport
    clock: Callable[[], Clock] = SystemClock
    storage_actor: type[pykka.ThreadingActor] = StorageActor
    gateway_actor: type[pykka.ThreadingActor] = GatewayActor
    subscriptions_actor: type[pykka.ThreadingActor] = SubscriptionsActor

    def replace(self, **changes: Any) -> Factories:
        return replace(self, **changes)


class Node:
    """One running node. ``start()`` returns once it serves; ``wait()`` blocks until it stops
    and returns an exit code (non-zero after a fatal actor failure)."""

    def __init__(self, topology: Topology, name: str, factories: Factories | None = None):
        self.topology = topology
        self.config = topology.node(name)
        self.factories = factories or Factories()
        self.state = "Initializing"
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._fatal: str | None = None
        self._refs: list[pykka.ActorRef] = []

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> Node:
        f = self.factories
        self.clock = f.clock()
        self.store = f.store(self.config)
        self.transport = f.transport(self.config)
        try:
            self.subscriptions = f.subscriptions_actor.start(
                self.store, self.transport, self.clock, on_failure=self.fail)
            self.storage = f.storage_actor.start(
                self.store, self.transport, self.clock, on_committed=self._committed,
                on_failure=self.fail)
            self.gateway = f.gateway_actor.start(
                self.store, self.transport, self.clock, self.storage, self.subscriptions,
                self.cluster_info, on_failure=self.fail)
            self._refs = [self.gateway, self.storage, self.subscriptions]
            self.transport.start(self._on_client, self._on_peer_gone)
        except BaseException:
            self._teardown()
            raise
        self._set_state("Leader")
        log.info("node %s serving clients on %s (writer position %d)", self.config.name,
                 self.transport.external_endpoint, self.store.writer_position)
        return self

    def _set_state(self, state: str) -> None:
        if state != self.state:
            log.info("state %s -> %s", self.state, state)
            self.state = state

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
            self._set_state("ShuttingDown")
            if self._refs:
                self.transport.pause_receiving()
                self._try_tell(self.gateway, StopAccepting())
                # Barriers: the inboxes are FIFO, so once these return, every queued write
                # was committed and answered.
                for ref in (self.gateway, self.storage):
                    self._try_ask(ref, Shutdown())
                self._try_ask(self.subscriptions, Shutdown())
            self._teardown()
            log.info("node %s stopped", self.config.name)
            self._stopped.set()

    @staticmethod
    def _try_tell(ref: pykka.ActorRef, message: object) -> None:
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            pass

    @staticmethod
    def _try_ask(ref: pykka.ActorRef, message: object) -> None:
        try:
            ref.ask(message, timeout=10)
        except (pykka.ActorDeadError, pykka.Timeout):
            pass
        except Exception:  # the actor's own failure was already logged
            pass

    def _teardown(self) -> None:
        for ref in self._refs:
            try:
                ref.stop(timeout=10)
            except (pykka.ActorDeadError, pykka.Timeout):
                pass
        self._refs = []
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
        try:
            self.gateway.tell(ClientBatch(envelopes))
        except pykka.ActorDeadError:
            pass  # stopping: the clients see their requests time out as outcome unknown

    def _on_peer_gone(self, peer: bytes) -> None:
        try:
            self.subscriptions.tell(PeerGone(peer))
        except pykka.ActorDeadError:
            pass

    def _committed(self, message: Committed) -> None:
        self.gateway.tell(message)
        self.subscriptions.tell(message)

    def cluster_info(self) -> dict:
        c = self.config
        member = {
            "name": c.name, "state": self.state, "alive": True,
            "external": list(c.external_advertise), "epoch": 0,
            "writer_position": self.store.writer_position,
            "commit_position": self.store.writer_position, "priority": c.priority,
        }
        return {"cluster": self.topology.cluster.name, "node": c.name,
                "state": self.state, "leader": c.name, "members": [member]}
