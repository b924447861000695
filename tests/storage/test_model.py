"""Hypothesis state machine: the store against a plain model of streams, on both backends,
under random group-committed appends (every expected-version kind, retries of earlier
batches, partial retries), soft deletes, tombstones, metadata, truncation and reads, both
unbounded and bounded by an earlier position (which must see the state as it was there)."""

from __future__ import annotations

import copy
import shutil
import tempfile
import uuid

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from esnode.core.types import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    TRUNCATE_BEFORE_DELETED,
    AppendRequest,
    AppendSuccess,
    DeleteRequest,
    DeleteSuccess,
    EventData,
    IdempotencyConflict,
    StreamDeleted,
    StreamNotFound,
    WrongExpectedVersion,
)
from esnode.storage import LmdbEventStore, MemoryEventStore

STREAMS = ["a", "b", "c"]
NOW = 1_000


class Model:
    """Streams as lists of event ids; the rules of client-api.md §1.3 and docs/storage.md."""

    def __init__(self):
        self.events: dict[str, list[str]] = {}  # stream -> event ids by version
        self.tombstoned: set[str] = set()
        self.meta: dict[str, dict] = {}
        self.ids: dict[tuple[str, str], tuple[int, int]] = {}
        self.position = 0  # next position

    def last(self, s):
        return len(self.events.get(s, [])) - 1

    def _add(self, s, event_id):
        version = self.last(s) + 1
        self.events.setdefault(s, []).append(event_id)
        self.ids[(event_id, s)] = (version, self.position)
        self.position += 1
        return version

    def _set_meta(self, s, meta):
        self.meta[s] = meta
        self._add("$$" + s, str(uuid.uuid4()))

    def _check(self, s, expected):
        if s in self.tombstoned:
            return StreamDeleted
        soft = self.meta.get(s, {}).get("$tb") == TRUNCATE_BEFORE_DELETED
        last = self.last(s)
        if expected == ANY:
            return None
        if expected == NO_STREAM:
            return None if last == -1 or soft else WrongExpectedVersion
        if expected == STREAM_EXISTS:
            if soft:
                return StreamDeleted
            return None if last >= 0 or self.last("$$" + s) >= 0 else WrongExpectedVersion
        return None if expected == last else WrongExpectedVersion

    def append(self, s, expected, ids):
        if s in self.tombstoned:
            return StreamDeleted
        found = [self.ids.get((i, s)) for i in ids]
        if found[0] is not None:
            if all(f is not None and f[0] == found[0][0] + k for k, f in enumerate(found)):
                return AppendSuccess(found[0][0], found[-1][0], found[-1][1], True)
            return IdempotencyConflict
        error = self._check(s, expected)
        if error:
            return error
        if any(f is not None for f in found):
            return IdempotencyConflict
        meta = self.meta.get(s, {})
        if meta.get("$tb") == TRUNCATE_BEFORE_DELETED:
            self._set_meta(s, {**meta, "$tb": self.last(s) + 1})
        versions = [self._add(s, i) for i in ids]
        return AppendSuccess(versions[0], versions[-1], self.position - 1)

    def delete(self, s, expected, tombstone):
        error = self._check(s, expected)
        if error:
            return error
        if tombstone:
            self.tombstoned.add(s)
            self.position += 1
        else:
            self._set_meta(s, {**self.meta.get(s, {}), "$tb": TRUNCATE_BEFORE_DELETED})
        return DeleteSuccess(self.position - 1)

    def set_meta(self, s, expected, meta):
        result = self.append("$$" + s, expected, [str(uuid.uuid4())])
        if isinstance(result, AppendSuccess):
            self.meta[s] = meta
        return result

    def visible(self, s):
        """Versions a read of ``s`` returns, or the error class."""
        if s in self.tombstoned:
            return StreamDeleted
        meta, last = self.meta.get(s, {}), self.last(s)
        if last < 0 or meta.get("$tb") == TRUNCATE_BEFORE_DELETED:
            return StreamNotFound
        first = meta.get("$tb") or 0
        if meta.get("$maxCount"):
            first = max(first, last - meta["$maxCount"] + 1)
        return list(range(first, last + 1))


def _same(outcome, expected) -> bool:
    if isinstance(expected, type):
        return type(outcome) is expected
    return outcome == expected


