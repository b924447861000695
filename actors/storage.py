"""Storage actor: the pykka adapter around the node's ``Replica`` (``actors/replica.py``).

Everything that writes the log happens on this one thread: the replica (group commit,
replicated records, truncations, epochs, votes, the cluster core's effects) is a plain
synchronous object, and this actor only turns its inbox into calls on it. The messages it
handles are the replica's table, ``Replica.handlers``. The inbox is the replica's
``Mailbox``: group commit asks it whether more is queued and posts its ``Flush`` note to it.

A failure is never swallowed: whether a message came by ``tell`` (pykka then calls
``on_failure``) or by ``ask`` (pykka would hand the exception to the caller and keep the actor
running), the node is told to stop, and this actor refuses further work.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import pykka

from esnode.actors.messages import Flush
from esnode.actors.replica import Replica
from esnode.actors.status import StatusBoard
from esnode.core.clock import Clock
from esnode.core.cluster_state import CoreConfig
from esnode.core.config import Topology
from esnode.core.node_core import NodeCore
from esnode.storage.port import EventStore
from esnode.transport.port import Transport

log = logging.getLogger("esnode.storage")

_FLUSH = Flush()


class StorageActor(pykka.ThreadingActor):
    replica_class = Replica
    """Swappable by subclassing, as ``NodeCore``'s parts are (a test's broken writer)."""

    def __init__(self, store: EventStore, transport: Transport, clock: Clock,
                 board: StatusBoard, topology: Topology, node_name: str,
                 notify: Callable[[object], None],
                 on_failure: Callable[[str], None] | None = None,
                 core_class: type[NodeCore] = NodeCore, seed: int | None = None) -> None:
        super().__init__()
        self._parts = (store, transport, clock, board, notify)
        self._topology = topology
        self._name = node_name
        self._on_fatal = on_failure
        self._core_class = core_class
        self._rng = random.Random(seed)
        self._failed = False
        self.replica: Replica | None = None

    # --- the Mailbox the replica's group commit uses ------------------------------------------
    def empty(self) -> bool:
        return self.actor_inbox.empty()

    def post_flush(self) -> None:
        self.actor_ref.tell(_FLUSH)

    # --- pykka hooks -----------------------------------------------------------------------------
    def on_start(self) -> None:
        store, transport, clock, board, notify = self._parts
        t = self._topology
        try:
            self.replica = self.replica_class(
                store, transport, clock, CoreConfig.from_topology(t, self._name),
                mailbox=self, board=board, notify=notify,
                # Members known only by their gossip endpoint (a cluster started from command
                # lines) have no external endpoint here: gossip tells it (Replica._external_of).
                externals={n.name: n.external_advertise for n in t.nodes if n.external_port},
                write_timeout=t.timers.write_timeout_ms / 1000, core_class=self._core_class,
                rng=self._rng)
            self.replica.start()
        except Exception as exc:
            self._fail(exc)
            raise

    def on_receive(self, message: object) -> None:
        if self._failed:
            return  # stopped by an earlier failure: the node is going down
        try:
            self.replica.handle(message)
        except Exception as exc:
            self._fail(exc)
            raise

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        self._fail(exception_value)

    def _fail(self, exc: BaseException) -> None:
        if self._failed:
            return
        self._failed = True
        log.critical("storage actor crashed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        if self._on_fatal is not None:
            self._on_fatal(f"storage actor crashed: {exc}")
