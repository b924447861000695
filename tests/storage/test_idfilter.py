"""The event-id Bloom filter: a "no" is certain (through growth, reopening, truncation)."""

from __future__ import annotations

import uuid

from esnode.core.types import ANY
from esnode.storage import LmdbEventStore, lmdb_store
from esnode.storage.idfilter import MIN_CAPACITY, IdFilter
from tests.storage.conftest import append, events


def test_every_added_id_is_a_maybe_and_most_fresh_ids_are_a_no():
    f = IdFilter()
    ids = [str(uuid.uuid4()) for _ in range(20_000)]
    f.add_all(ids)
    assert all(f.may_contain(i) for i in ids)
    fresh = [str(uuid.uuid4()) for _ in range(20_000)]
    assert sum(f.may_contain(i) for i in fresh) < 200  # ~0 at this fill; 1.4 % when full
    assert f.count == 20_000 and f.nbytes == MIN_CAPACITY * 2


def test_growing_keeps_every_id():
    f = IdFilter(1000)
    first = [str(uuid.uuid4()) for _ in range(1024 + 10)]
    f.add_all(first)
    later = [str(uuid.uuid4()) for _ in range(1000)]
    f.add_all(later)
    assert len(f._layers) == 2 and f.count == len(first) + len(later)
    assert all(f.may_contain(i) for i in first + later)


def test_lmdb_filter_is_filled_after_reopen_and_stays_exact_safe(tmp_path, monkeypatch):
    monkeypatch.setattr(lmdb_store, "_FILTER_STEP", 4)  # 8 ids per 1-record commit
    store = LmdbEventStore(tmp_path)
    store.ids_merge_threshold = 10
    batches = [events(3) for _ in range(12)]
    for i, batch in enumerate(batches):
        append(store, f"s{i % 2}", ANY, batch)
    store.close()
    again = LmdbEventStore(tmp_path)
    try:
        with again._env.begin() as txn:
            merged = [k[-36:].decode() for k in txn.cursor(db=again._ids).iternext(values=False)]
        assert len(merged) > 16 and again._filter_from == b""  # opened without reading them
        filling = []
        for i, batch in enumerate(batches):  # while the filter fills: lookups ask the index
            assert append(again, f"s{i % 2}", ANY, batch).idempotent
            append(again, "other", ANY, events(1))
            filling.append(again._filter_from is not None)
        assert filling[0] and not filling[-1]  # several commits, then full
        assert all(again._id_filter.may_contain(i) for i in merged)
        again.truncate_after(5)  # removed ids may stay "maybe": only a durable lookup more
        for i, batch in enumerate(batches):
            outcome = append(again, f"s{i % 2}", ANY, batch)
            assert outcome.idempotent == (i < 2), i
    finally:
        again.close()