class StoreMachine(RuleBasedStateMachine):
    backend = "memory"

    def __init__(self):
        super().__init__()
        self.dir = None
        if self.backend == "memory":
            self.store = MemoryEventStore()
        else:
            self.dir = tempfile.mkdtemp(prefix="esnode-model-")
            self.store = LmdbEventStore(self.dir, map_size=1 << 20)
            self.store.ids_merge_threshold = 7  # exercise the event-id merge too,
            self.store.ids_merge_step = 1  # spread over several commits
        self.model = Model()
        self.batches: list[tuple[str, list[str]]] = []  # earlier batches, for retries
        self.snapshots: list[tuple[int, Model]] = []

    def teardown(self):
        self.store.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    @initialize()
    def start(self):
        pass

    def _expected(self, data, s):
        last = self.model.last(s)
        return data.draw(st.sampled_from([ANY, NO_STREAM, STREAM_EXISTS, last, last + 1, 0]))

    def _ids(self, data, s):
        kind = data.draw(st.sampled_from(["new", "new", "retry", "retry", "partial"]))
        if kind != "new" and self.batches:
            stream, ids = data.draw(st.sampled_from(self.batches))
            if data.draw(st.booleans()):
                s = stream
            if kind == "retry":
                return s, list(ids)
            return s, data.draw(st.sampled_from([ids[1:] + [str(uuid.uuid4())],
                                                 [str(uuid.uuid4())] + ids, ids[::-1], ids[:1]]))
        return s, [str(uuid.uuid4()) for _ in range(data.draw(st.integers(1, 3)))]

    @rule(data=st.data(), count=st.integers(1, 4))
    def write(self, data, count):
        requests, expected = [], []
        for _ in range(count):
            s, ids = self._ids(data, data.draw(st.sampled_from(STREAMS)))
            kind = data.draw(st.sampled_from(["append"] * 6 + ["soft", "tomb"]))
            exp = self._expected(data, s)
            if kind == "append":
                requests.append(AppendRequest(
                    s, exp, tuple(EventData(i, "T", b"{}", b"", True) for i in ids)))
                expected.append(self.model.append(s, exp, ids))
                self.batches.append((s, ids))
            else:
                requests.append(DeleteRequest(s, exp, kind == "tomb"))
                expected.append(self.model.delete(s, exp, kind == "tomb"))
        outcomes = self.store.write(requests, NOW)
        for req, out, exp in zip(requests, outcomes, expected):
            assert _same(out, exp), (req, out, exp)

    @rule(s=st.sampled_from(STREAMS), data=st.data(),
          meta=st.sampled_from([{}, {"$maxCount": 1}, {"$maxCount": 3}, {"$tb": 2}, {"k": "v"}]))
    def set_metadata(self, s, data, meta):
        exp = self._expected(data, "$$" + s)
        out = self.store.set_metadata(s, exp, meta, NOW)
        expected = self.model.set_meta(s, exp, meta)
        if isinstance(out, AppendSuccess) and isinstance(expected, AppendSuccess):
            assert (out.first_version, out.position) == (expected.first_version, expected.position)
        else:
            assert _same(out, expected), (out, expected)

    @rule()
    def checkpoint(self):
        """Remember the state, to truncate back to it later."""
        self.snapshots.append((self.store.writer_position, copy.deepcopy(self.model)))

    @precondition(lambda self: self.snapshots)
    @rule(data=st.data())
    def truncate(self, data):
        position, model = data.draw(st.sampled_from(self.snapshots))
        self.store.truncate_after(position)
        model = copy.deepcopy(model)
        self.snapshots = [(p, m) for p, m in self.snapshots if p <= position]
        self.model = model

    @invariant()
    def reads_agree(self):
        assert self.store.writer_position == self.model.position - 1
        self._agree(self.model, None)

    @invariant()
    def bounded_reads_see_the_state_at_their_bound(self):
        """A read bounded by an earlier position (as a commit position bounds a node's reads)
        sees the model as it was then: later deletes and metadata do not count."""
        for position, model in self.snapshots:
            self._agree(model, position)

    def _agree(self, model, up_to):
        store = self.store
        for backwards in (False, True):
            args = (-1 if backwards else 0, 10_000, backwards, up_to)
            assert store.read_all(*args, encoded=True) == store.read_all(*args)
        for s in STREAMS:
            expected = model.visible(s)
            try:
                got = [e.version for e in store.read_stream(s, 0, 1000,
                                                            up_to_position=up_to).events]
                back = [e.version for e in store.read_stream(
                    s, -1, 1000, backwards=True, up_to_position=up_to).events]
                assert back == got[::-1]
                for backwards in (False, True):  # read as stored: the same page
                    args = (s, -1 if backwards else 0, 1000, backwards, up_to)
                    assert (store.read_stream(*args, encoded=True)
                            == store.read_stream(*args))
            except (StreamNotFound, StreamDeleted) as exc:
                got = type(exc)
            assert got == expected, (s, up_to, got, expected)
            assert store.stream_version(s, up_to_position=up_to) == model.last(s)
            try:
                meta = store.get_metadata(s, up_to_position=up_to)
                assert (meta.version, meta.raw) == (model.last("$$" + s), model.meta.get(s, {}))
                assert s not in model.tombstoned, (s, up_to)
            except StreamDeleted:
                assert s in model.tombstoned, (s, up_to)
            ids = model.events.get(s, [])
            if isinstance(expected, list) and expected:
                recs = store.read_stream(s, expected[0], 1000, up_to_position=up_to).events
                assert [r.event_id for r in recs] == ids[expected[0]:]


class LmdbStoreMachine(StoreMachine):
    backend = "lmdb"


_settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
TestMemoryStoreModel = StoreMachine.TestCase
TestMemoryStoreModel.settings = _settings
TestLmdbStoreModel = LmdbStoreMachine.TestCase
TestLmdbStoreModel.settings = _settings
