"""LMDB-only behaviour: reopening, map growth, the event-id merge, a full disk."""

from __future__ import annotations

import os
import subprocess
import threading

import lmdb
import pytest

from esnode.core.types import (
    ANY,
    NO_STREAM,
    AppendRequest,
    AppendSuccess,
    StorageFull,
    StreamDeleted,
    StreamNotFound,
    Vote,
)
from esnode.storage import LmdbEventStore, open_store
from esnode.storage.lmdb_store import QQ
from esnode.storage.memory import MemoryEventStore
from tests.storage.conftest import NOW, append, delete, events, everything


@pytest.fixture
def opened():
    stores = []
    yield stores
    for s in stores:
        s.close()


def _open(opened, path, **options):
    store = LmdbEventStore(path, **options)
    opened.append(store)
    return store


def test_open_store_factory(tmp_path, opened):
    mem = open_store(None)
    assert isinstance(mem, MemoryEventStore)
    disk = open_store(tmp_path / "d", map_size=1 << 20)
    opened.append(disk)
    assert isinstance(disk, LmdbEventStore)


def test_everything_survives_reopen(tmp_path, opened):
    store = _open(opened, tmp_path)
    batch = events(3)
    store.write_epoch(1, "n1", NOW)
    append(store, "a", NO_STREAM, batch)
    store.set_metadata("a", ANY, {"$maxCount": 2}, NOW)
    delete(store, "b", ANY, tombstone=True)
    store.set_commit_position(3)
    store.write_vote(Vote(4, "n2"))
    before = (everything(store), store.read_stream("a", 0, 10), store.get_metadata("a"))
    store.close()
    again = _open(opened, tmp_path)
    assert (everything(again), again.read_stream("a", 0, 10), again.get_metadata("a")) == before
    assert again.writer_position == 5 and again.commit_position == 3
    assert again.last_vote() == Vote(4, "n2") and again.epochs() == [(1, 0, "n1")]
    assert append(again, "a", ANY, batch) == AppendSuccess(0, 2, 3, True)
    assert append(again, "b", ANY, events(1)).__class__.__name__ == "StreamDeleted"
    assert append(again, "a", 2, events(1)) == AppendSuccess(3, 3, 6)


