"""Effects: what a pure core asks its shell to do.

THE CONTRACT (etcd-raft's ``Ready`` rule, Event Store #3472's lesson):

1. Carry out the effects of one ``step``/``tick`` call **in list order**.
2. A *persisting* effect (``PersistVote``, ``WriteEpoch``, ``WriteRecords``, ``Truncate``,
   ``PersistCommit``) must be durable (fsynced) **before** any later effect of the list is
   carried out. The cores order their lists "persist, then send, then reply": e.g. a vote is
   ``[PersistVote, Send(VoteResponse)]``; a leader's commit is ``[PersistCommit, Committed]``.
   A shell that hands persistence to another actor must hold back the rest of the list until
   that actor confirms.
3. Effects that produce a result are answered by feeding a *report* message back into
   ``step`` once done, in the order the effects were carried out:
   ``WriteEpoch`` -> ``EpochWritten``; ``ReadRecords`` -> ``RecordsRead``;
   ``WriteRecords`` -> ``RecordsWritten``; ``Truncate`` -> ``Truncated``.
4. ``Send`` is fire-and-forget: loss, duplication and reordering are tolerated by the cores.
5. ``Committed`` is the only effect that lets a client write be acknowledged.

Every effect is a frozen, slotted dataclass; ``PERSISTING`` names the durable ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esnode.core.cluster_messages import Record
from esnode.core.states import VNodeState
from esnode.core.types import Vote


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` to node ``to`` over the internal network."""

    to: str
    message: Any


@dataclass(frozen=True, slots=True)
class PersistVote:
    """``storage.write_vote(vote)``; durable before the vote request/answer is sent."""

    vote: Vote


@dataclass(frozen=True, slots=True)
class WriteEpoch:
    """``storage.write_epoch(number, leader_id, now_us)``; report ``EpochWritten(epoch)``."""

    number: int
    leader_id: str


@dataclass(frozen=True, slots=True)
class ReadRecords:
    """``storage.read_raw(after_position, max_count, max_bytes)`` (durable records only);
    report ``RecordsRead(peer, subscription_id, after_position, records)``."""

    peer: str
    subscription_id: int
    after_position: int
    max_count: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class WriteRecords:
    """Replica: ``storage.write_raw(records)`` (fsync); report
    ``RecordsWritten(storage.writer_position)``."""

    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class Truncate:
    """Replica: ``storage.truncate_after(position)`` after every earlier write is done;
    report ``Truncated(storage.writer_position)``. Never below the commit position."""

    position: int


@dataclass(frozen=True, slots=True)
class PersistCommit:
    """``storage.set_commit_position(position)``; reads may then go up to it."""

    position: int


@dataclass(frozen=True, slots=True)
class Committed:
    """Leader only: every client write at or below ``position`` is on a majority's disks;
    its client may be answered. (Emitted after the matching ``PersistCommit``.)"""

    position: int


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The node's state changed. A shell that leaves Leader/PreLeader must fail every
    client write still pending with ``OutcomeUnknown`` (it may or may not be committed
    later, by another leader); ``line`` is the one log line for the transition."""

    old: VNodeState
    new: VNodeState
    term: int
    leader_id: str | None
    line: str


@dataclass(frozen=True, slots=True)
class Alarm:
    """Something an operator must see (log at ERROR). ``code`` is stable, e.g.
    ``truncation_refused``, ``two_leaders``, ``subscription_position_ahead``."""

    code: str
    message: str


Effect = (Send | PersistVote | WriteEpoch | ReadRecords | WriteRecords | Truncate
          | PersistCommit | Committed | StateChanged | Alarm)

PERSISTING: tuple[type, ...] = (PersistVote, WriteEpoch, WriteRecords, Truncate, PersistCommit)
