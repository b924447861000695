"""Typed cluster messages: what the pure cores take in.

Two kinds:

* **wire messages** travel between nodes on the internal network (register them on the
  internal codec's allow-list; ``WIRE_MESSAGES`` lists them). Every one names its sender in a
  field (``candidate_id``, ``voter_id``, ``leader_id``, ``replica_id``, ``sender_id``); the
  transport must check that this matches the authenticated peer.
* **reports** come from the node's own shell after it carried out an effect
  (``EpochWritten`` after ``WriteEpoch``, ...). They never travel on the wire.

All are frozen, slotted dataclasses validated on construction (``ValueError``). Positions are
log positions as in the storage port: ``-1`` means "before the first record".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from esnode.core.types import Epoch

Record = tuple[int, bytes]
"""A raw log record as shipped: ``(position, bytes)`` (``EventStore.read_raw``)."""


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _int(value: object, name: str, minimum: int = -1) -> None:
    _check(type(value) is int and value >= minimum, f"{name} must be an integer >= {minimum}")


def _name(value: object, name: str) -> None:
    _check(type(value) is str and value != "", f"{name} must be a non-empty string")


def _epochs(value: object) -> None:
    _check(isinstance(value, tuple) and all(isinstance(e, Epoch) for e in value),
           "epochs must be a tuple of Epoch")


# --- elections ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VoteRequest:
    """Ask for a vote in ``term``. ``pre_vote``: a trial round (Raft pre-vote) that changes
    nobody's term or vote; the candidate bumps its term only after a majority would vote.
    ``last_epoch``/``last_position`` describe the candidate's durable log."""

    term: int
    candidate_id: str
    last_epoch: int
    last_position: int
    pre_vote: bool = False

    def __post_init__(self) -> None:
        _int(self.term, "term", 1)
        _name(self.candidate_id, "candidate_id")
        _int(self.last_epoch, "last_epoch")
        _int(self.last_position, "last_position")


@dataclass(frozen=True, slots=True)
class VoteResponse:
    """``term`` is the requested term when granted, else the voter's own term (so a
    candidate that is behind learns the current term)."""

    term: int
    voter_id: str
    granted: bool
    pre_vote: bool = False

    def __post_init__(self) -> None:
        _int(self.term, "term", 0)
        _name(self.voter_id, "voter_id")


@dataclass(frozen=True, slots=True)
class TermNotice:
    """Answer to a message from a stale term: "the cluster is at ``term`` now"."""

    term: int
    sender_id: str

    def __post_init__(self) -> None:
        _int(self.term, "term", 0)
        _name(self.sender_id, "sender_id")


# --- replication --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader to each peer, every heartbeat interval. ``subscription_id`` is the peer's
    subscription the leader holds (-1: none), so a replica notices a lost subscription."""

    term: int
    leader_id: str
    commit_position: int
    writer_position: int
    subscription_id: int = -1

    def __post_init__(self) -> None:
        _int(self.term, "term", 1)
        _name(self.leader_id, "leader_id")
        _int(self.commit_position, "commit_position")
        _int(self.writer_position, "writer_position")
        _int(self.subscription_id, "subscription_id")


@dataclass(frozen=True, slots=True)
class SubscribeReplica:
    """Replica to leader: "my log ends at ``writer_position`` and these are my last epochs"."""

    term: int
    replica_id: str
    subscription_id: int
    writer_position: int
    epochs: tuple[Epoch, ...]

    def __post_init__(self) -> None:
        _int(self.term, "term", 1)
        _name(self.replica_id, "replica_id")
        _int(self.subscription_id, "subscription_id", 0)
        _int(self.writer_position, "writer_position")
        _epochs(self.epochs)


@dataclass(frozen=True, slots=True)
class ReplicaSubscribed:
    """Leader to replica: keep your records up to ``subscription_position`` (truncate the
    rest); records after it follow."""

    term: int
    leader_id: str
    subscription_id: int
    subscription_position: int
    leader_writer_position: int

    def __post_init__(self) -> None:
        _int(self.term, "term", 1)
        _name(self.leader_id, "leader_id")
        _int(self.subscription_id, "subscription_id", 0)
        _int(self.subscription_position, "subscription_position")
        _int(self.leader_writer_position, "leader_writer_position")


@dataclass(frozen=True, slots=True)
class ReplicateRecords:
    """A batch of records continuing the replica's log after ``after_position``.
    ``epochs`` lists the epochs whose records are in this batch (so the replica knows its
    own epochs without parsing records)."""

    term: int
    leader_id: str
    subscription_id: int
    after_position: int
    records: tuple[Record, ...]
    epochs: tuple[Epoch, ...]
    commit_position: int

    def __post_init__(self) -> None:
        _int(self.term, "term", 1)
        _name(self.leader_id, "leader_id")
        _int(self.subscription_id, "subscription_id", 0)
        _int(self.after_position, "after_position")
        _check(isinstance(self.records, tuple) and len(self.records) > 0,
               "records must be a non-empty tuple")
        last = self.after_position
        for rec in self.records:
            _check(isinstance(rec, tuple) and len(rec) == 2 and type(rec[0]) is int
                   and rec[0] > last and isinstance(rec[1], bytes),
                   "records must be (position, bytes) with increasing positions")
            last = rec[0]
        _epochs(self.epochs)
        _int(self.commit_position, "commit_position")

    @property
    def last_position(self) -> int:
        return self.records[-1][0]


@dataclass(frozen=True, slots=True)
class ReplicaAck:
    """Replica to leader: my log is durable (fsynced) up to ``durable_position``."""

    term: int
    replica_id: str
    subscription_id: int
    durable_position: int

    def __post_init__(self) -> None:
        _int(self.term, "term", 1)
        _name(self.replica_id, "replica_id")
        _int(self.subscription_id, "subscription_id", 0)
        _int(self.durable_position, "durable_position")


# --- gossip -------------------------------------------------------------------------------------
class MemberInfo(NamedTuple):
    """One member as gossiped. ``timestamp`` is set by the member itself (its own clock);
    only the member's own entries are compared by it."""

    name: str
    instance_id: str
    state: int  # VNodeState value
    is_alive: bool
    internal_host: str
    internal_port: int
    external_host: str
    external_port: int
    epoch_number: int
    writer_position: int
    commit_position: int
    priority: int
    timestamp: float