def test_event_id_merge_and_reopen_keep_idempotency(tmp_path, opened):
    store = _open(opened, tmp_path)
    store.ids_merge_threshold = 10
    batches = [events(3) for _ in range(13)]
    for i, batch in enumerate(batches):
        assert append(store, f"s{i % 3}", ANY, batch).position == 3 * i + 2
    assert store._ids_through >= 0 and store._recent_ids  # some merged, some recent
    for i, batch in enumerate(batches):
        assert append(store, f"s{i % 3}", ANY, batch).idempotent
    store.close()
    again = _open(opened, tmp_path)
    again.ids_merge_threshold = 10
    for i, batch in enumerate(batches):
        assert append(again, f"s{i % 3}", ANY, batch) == AppendSuccess(
            (i // 3) * 3, (i // 3) * 3 + 2, 3 * i + 2, True)
    # truncating below the merged point forgets merged ids too
    again.truncate_after(8)
    assert again._ids_through <= 8
    assert not append(again, "s0", ANY, batches[3]).idempotent
    assert append(again, "s0", ANY, batches[0]).idempotent
    again.close()
    third = _open(opened, tmp_path)
    assert append(third, "s0", ANY, batches[3]).idempotent  # rewritten after the truncation
    assert append(third, "s1", ANY, batches[4]).position == third.writer_position


def test_event_id_merge_is_spread_over_commits_and_survives_reopen_and_truncation(
        tmp_path, opened):
    store = _open(opened, tmp_path)
    store.ids_merge_threshold, store.ids_merge_step = 30, 4
    batches = [(f"s{i % 10}", events(2)) for i in range(17)]  # 34 records, 2 per commit
    merged = []
    for stream, batch in batches:
        append(store, stream, ANY, batch)
        with store._env.begin() as txn:
            merged.append(txn.stat(store._ids)["entries"])
    # the generation of the first 30 ids froze at the 15th commit; each later commit merged
    # streams up to the step (s0, then s1: 4 ids each), none merged the 30 at once
    assert merged == [0] * 15 + [4, 8] and len(store._merge_queue) == 8
    for stream, batch in batches:  # mid-merge: every id is found (memory or durable index)
        assert append(store, stream, ANY, batch).idempotent
    store.close()  # as a crash mid-merge leaves it: some ids merged, the checkpoint before them
    again = _open(opened, tmp_path)
    again.ids_merge_threshold, again.ids_merge_step = 30, 4
    for stream, batch in batches:
        assert append(again, stream, ANY, batch).idempotent
    again.truncate_after(19)  # drops merged ids of s0 and s1 (positions 20-23) too
    with again._env.begin() as txn:
        positions = [QQ.unpack(v)[1] for v in txn.cursor(db=again._ids).iternext(keys=False)]
    assert positions and max(positions) <= 19
    for i, (stream, batch) in enumerate(batches):
        assert append(again, stream, ANY, batch).idempotent == (i < 10), i
    again.close()
    third = _open(opened, tmp_path)
    for i, (stream, batch) in enumerate(batches):
        assert append(third, stream, ANY, batch).idempotent


def test_map_grows_instead_of_failing(tmp_path, opened):
    store = _open(opened, tmp_path, map_size=64 * 1024)
    big = events(50)
    outs = [append(store, f"s{i}", ANY, events(50)) for i in range(40)]
    assert all(isinstance(o, AppendSuccess) for o in outs)
    assert store.map_size > 64 * 1024
    assert append(store, "x", ANY, big).last_version == 49
    assert len(everything(store)) == 40 * 50 + 50


def test_readers_on_other_threads_while_the_map_grows(tmp_path, opened):
    store = _open(opened, tmp_path, map_size=64 * 1024)
    stop, errors, reads = threading.Event(), [], [0]

    def reader():
        try:
            while not stop.is_set():
                page = store.read_all(0, 5000)
                assert [e.position for e in page.events] == list(range(len(page.events)))
                reads[0] += 1
                stop.wait(0.001)  # pace the reader: a busy reader convoys the writer on the GIL
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(60):
            append(store, f"s{i}", ANY, events(40))
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors and reads[0] > 0 and store.map_size > 64 * 1024


class _FailingTxn:
    """A write transaction, or a cursor of one, whose puts (``fail_on="put"``) or commit fail."""

    def __init__(self, txn, fail_on: str):
        self._txn, self._fail_on = txn, fail_on

    def __getattr__(self, name):
        return getattr(self._txn, name)

    def _put(self, method: str, *args, **kwargs):
        if self._fail_on == "put":
            raise lmdb.DiskError(f"mdb_{method}: No space left on device")
        return getattr(self._txn, method)(*args, **kwargs)

    def put(self, *args, **kwargs):
        return self._put("put", *args, **kwargs)

    def putmulti(self, *args, **kwargs):
        return self._put("putmulti", *args, **kwargs)

    def cursor(self, *args, **kwargs):
        return _FailingTxn(self._txn.cursor(*args, **kwargs), self._fail_on)

    def commit(self):
        if self._fail_on == "commit":
            self._txn.abort()
            raise lmdb.Error("mdb_txn_commit: No space left on device")
        return self._txn.commit()


class _FullDiskEnv:
    """Stands in for the LMDB environment at its boundary: write transactions fail like a
    full disk does (on a put or at commit)."""

    def __init__(self, env, fail_on: str):
        self._env, self.fail_on = env, fail_on

    def __getattr__(self, name):
        return getattr(self._env, name)

    def begin(self, *args, **kwargs):
        txn = self._env.begin(*args, **kwargs)
        if kwargs.get("write") and self.fail_on:
            return _FailingTxn(txn, self.fail_on)
        return txn


@pytest.mark.parametrize("fail_on", ["put", "commit"])
def test_disk_full_is_a_clear_error_and_leaves_the_store_consistent(tmp_path, opened, fail_on):
    store = _open(opened, tmp_path)
    batch = events(2)
    append(store, "a", NO_STREAM, batch)
    before = everything(store)
    real_env = store._env
    store._env = _FullDiskEnv(real_env, fail_on)
    with pytest.raises(StorageFull):
        store.write([AppendRequest("a", 1, events(2)), AppendRequest("b", ANY, events(1))], NOW)
    with pytest.raises(StorageFull):
        store.write_epoch(1, "n", NOW)
    with pytest.raises(StorageFull):
        store.set_commit_position(1)
    assert store.writer_position == 1 and store.commit_position == -1 and store.epochs() == []
    assert everything(store) == before
    store._env.fail_on = ""  # space again
    assert append(store, "a", 1, events(1)) == AppendSuccess(2, 2, 2)
    assert append(store, "a", ANY, batch).idempotent
    store._env = real_env
    store.close()
    again = _open(opened, tmp_path)
    assert [e.version for e in again.read_stream("a", 0, 10).events] == [0, 1, 2]


def _can_mount() -> bool:
    return os.geteuid() == 0 and os.path.exists("/bin/mount")


@pytest.mark.skipif(not _can_mount(), reason="needs root to mount a small tmpfs")
def test_real_full_disk_on_a_small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                            capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {result.stderr.decode().strip()}")
    try:
        store = LmdbEventStore(mnt / "db", map_size=64 << 20)
        acked = []
        try:
            with pytest.raises(StorageFull):
                for _ in range(1000):
                    evs = events(5)
                    out = store.write([AppendRequest("s", ANY, tuple(
                        e._replace(data=b"x" * 2000) for e in evs))], NOW)[0]
                    acked.append(out.last_version)
            assert store.writer_position == acked[-1]
            assert len(store.read_stream("s", 0, 10_000).events) == len(acked) * 5
        finally:
            store.close()
        reopened = LmdbEventStore(mnt / "db", map_size=64 << 20)
        try:
            assert reopened.stream_version("s") == acked[-1]
        finally:
            reopened.close()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_stream_pages_over_runs_and_scattered_records_read_like_memory(tmp_path, opened):
    """Stream pages are read by cursor walks over runs of consecutive log records and one
    getmulti for the rest: any mix gives exactly the memory store's pages."""
    disk, mem = _open(opened, tmp_path), MemoryEventStore()
    sizes = [10, 1, 1, 9, 3, 20, 8, 7, 1, 12, 2, 2, 2, 30]
    for i, size in enumerate(sizes):
        batch = events(size)
        for store in (disk, mem):
            append(store, "a", ANY, batch)
            if i % 3:
                append(store, "b", ANY, batch[:1] if i % 2 else events(1))
    total = sum(sizes)
    for first in (0, 1, 9, 10, 11, 21, 40, total - 3):
        for count in (1, 5, 8, 9, 17, 64, 500):
            for backwards in (False, True):
                start = total - 1 - first if backwards else first
                assert (disk.read_stream("a", start, count, backwards)
                        == mem.read_stream("a", start, count, backwards)), (first, count)


def test_stream_reads_on_other_threads_see_whole_streams_while_the_index_merges(
        tmp_path, opened):
    """Stream index entries wait in memory and reach ``streams`` in merges spread over
    commits: readers on other threads, whenever they look, see each stream whole
    (versions 0..last in order, each at its own position), forwards and backwards."""
    store = _open(opened, tmp_path)
    store.ids_merge_threshold, store.ids_merge_step = 40, 3
    names = [f"s{i}" for i in range(6)]
    stop, errors, reads = threading.Event(), [], [0]
    written = dict.fromkeys(names, -1)  # last version of each stream, once its append returned

    def reader():
        try:
            while not stop.is_set():
                for name in names:
                    at_least = written[name]  # nothing older may be missing
                    try:
                        forwards = store.read_stream(name, 0, 10_000).events
                        backwards = store.read_stream(name, -1, 7, backwards=True).events
                    except StreamNotFound:
                        continue
                    assert [e.version for e in forwards] == list(range(len(forwards)))
                    assert all(e.stream == name for e in forwards)
                    top = backwards[0].version  # read later: the stream may have grown
                    assert top >= len(forwards) - 1
                    assert [e.version for e in backwards] == list(
                        range(top, top - len(backwards), -1))
                    assert all(e.stream == name for e in backwards)
                    assert len(forwards) - 1 >= at_least
                    reads[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(600):
            name = names[i % len(names)]
            batch = events(1 + i % 3 if i % 10 else 20)  # some written to streams at once
            written[name] = append(store, name, ANY, batch).last_version
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors[0]
    assert reads[0] > 0
    with store._env.begin() as txn:  # some of the index is merged, some still in memory
        assert 0 < txn.stat(store._streams)["entries"] < store.writer_position + 1


def test_stream_index_in_memory_survives_reopen_and_truncation(tmp_path, opened):
    """What the in-memory generations held is found again after reopening (from the log)
    and after a truncation (the entries of removed records are gone), like memory's."""
    store = _open(opened, tmp_path)
    mem = MemoryEventStore()
    for s in (store, mem):
        s.ids_merge_threshold, s.ids_merge_step = 25, 2
    for i in range(50):  # short appends wait in memory; batch appends of 20 are written at
        batch = events(1 + i % 4 if i % 6 else 20)  # once, unless the stream has some waiting
        for s in (store, mem):
            append(s, f"s{i % 7}", ANY, batch)
    delete(store, "s6", ANY, tombstone=True)
    delete(mem, "s6", ANY, tombstone=True)

    def streams(s):
        out = {}
        for i in range(7):
            try:
                out[i] = (s.read_stream(f"s{i}", 0, 1000).events,
                          s.read_stream(f"s{i}", -1, 3, backwards=True).events)
            except StreamDeleted as exc:
                out[i] = type(exc)
        return out

    assert streams(store) == streams(mem)
    store.close()
    store = _open(opened, tmp_path)
    store.ids_merge_threshold, store.ids_merge_step = 25, 2
    assert streams(store) == streams(mem)
    store.truncate_after(150)
    mem.truncate_after(150)
    assert streams(store) == streams(mem)
    for i in range(20):  # and it goes on: appends after the truncation, merges
        batch = events(2 if i % 3 else 17)
        for s in (store, mem):
            append(s, f"s{i % 5}", ANY, batch)
    assert streams(store) == streams(mem)
    store.close()
    assert streams(_open(opened, tmp_path)) == streams(mem)


def test_a_view_keeps_seeing_the_entries_a_merge_moves_and_not_those_written_after_it(
        tmp_path, opened):
    """A view begun mid-merge still finds every entry of its snapshot after the merge has
    moved them to ``streams`` and dropped the generation, and none of the later records."""
    store = _open(opened, tmp_path)
    store.ids_merge_threshold, store.ids_merge_step = 20, 1
    for i in range(21):  # the 20th commit freezes a generation of 20 records
        append(store, f"s{i % 3}", ANY, events(1))
    assert store._merge_queue
    with store._read_view() as view:
        seen = {s: view.stream_last(s) for s in ("s0", "s1", "s2")}
        for i in range(6):  # merges the whole generation and drops it
            append(store, f"s{i % 3}", ANY, events(1))
        assert not store._merge_queue and not store._index[1]
        for s, (last, position, _) in seen.items():
            assert view.stream_last(s) == (last, position, -1)
            positions, values = view.stream_values(s, 0, last + 1)
            assert len(positions) == len(values) == last + 1 == 7
            assert [view.position_of(s, v) for v in range(last + 1)] == list(positions)
    with store._read_view() as view:
        assert [view.stream_last(s)[0] for s in ("s0", "s1", "s2")] == [8, 8, 8]
