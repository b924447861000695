"""The storage port: what the node, replication and tests need from an event store backend.

Two backends implement it with the same semantics: ``LmdbEventStore`` (durable, fsync on
commit) and ``MemoryEventStore`` (``mem_db``). It is plain, single-writer, synchronous Python:
one thread (the storage actor) calls the write methods; reads may come from any thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from esnode.core.types import (
    AllSlice,
    Epoch,
    StreamMetadata,
    StreamSlice,
    Vote,
    WriteOutcome,
    WriteRequest,
)


class EventStore(Protocol):
    # --- writes: one call = one transaction = one fsync (group commit) -----------------------
    def write(self, requests: Sequence[WriteRequest], now_us: int,
              before_commit: Callable[[list[tuple[int, bytes]]], None] | None = None
              ) -> list[WriteOutcome]:
        """Apply many append/delete requests in one durable transaction.

        ``before_commit``, when given, is called with the raw records (as ``read_raw`` would
        return them) after they are planned and before the transaction commits (the leader
        ships them to followers while it fsyncs).

        Returns one outcome per request, in order; an error outcome (an ``EsError`` instance)
        for one request does not affect the others. Later requests see the effects of earlier
        ones in the same call. Raises only when the whole transaction failed (e.g. disk full:
        ``StorageFull``), in which case nothing of it was written.
        """

    def set_metadata(self, stream: str, expected_version: int, metadata: dict,
                     now_us: int) -> WriteOutcome:
        """Append a ``$metadata`` event to ``$$stream`` (convenience over ``write``)."""

    # --- reads --------------------------------------------------------------------------------
    # ``up_to_position``: the read sees the store as it was when the log ended there, records
    # and stream state alike (last version, tombstone, soft delete, metadata). Nodes pass the
    # commit position, so no read shows a record, a delete or a metadata change that is not
    # committed. None: the latest written state (the writer's own view).
    def read_stream(self, stream: str, from_version: int, max_count: int,
                    backwards: bool = False, up_to_position: int | None = None,
                    now_us: int | None = None, encoded: bool = False) -> StreamSlice:
        """Read a stream. ``from_version=-1`` backwards means "from the end".
        Applies ``$maxCount``, ``$maxAge`` (needs ``now_us``) and ``$tb``. ``encoded``: the
        events may come as ``EncodedEvents`` (the stored bytes, decoded only when used), when
        no rule has to look inside them (no ``$maxAge``, nothing scavenged there).
        Raises ``StreamNotFound`` (never written, or soft-deleted with nothing after) or
        ``StreamDeleted`` (tombstoned)."""

    def read_all(self, from_position: int, max_count: int, backwards: bool = False,
                 up_to_position: int | None = None, encoded: bool = False) -> AllSlice:
        """Read the global log. Forwards from ``from_position`` inclusive; backwards from
        ``from_position`` exclusive (``-1`` = from the end). ``encoded``: as ``read_stream``
        (when the page holds no epoch record and nothing scavenged)."""

    def get_metadata(self, stream: str, up_to_position: int | None = None) -> StreamMetadata:
        """The stream's metadata (empty, version -1, when none was set); ``StreamDeleted``
        when tombstoned."""

    def stream_version(self, stream: str, up_to_position: int | None = None) -> int:
        """Last version of the stream, ``NO_STREAM`` (-1) when it has no events."""

    # --- positions -------------------------------------------------------------------------
    @property
    def writer_position(self) -> int:
        """Position of the last durable record (-1 when empty)."""

    @property
    def commit_position(self) -> int:
        """Highest position known to be held by a majority (-1 when none)."""

    # --- replication support ---------------------------------------------------------------
    def read_raw(self, after_position: int, max_count: int,
                 max_bytes: int = 1 << 20) -> list[tuple[int, bytes]]:
        """Raw records ``(position, bytes)`` after ``after_position``, for shipping."""

    def write_raw(self, records: Sequence[tuple[int, bytes]],
                  commit_position: int | None = None) -> None:
        """Durably store records from a leader at their given positions (they must continue
        the log without gaps), updating every index; optionally advance the commit position
        in the same transaction."""

    def truncate_after(self, position: int) -> None:
        """Remove every record after ``position`` and its index entries in one transaction.
        Refuses (``ValueError``) to cut below the commit position."""

    def set_commit_position(self, position: int) -> None:
        """Durably record the commit position (never moves backwards)."""

    def epochs(self) -> list[Epoch]:
        """Every epoch whose record is in the log, oldest first."""

    def write_epoch(self, number: int, leader_id: str, now_us: int) -> Epoch:
        """Durably append an epoch record (an ``$epoch-information`` event whose data is
        ``{"number", "leader_id"}``) at the end of the log and return the epoch it starts.
        Epochs are an index over such records: ``write_raw`` of a replicated epoch record
        and ``truncate_after`` keep ``epochs()`` in step with the log. Numbers strictly
        increase (``ValueError`` otherwise)."""

    def last_vote(self) -> Vote | None: ...

    def write_vote(self, vote: Vote) -> None:
        """Durably record the last vote cast."""

    def close(self) -> None: ...
