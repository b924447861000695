"""Durable event storage (LMDB) and its in-memory twin, behind the ``EventStore`` port."""

from __future__ import annotations

import os

from esnode.core.types import StorageLimits
from esnode.storage.lmdb_store import LmdbEventStore
from esnode.storage.memory import MemoryEventStore
from esnode.storage.port import EventStore

__all__ = ["EventStore", "LmdbEventStore", "MemoryEventStore", "StorageLimits", "open_store"]


def open_store(path: str | os.PathLike | None, limits: StorageLimits | None = None,
               **options: object) -> EventStore:
    """An LMDB store at ``path``, or a memory store when ``path`` is None (``mem_db``).
    ``options`` go to ``LmdbEventStore`` (e.g. ``map_size``)."""
    if path is None:
        return MemoryEventStore(limits)
    return LmdbEventStore(path, limits, **options)
