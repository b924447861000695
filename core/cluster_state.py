"""What every cluster core shares: configuration, the state loaded from storage at start,
and the node's running knowledge of its own log (``LogView``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from esnode.core.invariants import invariant
from esnode.core.types import Epoch, Vote


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Timers are seconds of the ``now`` the shell passes in. Sizes in position units are
    whatever the storage's positions count (bytes for a byte-addressed log)."""

    node_id: str
    members: tuple[str, ...]
    """Every configured member, this node included: the cluster size is ``len(members)``."""
    priority: int = 0
    election_timeout: float = 1.0
    """Base election timeout; each node waits a random time in [T, 2T) (shorter with a
    higher priority). Also the check-quorum window and the pre-vote "leader lease"."""
    heartbeat_interval: float = 0.1
    subscribe_timeout: float = 0.5
    resend_timeout: float = 0.5
    """Unacknowledged records are shipped again after this long without progress."""
    batch_records: int = 500
    batch_bytes: int = 1 << 20
    max_inflight_records: int = 4000
    max_inflight_bytes: int = 8 << 20
    max_truncation: int = 1_000_000
    """Largest tail (in position units) a replica truncates on line; more is refused."""
    subscription_epochs: int = 20
    epoch_cache: int = 1000
    gossip_interval: float = 0.2
    dead_member_timeout: float = 2.0
    internal_endpoint: tuple[str, int] = ("", 0)
    external_endpoint: tuple[str, int] = ("", 0)

    def __post_init__(self) -> None:
        if self.node_id not in self.members:
            raise ValueError(f"node {self.node_id!r} is not among the members {self.members}")
        if len(set(self.members)) != len(self.members):
            raise ValueError("duplicate member names")
        if not 0 < self.heartbeat_interval < self.election_timeout:
            raise ValueError("heartbeat_interval must be positive and below election_timeout")

    @property
    def cluster_size(self) -> int:
        return len(self.members)

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(m for m in self.members if m != self.node_id)

    @classmethod
    def from_topology(cls, topology, name: str, **overrides) -> CoreConfig:
        """Build from ``core.config.Topology`` (milliseconds become seconds)."""
        node = topology.node(name)
        t = topology.timers
        values = dict(
            node_id=name, members=tuple(n.name for n in topology.nodes),
            priority=node.priority, election_timeout=t.election_timeout_ms / 1000,
            heartbeat_interval=t.heartbeat_interval_ms / 1000,
            gossip_interval=t.gossip_interval_ms / 1000,
            dead_member_timeout=t.dead_member_ms / 1000,
            max_truncation=topology.cluster.max_truncation,
            internal_endpoint=node.internal_advertise, external_endpoint=node.external_advertise)
        values.update(overrides)
        return cls(**values)


class PersistedState(NamedTuple):
    """Read from storage when the node starts (``last_vote()``, ``epochs()[-epoch_cache:]``,
    ``writer_position``, ``commit_position``)."""

    vote: Vote | None = None
    epochs: tuple[Epoch, ...] = ()
    writer_position: int = -1
    commit_position: int = -1


@dataclass(slots=True)
class LogView:
    """The node's knowledge of its own log, updated only from reports (never guessed).

    ``written``: end of the log as handed to storage (maybe not yet fsynced);
    ``durable``: end of the fsynced log; ``commit``: highest position known committed.
    """

    written: int = -1
    durable: int = -1
    commit: int = -1
    epochs: list[Epoch] = field(default_factory=list)
    truncating: int = 0
    """``Truncate`` effects whose ``Truncated`` report has not come back yet: durability
    reports until then describe the log before the truncation and are ignored."""

    @classmethod
    def from_persisted(cls, persisted: PersistedState) -> LogView:
        return cls(persisted.writer_position, persisted.writer_position,
                   persisted.commit_position, list(persisted.epochs))

    def last_epoch_number(self) -> int:
        """Epoch of the last durable record (-1: none): the "term" in Raft's up-to-date rule."""
        for epoch in reversed(self.epochs):
            if epoch.start_position <= self.durable:
                return epoch.number
        return -1

    def add_epochs(self, epochs, cache: int) -> None:
        for epoch in epochs:
            if not self.epochs or epoch.start_position > self.epochs[-1].start_position:
                self.epochs.append(epoch)
        del self.epochs[:-cache]

    def truncate(self, position: int) -> None:
        self.written = position
        self.durable = min(self.durable, position)
        self.truncating += 1
        self.drop_epochs_after(position)

    def durable_report(self, writer_position: int) -> bool:
        """Storage says the log is durable up to ``writer_position``; False if ignored."""
        if self.truncating:
            return False
        invariant(writer_position <= self.written,
                  f"storage reports its log durable up to {writer_position}, past everything "
                  f"it was given ({self.written})")
        self.durable = max(self.durable, writer_position)
        return True

    def truncated(self, writer_position: int) -> None:
        """A truncation is done and storage's log now ends at ``writer_position`` (every
        write before it is done too, so that is durable)."""
        invariant(self.truncating > 0, "a truncation was reported that nobody asked for")
        self.truncating -= 1
        self.durable = min(writer_position, self.written)
        if not self.truncating:
            self.written = writer_position

    def drop_epochs_after(self, position: int) -> None:
        while self.epochs and self.epochs[-1].start_position > position:
            self.epochs.pop()

    def epochs_in(self, after: int, last: int) -> tuple[Epoch, ...]:
        return tuple(e for e in self.epochs if after < e.start_position <= last)
