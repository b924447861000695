"""FAKE storage for the simulator: the ``EventStore`` port as the replica uses it, on a
simulated disk that takes time and can lose power in the middle of an fsync.

Every durable operation (a group commit, replicated records, a truncation, an epoch, a vote,
the commit position) is one transaction: it advances the node's clock by an fsync latency
drawn from the seed, and with the cluster's ``power_failure`` rate the machine dies during it
(``SimCrash``). Then the transaction survives whole or not at all, except that records may
survive as a torn prefix (a log that simply ends earlier). Records shipped before the fsync
(the leader's ``before_commit``) are on the network by then, which is exactly what the
ship-before-fsync path must survive.

Positions are byte-like: a record's position is the previous one plus the previous record's
length, so positions are not contiguous integers (seed 106 found a bug that needs this).
A client append carries one event whose id (``w:N``) becomes the record's bytes; an append
of an id already in the log is an idempotent retry (as in the real store: a duplicated
forwarded write must not be written twice).
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from collections.abc import Callable, Sequence

from esnode.core.types import AppendRequest, AppendSuccess, BadRequest, Epoch, Vote

EPOCH_PREFIX = b"$epoch:"


class StorageViolation(AssertionError):
    """The replica asked storage for something the real storage refuses."""


class SimCrash(Exception):
    """The simulated machine lost power during an fsync: the node is gone."""


class SimClock:
    """One node's clock: the cluster's virtual time when a message is taken from the inbox,
    advanced by each fsync while the node works on it."""

    def __init__(self, t: float) -> None:
        self.t = t

    def monotonic(self) -> float:
        return self.t

    def now_us(self) -> int:
        return 1_700_000_000_000_000 + int(self.t * 1e6)


class SimDisk:
    """Latency and power failures, drawn from the cluster's one ``random.Random``."""

    def __init__(self, rng: random.Random, clock: SimClock, latency: tuple[float, float],
                 power_failure: Callable[[], float], stats: Counter) -> None:
        self.rng, self.clock, self.latency = rng, clock, latency
        self.power_failure = power_failure
        self.stats = stats
        """What the run exercised (``SimCluster.stats``)."""
        self.shipping = False
        """Inside a group commit's ``before_commit`` (records sent now precede the fsync)."""

    def fsync(self) -> bool:
        """Spend an fsync; True if power fails during it."""
        self.clock.t += self.rng.uniform(*self.latency)
        rate = self.power_failure()
        return rate > 0 and self.rng.random() < rate


