"""Effects: what a pure core asks its shell to do.

THE CONTRACT (etcd-raft's ``Ready`` rule, Event Store #3472's lesson). It is carried out by
one class, ``esnode.actors.replica.Replica``, in production and in the simulator alike.

1. Carry out the effects of one ``step``/``tick`` call **in list order**.
2. A *persisting* effect (``PersistVote``, ``WriteEpoch``, ``WriteRecords``, ``Truncate``)
   must be durable (fsynced) **before** any later effect of the list is carried out. The
   cores order their lists "persist, then send, then reply": e.g. a vote is
   ``[PersistVote, Send(VoteResponse)]``. A shell that hands persistence to another thread
   must hold back the rest of the list until it is done. Consecutive ``WriteRecords``
   separated only by ``Send``s may be written in one transaction (earlier is still before).
3. ``PersistCommit`` is **lazy**: it never holds back later effects. The shell makes a commit
   position durable (never past its own durable log) within ``COMMIT_PERSIST_INTERVAL_S``
   (0.2 s), in the same transaction as the next replicated records if sooner, and at
   shutdown. *Recovery rule*: after a crash the persisted commit position may lag what the
   node exposed before; the node restarts from it (reads and subscriptions expose no more)
   until its leader tells it a higher one (the first heartbeat or batch after it subscribes).
   Safety never rests on it: a commit is a property of the majority's durable logs, which
   the up-to-date vote rule and subscription by common epoch preserve; the persisted
   position only bounds what a restarted node exposes and which truncations it refuses.
4. Effects that produce a result are answered by feeding a *report* message back into
   ``step`` once done, in the order the effects were carried out:
   ``WriteEpoch`` -> ``EpochWritten``; ``ReadRecords`` -> ``RecordsRead``;
   ``WriteRecords`` -> ``RecordsWritten``; ``Truncate`` -> ``Truncated``. A leader's own
   client writes are reported with ``LocalPrepared`` (encoded, before the fsync: the core may
   ship them at once) and ``LocalWritten`` (after the fsync).
5. ``Send`` is fire-and-forget: loss, duplication and reordering are tolerated by the cores.
6. ``Committed`` is the only effect that lets a client write be acknowledged. It needs no
   persisted commit position: the write is already durable on a majority.
7. A report that contradicts the core's own state (say, a truncation nobody asked for)
   raises ``InvariantViolation``: the shell must let it stop the node.

Every effect is a frozen, slotted dataclass.
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
    """The commit position advanced to ``position`` (reads may go up to it now). Lazy: the
    shell persists it later (rule 3 above) and carries on at once."""

    position: int


@dataclass(frozen=True, slots=True)
class Committed:
    """Leader only: every client write at or below ``position`` is on a majority's disks;
    its client may be answered."""

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
    ``truncation_refused``, ``subscription_position_ahead``, ``unknown_replica``."""

    code: str
    message: str


Effect = (Send | PersistVote | WriteEpoch | ReadRecords | WriteRecords | Truncate
          | PersistCommit | Committed | StateChanged | Alarm)
