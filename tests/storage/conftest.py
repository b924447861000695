"""Fixtures for the storage suite: every test that takes ``store`` or ``make_store`` runs
against both backends."""

from __future__ import annotations

import uuid

import pytest

from esnode.core.types import AppendRequest, DeleteRequest, EventData
from esnode.storage import LmdbEventStore, MemoryEventStore

NOW = 1_700_000_000_000_000


def ev(event_type: str = "T", data: bytes = b"{}", metadata: bytes = b"",
       event_id: str | None = None) -> EventData:
    return EventData(event_id or str(uuid.uuid4()), event_type, data, metadata, True)


def events(n: int) -> tuple[EventData, ...]:
    return tuple(ev() for _ in range(n))


def append(store, stream: str, expected: int, evs, now: int = NOW):
    """One append in its own write; returns the outcome (success or error instance)."""
    return store.write([AppendRequest(stream, expected, tuple(evs))], now)[0]


def delete(store, stream: str, expected: int, tombstone: bool = False, now: int = NOW):
    return store.write([DeleteRequest(stream, expected, tombstone)], now)[0]


@pytest.fixture(params=["memory", "lmdb"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def make_store(backend, tmp_path):
    """``make_store(limits=None, name="db")``: a store of the test's backend; LMDB stores with
    the same name reopen the same directory. All are closed after the test."""
    opened = []

    def make(limits=None, name: str = "db", **options):
        if backend == "memory":
            store = MemoryEventStore(limits)
        else:
            store = LmdbEventStore(tmp_path / name, limits, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store):
    return make_store()


@pytest.fixture
def lmdb_dir(tmp_path):
    return tmp_path / "lmdb"


def everything(store):
    """All records of the log, forwards (epoch records included via read_raw decoding)."""
    out, position = [], 0
    while True:
        page = store.read_all(position, 1000)
        out.extend(page.events)
        if page.is_end:
            return out
        position = page.next_position