class SimStore:
    def __init__(self) -> None:
        self.positions: list[int] = []
        self.data: list[bytes] = []
        self.vote: Vote | None = None
        self.commit = -1
        self.disk: SimDisk | None = None  # set by each incarnation of the node
        self._ids: dict[bytes, int] = {}  # record bytes -> position, of the first _indexed
        self._indexed = 0

    # --- positions ------------------------------------------------------------------------------
    @property
    def synced(self) -> int:
        """Records on disk (every completed transaction was fsynced)."""
        return len(self.positions)

    @property
    def writer_position(self) -> int:
        return self.positions[-1] if self.positions else -1

    @property
    def commit_position(self) -> int:
        return self.commit

    def next_position(self) -> int:
        if not self.positions:
            return 0
        return self.positions[-1] + max(1, len(self.data[-1]))

    def index_after(self, position: int) -> int:
        return bisect.bisect_right(self.positions, position)

    # --- transactions -----------------------------------------------------------------------------
    def _transaction(self, apply: Callable[[], None], records: Sequence = ()) -> None:
        """Fsync, then ``apply``; on a power failure keep all, nothing, or (records) a torn
        prefix, and raise ``SimCrash``."""
        if not self.disk.fsync():
            apply()
            return
        rng = self.disk.rng
        if records:
            for pos, data in records[:rng.randint(0, len(records))]:
                self.positions.append(pos)
                self.data.append(data)
        elif rng.random() < 0.5:
            apply()
        raise SimCrash()

    def _append(self, records: Sequence[tuple[int, bytes]]) -> None:
        self.positions += [p for p, _ in records]
        self.data += [d for _, d in records]

    def _position_of(self, data: bytes) -> int | None:
        for i in range(self._indexed, len(self.positions)):
            self._ids[self.data[i]] = self.positions[i]
        self._indexed = len(self.positions)
        return self._ids.get(data)

    def write(self, requests, now_us: int, before_commit=None) -> list:
        outcomes: list = []
        records: list[tuple[int, bytes]] = []
        position = self.next_position()
        batch: dict[bytes, int] = {}
        for request in requests:
            if type(request) is not AppendRequest or len(request.events) != 1:
                outcomes.append(BadRequest("the simulator writes single-event appends"))
                continue
            data = request.events[0].event_id.encode()
            earlier = batch.get(data)
            if earlier is None:
                earlier = self._position_of(data)
            if earlier is not None:
                outcomes.append(AppendSuccess(0, 0, earlier, True))
                continue
            batch[data] = position
            records.append((position, data))
            outcomes.append(AppendSuccess(0, 0, position))
            position += max(1, len(data))
        if records:
            stats = self.disk.stats
            stats["group commits"] += 1
            stats["group commits of several writes"] += len(records) > 1
            shipped = stats["records shipped before the fsync"]
            if before_commit is not None:
                self.disk.shipping = True
                try:
                    before_commit(list(records))
                finally:
                    self.disk.shipping = False
            try:
                self._transaction(lambda: self._append(records), records)
            except SimCrash:
                if stats["records shipped before the fsync"] > shipped:
                    stats["power failures after shipping, before the fsync"] += 1
                raise
        return outcomes

    def write_raw(self, records: Sequence[tuple[int, bytes]],
                  commit_position: int | None = None) -> None:
        expected = self.next_position()
        for pos, data in records:
            if pos != expected:
                raise StorageViolation(f"write_raw at {pos}: the log continues at {expected} "
                                       "(gap or overlap)")
            expected = pos + max(1, len(data))

        if len({p for p, _ in records}) > 1 and commit_position is not None:
            self.disk.stats["replicated writes carrying the commit position"] += 1

        def apply() -> None:
            self._append(records)
            if commit_position is not None and commit_position > self.commit:
                if commit_position > self.writer_position:
                    raise StorageViolation(f"commit {commit_position} beyond the log end "
                                           f"{self.writer_position}")
                self.commit = commit_position
        self._transaction(apply, records)

    def truncate_after(self, position: int) -> None:
        if position < self.commit:
            raise StorageViolation(f"truncate_after({position}) below commit {self.commit}")
        keep = self.index_after(position)

        def apply() -> None:
            del self.positions[keep:]
            del self.data[keep:]
            self._ids, self._indexed = {}, 0
        if keep < len(self.positions):
            self._transaction(apply)

    def set_commit_position(self, position: int) -> None:
        if position < self.commit:
            raise StorageViolation(f"commit moved back from {self.commit} to {position}")
        if position > self.writer_position:
            raise StorageViolation(f"commit {position} beyond the log end {self.writer_position}")

        def apply() -> None:
            self.commit = position
        self._transaction(apply)

    def write_vote(self, vote: Vote) -> None:
        def apply() -> None:
            self.vote = vote
        self._transaction(apply)

    def write_epoch(self, number: int, leader_id: str, now_us: int) -> Epoch:
        epochs = self.epochs()
        if epochs and number <= epochs[-1].number:
            raise StorageViolation(f"epoch {number} after epoch {epochs[-1].number}")
        pos = self.next_position()
        record = (pos, EPOCH_PREFIX + f"{number}:{leader_id}".encode())
        self._transaction(lambda: self._append([record]), [record])
        return Epoch(number, pos, leader_id)

    # --- reads ------------------------------------------------------------------------------------
    def read_raw(self, after_position: int, max_count: int,
                 max_bytes: int = 1 << 20) -> list[tuple[int, bytes]]:
        out, size = [], 0
        for i in range(self.index_after(after_position), len(self.positions)):
            if len(out) >= max_count or (out and size + len(self.data[i]) > max_bytes):
                break
            out.append((self.positions[i], self.data[i]))
            size += len(self.data[i])
        return out

    def epochs(self) -> list[Epoch]:
        out = []
        for pos, data in zip(self.positions, self.data):
            if data.startswith(EPOCH_PREFIX):
                number, leader = data[len(EPOCH_PREFIX):].decode().split(":", 1)
                out.append(Epoch(int(number), pos, leader))
        return out

    def last_vote(self) -> Vote | None:
        return self.vote

    def lose_tail(self, keep_records: int) -> None:
        """Disk fault (no transaction): only the first ``keep_records`` records survive."""
        del self.positions[keep_records:]
        del self.data[keep_records:]
        self._ids, self._indexed = {}, 0
        self.commit = min(self.commit, self.writer_position)

    def durable_records(self) -> list[tuple[int, bytes]]:
        return list(zip(self.positions, self.data))

    def close(self) -> None:
        pass
