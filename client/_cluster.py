"""What a client shares about the cluster (both flavours, every flow): the node it talks
to, the connection generation, the last view, the stats and the notices."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from esnode.client.errors import EsError
from esnode.client.model import MemberInfo
from esnode.client.settings import ConnectionSettings

log = logging.getLogger("esnode.client")

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
class Resubscribing:
    """A lost subscription (``what``: "subscription to 's'", "connection to group ...") could
    not be made again yet (``error``); attempt ``attempt`` comes after ``delay`` seconds. It
    keeps trying until ``elapsed`` reaches ``patience``."""

    what: str
    attempt: int
    elapsed: float
    patience: float
    delay: float
    error: EsError

    def __str__(self) -> str:
        return (f"{self.what} still lost after {self.elapsed:.1f}s of "
                f"{self.patience:g}s patience ({self.error.code}: {self.error}); trying again "
                f"in {self.delay:.2f}s")


@dataclass(frozen=True, slots=True)
class DiscoveryFailed:
    """Re-discovery gave up (the error raised to the operation that needed it)."""

    error: EsError

    def __str__(self) -> str:
        return f"discovery failed: {self.error}"


Notice = Reconnected | NodeChanged | Retrying | Resubscribed | Resubscribing | DiscoveryFailed


@dataclass(slots=True)
class ClientStats:
    """Counters of what the client did to keep going (``client.stats``)."""

    retries: int = 0
    reconnections: int = 0
    node_changes: int = 0
    resubscriptions: int = 0
    discovery_failures: int = 0
    heartbeat_failures: int = 0
    node_restarts: int = 0
    resubscribe_waits: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_COUNTERS = {Retrying: "retries", Reconnected: "reconnections", NodeChanged: "node_changes",
             Resubscribed: "resubscriptions", DiscoveryFailed: "discovery_failures",
             Resubscribing: "resubscribe_waits"}


class ClusterState:
    """The node a client talks to and the ``generation`` of its connection (bumped on every
    (re)connection, so that of many callers failing at once only the first re-discovers),
    the last cluster view, the stats and the callbacks. Shared by every flow of one client;
    its methods are safe from any thread."""

    def __init__(self, settings: ConnectionSettings, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        """Monotonic seconds, for the flows' deadlines and patience (a fake in tests)."""
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
        level = logging.INFO if type(notice) in (Retrying, Resubscribed, Resubscribing) \
            else logging.WARNING
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


