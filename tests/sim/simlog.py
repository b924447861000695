"""SimLog: a TEST DOUBLE of the storage port, just what the cluster cores need.

Models fsync: appended records are unsynced until ``sync()``; ``crash()`` loses them. Votes,
epochs and the commit position are durable at once (the effect contract makes the shell
wait for them). Positions are byte-like: a record's position is the previous one plus the
previous record's length, so positions are not contiguous integers.
"""

from __future__ import annotations

import bisect

from esnode.core.cluster_state import PersistedState
from esnode.core.types import Epoch, Vote

EPOCH_PREFIX = b"$epoch:"


class StorageViolation(AssertionError):
    """The cores asked storage for something the real storage refuses."""


class SimLog:
    def __init__(self) -> None:
        self.positions: list[int] = []
        self.data: list[bytes] = []
        self.synced = 0
        self.vote: Vote | None = None
        self.commit = -1

    # --- positions ------------------------------------------------------------------------------
    @property
    def writer_position(self) -> int:
        """Last durable record (-1: none)."""
        return self.positions[self.synced - 1] if self.synced else -1

    @property
    def written_position(self) -> int:
        return self.positions[-1] if self.positions else -1

    def next_position(self) -> int:
        if not self.positions:
            return 0
        return self.positions[-1] + max(1, len(self.data[-1]))

    def index_after(self, position: int) -> int:
        return bisect.bisect_right(self.positions, position)

    def record_at(self, position: int) -> bytes | None:
        i = bisect.bisect_left(self.positions, position)
        if i < len(self.positions) and self.positions[i] == position:
            return self.data[i]
        return None

    # --- writes -----------------------------------------------------------------------------------
    def append(self, data: bytes) -> int:
        pos = self.next_position()
        self.positions.append(pos)
        self.data.append(data)
        return pos

    def write_raw(self, records) -> None:
        for pos, data in records:
            if pos != self.next_position():
                raise StorageViolation(f"write_raw at {pos}: the log continues at "
                                       f"{self.next_position()} (gap or overlap)")
            self.append(data)

    def sync(self) -> None:
        self.synced = len(self.positions)

    def crash(self) -> None:
        del self.positions[self.synced:]
        del self.data[self.synced:]

    def truncate_after(self, position: int) -> None:
        self.sync()
        if position < self.commit:
            raise StorageViolation(f"truncate_after({position}) below commit {self.commit}")
        keep = self.index_after(position)
        del self.positions[keep:]
        del self.data[keep:]
        self.synced = len(self.positions)

    def set_commit_position(self, position: int) -> None:
        if position < self.commit:
            raise StorageViolation(f"commit moved back from {self.commit} to {position}")
        self.commit = position

    def write_vote(self, vote: Vote) -> None:
        self.vote = vote

    def write_epoch(self, number: int, leader_id: str) -> Epoch:
        epochs = self.epochs()
        if epochs and number <= epochs[-1].number:
            raise StorageViolation(f"epoch {number} after epoch {epochs[-1].number}")
        pos = self.append(EPOCH_PREFIX + f"{number}:{leader_id}".encode())
        self.sync()
        return Epoch(number, pos, leader_id)

    # --- reads ------------------------------------------------------------------------------------
    def read_raw(self, after: int, max_count: int, max_bytes: int) -> tuple:
        out, size = [], 0
        for i in range(self.index_after(after), self.synced):
            if len(out) >= max_count or (out and size + len(self.data[i]) > max_bytes):
                break
            out.append((self.positions[i], self.data[i]))
            size += len(self.data[i])
        return tuple(out)

    def epochs(self) -> list[Epoch]:
        out = []
        for pos, data in zip(self.positions, self.data):
            if data.startswith(EPOCH_PREFIX):
                number, leader = data[len(EPOCH_PREFIX):].decode().split(":", 1)
                out.append(Epoch(int(number), pos, leader))
        return out

    def durable_records(self) -> list[tuple[int, bytes]]:
        return list(zip(self.positions[:self.synced], self.data[:self.synced]))

    def persisted(self) -> PersistedState:
        return PersistedState(self.vote, tuple(e for e in self.epochs()
                                               if e.start_position <= self.writer_position),
                              self.writer_position, self.commit)
