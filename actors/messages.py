"""Messages between the node's actors (never on the wire)."""

from __future__ import annotations

from dataclasses import dataclass

from esnode.core.messages import ClientEnvelope
from esnode.core.types import WriteRequest


@dataclass(frozen=True, slots=True)
class ClientBatch:
    """Requests decoded by the transport in one burst."""

    envelopes: list[ClientEnvelope]


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """A write waiting for group commit, with the address its outcome goes back to: a local
    client (``peer``, ``corr``), or, when ``origin`` names a node, the forward id ``corr`` of
    that node's gateway."""

    peer: bytes
    corr: int
    request: WriteRequest
    origin: str = ""


@dataclass(frozen=True, slots=True)
class WriteBatch:
    writes: list[PendingWrite]


@dataclass(frozen=True, slots=True)
class Flush:
    """Storage's note to itself: commit everything queued so far in one transaction."""


@dataclass(frozen=True, slots=True)
class Committed:
    """The log is committed (readable by clients) up to ``position``."""

    position: int


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    envelope: ClientEnvelope


@dataclass(frozen=True, slots=True)
class PeerGone:
    peer: bytes


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Answer or fail everything in flight, then stop."""


@dataclass(frozen=True, slots=True)
class StopAccepting:
    """The node is shutting down: refuse new client work with ``not_ready``."""


@dataclass(frozen=True, slots=True)
class ClusterInbound:
    """Messages from other nodes, as ``(sender, message)`` in arrival order."""

    messages: list


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes: timers of the cluster core, write and forward timeouts."""


@dataclass(frozen=True, slots=True)
class AdminCommand:
    """An operator's request for the cluster core: ``resign`` or ``set_priority``."""

    action: str
    value: int | None = None


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """The node's state, term or leader changed."""

    state: object
    term: int
    leader: str | None