class ClientMemberInfo(NamedTuple):
    """What clients see of a member: external endpoint only."""

    name: str
    state: int
    is_alive: bool
    external_host: str
    external_port: int
    epoch_number: int
    writer_position: int
    commit_position: int


@dataclass(frozen=True, slots=True)
class Gossip:
    """Push: the sender's whole view. The receiver merges it and answers ``GossipReply``."""

    sender_id: str
    members: tuple[MemberInfo, ...]

    def __post_init__(self) -> None:
        _name(self.sender_id, "sender_id")
        _check(isinstance(self.members, tuple)
               and all(isinstance(m, MemberInfo) for m in self.members),
               "members must be a tuple of MemberInfo")


@dataclass(frozen=True, slots=True)
class GossipReply:
    """Pull: the receiver's merged view."""

    sender_id: str
    members: tuple[MemberInfo, ...]

    __post_init__ = Gossip.__post_init__


WIRE_MESSAGES: tuple[type, ...] = (
    VoteRequest, VoteResponse, TermNotice, Heartbeat, SubscribeReplica, ReplicaSubscribed,
    ReplicateRecords, ReplicaAck, Gossip, GossipReply,
)
"""Cluster messages the internal codec may accept."""


# --- reports from the node's own shell (never on the wire) -------------------------------------
@dataclass(frozen=True, slots=True)
class EpochWritten:
    """``WriteEpoch`` was carried out: this epoch's record is durable."""

    epoch: Epoch


@dataclass(frozen=True, slots=True)
class RecordsRead:
    """``ReadRecords`` was carried out (``records`` may be empty)."""

    peer: str
    subscription_id: int
    after_position: int
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class RecordsWritten:
    """``WriteRecords`` was carried out: the log is durable up to ``writer_position``."""

    writer_position: int


@dataclass(frozen=True, slots=True)
class Truncated:
    """``Truncate`` was carried out: the log now ends at ``writer_position``
    (``storage.writer_position`` after the truncation, which may be below the truncation
    point when no record sits exactly at it)."""

    writer_position: int


@dataclass(frozen=True, slots=True)
class LocalWritten:
    """Leader only: the storage actor made client writes durable up to ``writer_position``."""

    writer_position: int


@dataclass(frozen=True, slots=True)
class LocalPrepared:
    """Leader only: the storage actor is about to make these records durable (they are
    encoded, the fsync has not happened). The leader may ship them to followers now, so that
    their fsyncs overlap its own; its own copy counts towards the majority only after
    ``LocalWritten``. If the local write then fails, the shell must stop the node (its log
    would differ from what it shipped)."""

    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class PeerDisconnected:
    """The transport saw the TCP connection to ``peer`` close (a killed process closes its
    connections at once): a hint, faster than a missed heartbeat, never proof of death."""

    peer: str
