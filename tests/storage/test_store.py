"""The EventStore rules, against both backends (see conftest: ``store`` is parametrized)."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from esnode.core.types import (
    ANY,
    EPOCH_STREAM,
    NO_STREAM,
    STREAM_EXISTS,
    TOMBSTONE_TYPE,
    TRUNCATE_BEFORE_DELETED,
    AppendRequest,
    AppendSuccess,
    BadRequest,
    DeleteRequest,
    DeleteSuccess,
    EventData,
    IdempotencyConflict,
    StorageLimits,
    StreamDeleted,
    StreamMetadata,
    StreamNotFound,
    TooLarge,
    WrongExpectedVersion,
)
from tests.storage.conftest import NOW, append, delete, ev, events, everything


# --- appends and expected versions (client-api.md §1.3) ----------------------------------------
def test_versions_and_positions_are_gapless(store):
    assert append(store, "a", NO_STREAM, events(3)) == AppendSuccess(0, 2, 2)
    assert append(store, "b", NO_STREAM, events(1)) == AppendSuccess(0, 0, 3)
    assert append(store, "a", 2, events(2)) == AppendSuccess(3, 4, 5)
    assert store.writer_position == 5
    assert store.stream_version("a") == 4 and store.stream_version("nope") == -1
    recs = everything(store)
    assert [r.position for r in recs] == list(range(6))
    assert [(r.stream, r.version) for r in recs] == [
        ("a", 0), ("a", 1), ("a", 2), ("b", 0), ("a", 3), ("a", 4)]


def test_record_fields_are_stored_whole(store):
    e = EventData("0b0e1b6e-3c4f-4a7e-9f1d-0e6b7a1c2d3e", "Placed", b"\x00\x01bin", b"m", False)
    append(store, "s", ANY, [e], now=NOW + 7)
    (rec,) = store.read_stream("s", 0, 10).events
    assert tuple(rec) == (e.event_id, "s", 0, "Placed", b"\x00\x01bin", b"m", False, NOW + 7, 0)


@pytest.mark.parametrize("expected,ok", [(ANY, True), (NO_STREAM, True), (STREAM_EXISTS, False),
                                         (0, False)])
def test_expected_version_on_a_new_stream(store, expected, ok):
    out = append(store, "s", expected, events(1))
    if ok:
        assert out == AppendSuccess(0, 0, 0)
    else:
        assert isinstance(out, WrongExpectedVersion) and out.current == -1


@pytest.mark.parametrize("expected,ok", [(ANY, True), (NO_STREAM, False), (STREAM_EXISTS, True),
                                         (1, True), (0, False), (2, False)])
def test_expected_version_on_an_existing_stream(store, expected, ok):
    append(store, "s", NO_STREAM, events(2))
    out = append(store, "s", expected, events(1))
    if ok:
        assert out == AppendSuccess(2, 2, 2)
    else:
        assert isinstance(out, WrongExpectedVersion)
        assert (out.stream, out.expected, out.current) == ("s", expected, 1)
    assert store.writer_position == (2 if ok else 1)


def test_stream_exists_accepts_a_stream_with_only_metadata(store):
    assert isinstance(store.set_metadata("s", NO_STREAM, {"k": 1}, NOW), AppendSuccess)
    assert append(store, "s", STREAM_EXISTS, events(1)) == AppendSuccess(0, 0, 1)


# --- group commit --------------------------------------------------------------------------
def test_one_write_gives_one_outcome_per_request_and_later_requests_see_earlier(store):
    outs = store.write([
        AppendRequest("a", NO_STREAM, events(2)),
        AppendRequest("a", NO_STREAM, events(1)),  # sees the first: wrong version
        AppendRequest("a", 1, events(1)),
        AppendRequest("b", 5, events(1)),
        DeleteRequest("c", ANY, tombstone=True),
        AppendRequest("c", ANY, events(1)),  # sees the tombstone
        AppendRequest("", ANY, events(1)),
    ], NOW)
    assert outs[0] == AppendSuccess(0, 1, 1)
    assert isinstance(outs[1], WrongExpectedVersion) and outs[1].current == 1
    assert outs[2] == AppendSuccess(2, 2, 2)
    assert isinstance(outs[3], WrongExpectedVersion)
    assert outs[4] == DeleteSuccess(3)
    assert isinstance(outs[5], StreamDeleted)
    assert isinstance(outs[6], BadRequest)
    assert store.writer_position == 3
    assert store.write([], NOW) == []


# --- idempotency ---------------------------------------------------------------------------
@pytest.mark.parametrize("retry_expected", [ANY, NO_STREAM, STREAM_EXISTS, 0, 7])
def test_retry_returns_the_original_outcome_whatever_the_expected_version(store,
                                                                          retry_expected):
    batch = events(3)
    append(store, "x", NO_STREAM, events(1))
    first = append(store, "s", NO_STREAM, batch)
    append(store, "s", 2, events(2))
    again = append(store, "s", retry_expected, batch)
    assert again == AppendSuccess(first.first_version, first.last_version, first.position, True)
    assert store.writer_position == 5
    assert [r.event_id for r in store.read_stream("s", 0, 100).events].count(batch[0].event_id) == 1


def test_retry_within_the_same_write_and_of_a_sub_batch(store):
    batch = events(3)
    outs = store.write([AppendRequest("s", NO_STREAM, batch), AppendRequest("s", ANY, batch),
                        AppendRequest("s", ANY, batch[1:])], NOW)
    assert outs == [AppendSuccess(0, 2, 2), AppendSuccess(0, 2, 2, True),
                    AppendSuccess(1, 2, 2, True)]


def test_same_event_id_in_another_stream_is_not_a_duplicate(store):
    batch = events(2)
    assert append(store, "a", ANY, batch) == AppendSuccess(0, 1, 1)
    assert append(store, "b", ANY, batch) == AppendSuccess(0, 1, 3)


@pytest.mark.parametrize("make", [
    lambda b, n: (b[0], b[1], n),  # longer than the original
    lambda b, n: (b[1], b[0]),  # other order
    lambda b, n: (b[0], n),  # first known, second new
    lambda b, n: (b[0], b[2]),  # not consecutive
])
def test_partial_matches_are_refused(store, make):
    batch = events(3)
    append(store, "s", ANY, batch)
    out = append(store, "s", ANY, make(batch, ev()))
    assert isinstance(out, IdempotencyConflict)
    assert store.writer_position == 2


def test_new_first_id_with_a_known_later_id_is_refused_when_it_would_be_written(store):
    batch = events(2)
    append(store, "s", ANY, batch)
    assert isinstance(append(store, "s", ANY, (ev(), batch[1])), IdempotencyConflict)
    # the decision goes by the first id: a wrong expected version is reported first
    assert isinstance(append(store, "s", 9, (ev(), batch[1])), WrongExpectedVersion)
    # an earlier request of the same write counts too
    fresh = ev()
    outs = store.write([AppendRequest("t", ANY, (fresh,)), AppendRequest("t", ANY, (ev(), fresh))],
                       NOW)
    assert outs[0] == AppendSuccess(0, 0, 2) and isinstance(outs[1], IdempotencyConflict)


def test_duplicate_ids_within_one_batch_are_a_bad_request(store):
    e = ev()
    assert isinstance(append(store, "s", ANY, (e, ev(), e)), BadRequest)


def test_retry_after_soft_delete_is_still_idempotent_but_not_after_tombstone(store):
    batch = events(2)
    first = append(store, "s", ANY, batch)
    delete(store, "s", ANY)
    assert append(store, "s", ANY, batch) == AppendSuccess(0, 1, first.position, True)
    delete(store, "s", ANY, tombstone=True)
    assert isinstance(append(store, "s", ANY, batch), StreamDeleted)


# --- validation and limits -------------------------------------------------------------------
@pytest.mark.parametrize("stream", ["", "$all", "x" * 1001, "é" * 501, EPOCH_STREAM])
def test_bad_stream_names(store, stream):
    assert isinstance(append(store, stream, ANY, events(1)), BadRequest)


def test_longest_stream_name_and_long_names_are_kept_apart(store):
    long1, long2 = "x" * 1000, "x" * 999 + "y"
    assert append(store, long1, NO_STREAM, events(2)).last_version == 1
    assert append(store, long2, NO_STREAM, events(1)).last_version == 0
    assert [e.stream for e in store.read_stream(long1, 0, 10).events] == [long1, long1]
    assert store.stream_version(long2) == 0


_UUID = "0b0e1b6e-3c4f-4a7e-9f1d-0e6b7a1c2d3e"
BAD_EVENTS = [
    EventData("not-a-uuid", "T", b"", b"", True),
    EventData(_UUID.upper(), "T", b"", b"", True),  # not lowercase
    EventData(_UUID.replace("-", ""), "T", b"", b"", True),  # not canonical
    EventData(_UUID.replace("-", "") + "----", "T", b"", b"", True),  # dashes misplaced
    EventData("x" + _UUID[1:], "T", b"", b"", True),
    EventData(_UUID[:-1] + "\n", "T", b"", b"", True),
    EventData(_UUID + "\n" + str(uuid.uuid4()), "T", b"", b"", True),  # two ids in one
    EventData(_UUID[:-1] + "é", "T", b"", b"", True),
    EventData(_UUID, "", b"", b"", True),
    EventData(_UUID, 5, b"", b"", True),
    EventData(_UUID, "T", "str", b"", True),
    EventData(_UUID, "T", bytearray(b"x"), b"", True),
    EventData(_UUID, "T", b"", "str", True),
    EventData(_UUID, "T", b"", b"", 1),
    (_UUID, "T", b"", b""),
    [_UUID, "T", b"", b"", True],
]


@pytest.mark.parametrize("bad", BAD_EVENTS)
def test_bad_events(store, bad):
    out = append(store, "s", ANY, [bad])
    assert isinstance(out, BadRequest)
    assert isinstance(append(store, "s", ANY, []), BadRequest)
    assert isinstance(append(store, "s", -3, events(1)), BadRequest)


@pytest.mark.parametrize("bad", BAD_EVENTS)
def test_a_bad_event_among_good_ones_is_refused_and_nothing_is_written(store, bad):
    batch = (*events(5), bad, *events(4))  # (a batch's fields are checked a field at a time)
    out = append(store, "s", ANY, batch)
    assert isinstance(out, BadRequest), out
    assert store.writer_position == -1


def test_limits_give_clear_errors_naming_the_limit(make_store):
    limits = StorageLimits(max_stream_name_bytes=10, max_append_events=3, max_event_bytes=100,
                           max_append_bytes=250)
    store = make_store(limits)
    out = append(store, "s" * 11, ANY, events(1))
    assert isinstance(out, BadRequest) and "max_stream_name_bytes=10" in str(out)
    out = append(store, "s", ANY, events(4))
    assert isinstance(out, TooLarge) and "max_append_events=3" in str(out)
    out = append(store, "s", ANY, [ev("T", b"x" * 100)])  # 1 + 100 bytes
    assert isinstance(out, TooLarge) and "max_event_bytes=100" in str(out)
    assert append(store, "s", ANY, [ev("T", b"x" * 99)]) == AppendSuccess(0, 0, 0)
    out = append(store, "s", ANY, [ev("T", b"x" * 90) for _ in range(3)])
    assert isinstance(out, TooLarge) and "max_append_bytes=250" in str(out)
    out = append(store, "s", ANY, [ev("T", b"x" * 90), ev("T", b"x" * 100), ev("T", b"x")])
    assert isinstance(out, TooLarge) and "max_event_bytes=100" in str(out)
    assert append(store, "s", 0, [ev("T", b"x" * 99) for _ in range(2)]) == AppendSuccess(
        1, 2, 2)  # together over max_event_bytes, each within it
    assert StorageLimits() == StorageLimits(1000, 10_000, 16 << 20, 64 << 20)


# --- reads -----------------------------------------------------------------------------------
def test_read_stream_forwards_and_backwards(store):
    append(store, "s", ANY, events(10))
    fwd = store.read_stream("s", 3, 4)
    assert [e.version for e in fwd.events] == [3, 4, 5, 6]
    assert (fwd.next_version, fwd.last_version, fwd.is_end) == (7, 9, False)
    tail = store.read_stream("s", 7, 10)
    assert [e.version for e in tail.events] == [7, 8, 9] and tail.is_end and tail.next_version == 10
    past = store.read_stream("s", 20, 5)
    assert past.events == [] and past.is_end
    back = store.read_stream("s", -1, 4, backwards=True)
    assert [e.version for e in back.events] == [9, 8, 7, 6]
    assert (back.next_version, back.is_end) == (5, False)
    start = store.read_stream("s", 2, 10, backwards=True)
    assert [e.version for e in start.events] == [2, 1, 0] and start.is_end
    assert start.next_version == -1
    assert store.read_stream("s", 0, 0).events == []
    with pytest.raises(StreamNotFound):
        store.read_stream("missing", 0, 10)
    with pytest.raises(BadRequest):
        store.read_stream("s", -1, 10)
    with pytest.raises(BadRequest):
        store.read_stream("$all", 0, 10)


def test_read_all_forwards_backwards_and_up_to(store):
    for i in range(5):
        append(store, f"s{i}", ANY, events(2))
    page = store.read_all(0, 4)
    assert [e.position for e in page.events] == [0, 1, 2, 3]
    assert (page.next_position, page.is_end) == (4, False)
    last = store.read_all(8, 10)
    assert [e.position for e in last.events] == [8, 9] and last.is_end and last.next_position == 10
    back = store.read_all(-1, 3, backwards=True)
    assert [e.position for e in back.events] == [9, 8, 7] and back.next_position == 7
    back2 = store.read_all(7, 100, backwards=True)
    assert [e.position for e in back2.events] == list(range(6, -1, -1)) and back2.is_end
    capped = store.read_all(0, 100, up_to_position=4)
    assert [e.position for e in capped.events] == [0, 1, 2, 3, 4] and capped.is_end
    assert store.read_all(0, 100, up_to_position=-1).events == []
    assert store.read_all(10, 5).events == [] and store.read_all(10, 5).is_end


def test_read_stream_up_to_position_hides_later_records(store):
    append(store, "s", ANY, events(2))
    append(store, "t", ANY, events(1))
    append(store, "s", ANY, events(2))  # positions 3, 4
    page = store.read_stream("s", 0, 10, up_to_position=2)
    assert [e.version for e in page.events] == [0, 1] and page.last_version == 1 and page.is_end
    with pytest.raises(StreamNotFound):
        store.read_stream("t", 0, 10, up_to_position=1)


def test_reads_from_another_thread_while_writing(store):
    stop, errors = threading.Event(), []

    def reader():
        try:
            while not stop.is_set():
                page = store.read_all(0, 10_000)
                assert [e.position for e in page.events] == list(range(len(page.events)))
                try:
                    s = store.read_stream("s", 0, 10_000)
                    assert [e.version for e in s.events] == list(range(len(s.events)))
                except StreamNotFound:
                    pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(200):
            append(store, "s", ANY, events(3))
    finally:
        stop.set()
        thread.join(10)
    assert not errors and store.stream_version("s") == 599


# --- deletes ---------------------------------------------------------------------------------
def test_soft_delete_then_recreate(store):
    append(store, "s", ANY, events(3))
    assert delete(store, "s", 2) == DeleteSuccess(3)
    assert store.get_metadata("s").truncate_before == TRUNCATE_BEFORE_DELETED
    with pytest.raises(StreamNotFound):
        store.read_stream("s", 0, 10)
    assert store.stream_version("s") == 2
    assert isinstance(append(store, "s", STREAM_EXISTS, events(1)), StreamDeleted)
    # recreate: numbering continues, only new events visible, $tb = first new version
    out = append(store, "s", NO_STREAM, events(2))
    assert out == AppendSuccess(3, 4, 6)  # position 4 is the undelete metadata record
    page = store.read_stream("s", 0, 10)
    assert [e.version for e in page.events] == [3, 4]
    assert store.get_metadata("s").truncate_before == 3
    assert store.get_metadata("s").version == 1
    # $all still shows the deleted events
    assert len(everything(store)) == 7


@pytest.mark.parametrize("expected", [ANY, 2, STREAM_EXISTS])
def test_soft_deleted_stream_accepts_exact_and_any(store, expected):
    append(store, "s", ANY, events(3))
    delete(store, "s", ANY)
    out = append(store, "s", expected, events(1))
    if expected == STREAM_EXISTS:
        assert isinstance(out, StreamDeleted)
    else:
        assert out.first_version == 3


def test_soft_delete_keeps_custom_metadata(store):
    store.set_metadata("s", ANY, {"owner": "me", "$maxCount": 5}, NOW)
    append(store, "s", ANY, events(1))
    delete(store, "s", ANY)
    meta = store.get_metadata("s")
    assert meta.raw == {"owner": "me", "$maxCount": 5, "$tb": TRUNCATE_BEFORE_DELETED}


def test_delete_expected_version(store):
    out = delete(store, "s", 0)
    assert isinstance(out, WrongExpectedVersion) and out.current == -1
    append(store, "s", ANY, events(2))
    assert isinstance(delete(store, "s", 0), WrongExpectedVersion)
    assert isinstance(delete(store, "s", NO_STREAM), WrongExpectedVersion)
    assert isinstance(delete(store, "s", 1, tombstone=True), DeleteSuccess)
    assert isinstance(delete(store, EPOCH_STREAM, ANY), BadRequest)


def test_tombstone(store):
    append(store, "s", ANY, events(2))
    assert delete(store, "s", ANY, tombstone=True) == DeleteSuccess(2)
    for expected in (ANY, NO_STREAM, STREAM_EXISTS, 1, 2):
        assert isinstance(append(store, "s", expected, events(1)), StreamDeleted)
    assert isinstance(delete(store, "s", ANY), StreamDeleted)
    assert isinstance(delete(store, "s", ANY, tombstone=True), StreamDeleted)
    with pytest.raises(StreamDeleted):
        store.read_stream("s", 0, 10)
    with pytest.raises(StreamDeleted):
        store.read_stream("s", -1, 10, backwards=True)
    with pytest.raises(StreamDeleted):
        store.get_metadata("s")
    assert store.stream_version("s") == 1
    assert everything(store)[-1].event_type == TOMBSTONE_TYPE
    # Event Store's oddity: the metadata stream can still be written
    assert isinstance(store.set_metadata("s", ANY, {"a": 1}, NOW), AppendSuccess)


def test_tombstone_of_a_stream_that_never_existed(store):
    assert delete(store, "s", ANY, tombstone=True) == DeleteSuccess(0)
    assert isinstance(append(store, "s", NO_STREAM, events(1)), StreamDeleted)


# --- metadata --------------------------------------------------------------------------------
def test_metadata_roundtrip_and_expected_version(store):
    meta = store.get_metadata("s")
    assert (meta.version, meta.raw) == (-1, {})
    assert store.set_metadata("s", NO_STREAM, {"$maxCount": 2, "custom": [1, "x"]}, NOW) \
        == AppendSuccess(0, 0, 0)
    assert isinstance(store.set_metadata("s", NO_STREAM, {}, NOW), WrongExpectedVersion)
    meta = store.get_metadata("s")
    assert (meta.version, meta.max_count, meta.raw["custom"]) == (0, 2, [1, "x"])
    (rec,) = store.read_stream("$$s", 0, 10).events
    assert rec.event_type == "$metadata" and json.loads(rec.data)["$maxCount"] == 2


@pytest.mark.parametrize("meta", [{"$maxCount": 0}, {"$maxAge": "1"}, {"$tb": -1},
                                  {"$maxCount": True}])
def test_bad_reserved_metadata(store, meta):
    assert isinstance(store.set_metadata("s", ANY, meta, NOW), BadRequest)
    assert isinstance(append(store, "$$s", ANY, [ev("$metadata", b"[1]")]), BadRequest)
    assert isinstance(append(store, "$$s", ANY, [ev("$metadata", b"\xff")]), BadRequest)


def test_max_count_max_age_and_truncate_before_apply_on_read(store):
    for i in range(10):
        append(store, "s", ANY, events(1), now=NOW + i * 1_000_000)
    store.set_metadata("s", ANY, {"$maxCount": 4}, NOW)
    assert [e.version for e in store.read_stream("s", 0, 100).events] == [6, 7, 8, 9]
    back = store.read_stream("s", -1, 100, backwards=True)
    assert [e.version for e in back.events] == [9, 8, 7, 6] and back.is_end
    store.set_metadata("s", ANY, {"$tb": 8}, NOW)
    assert [e.version for e in store.read_stream("s", 0, 100).events] == [8, 9]
    assert store.read_stream("s", 3, 2, backwards=True).events == []
    store.set_metadata("s", ANY, {"$maxAge": 3}, NOW)
    now = NOW + 9_000_000
    assert [e.version for e in store.read_stream("s", 0, 100, now_us=now).events] == [6, 7, 8, 9]
    assert len(store.read_stream("s", 0, 100).events) == 10  # no clock, no age limit
    store.set_metadata("s", ANY, {"$tb": 20}, NOW)
    page = store.read_stream("s", 0, 100)  # all truncated: empty, not "not found"
    assert page.events == [] and page.is_end


# --- reads as of the commit position -----------------------------------------------------------
def test_uncommitted_delete_and_metadata_are_invisible_to_bounded_reads(store):
    """The issue's scenario: a leader wrote a soft delete and a metadata change it cannot
    commit; reads bounded by its commit position show neither."""
    append(store, "s", NO_STREAM, events(5))  # 0..4, committed
    store.set_commit_position(4)
    store.set_metadata("s", ANY, {"$maxCount": 2}, NOW)  # 5
    delete(store, "s", ANY)  # 6
    c = store.commit_position
    page = store.read_stream("s", 0, 100, up_to_position=c)
    assert [e.version for e in page.events] == [0, 1, 2, 3, 4] and page.last_version == 4
    back = store.read_stream("s", -1, 100, backwards=True, up_to_position=c)
    assert [e.version for e in back.events] == [4, 3, 2, 1, 0]
    assert store.get_metadata("s", up_to_position=c) == StreamMetadata("s", -1, {})
    assert store.stream_version("$$s", up_to_position=c) == -1
    with pytest.raises(StreamNotFound):
        store.read_stream("$$s", 0, 10, up_to_position=c)
    assert [e.position for e in store.read_all(0, 100, up_to_position=c).events] == [0, 1, 2,
                                                                                  3, 4]
    # unbounded (the writer's view), and once committed: both happened
    with pytest.raises(StreamNotFound):
        store.read_stream("s", 0, 100)
    store.set_commit_position(5)
    assert [e.version for e in store.read_stream("s", 0, 100, up_to_position=5).events] == [3, 4]
    assert store.get_metadata("s", up_to_position=5).raw == {"$maxCount": 2}
    with pytest.raises(StreamNotFound):
        store.read_stream("s", 0, 100, up_to_position=6)


def test_uncommitted_tombstone_is_invisible_to_bounded_reads(store):
    append(store, "s", NO_STREAM, events(2))
    store.set_metadata("s", ANY, {"k": 1}, NOW)  # 2
    delete(store, "s", ANY, tombstone=True)  # 3
    assert [e.version for e in store.read_stream("s", 0, 10, up_to_position=2).events] == [0, 1]
    assert store.get_metadata("s", up_to_position=2).raw == {"k": 1}
    assert store.stream_version("s", up_to_position=2) == 1
    for read in (lambda: store.read_stream("s", 0, 10, up_to_position=3),
                 lambda: store.get_metadata("s", up_to_position=3),
                 lambda: store.get_metadata("s")):
        with pytest.raises(StreamDeleted):
            read()


def test_bounded_reads_use_the_last_committed_metadata(store):
    for i in range(6):
        append(store, "s", ANY, events(1), now=NOW + i * 1_000_000)  # 0..5
    store.set_metadata("s", ANY, {"$maxCount": 4}, NOW)  # 6
    store.set_metadata("s", ANY, {"$maxCount": 1, "$maxAge": 2}, NOW)  # 7
    store.set_metadata("s", ANY, {"$tb": 5}, NOW)  # 8
    now = NOW + 5_000_000

    def versions(up_to):
        return [e.version for e in store.read_stream("s", 0, 100, up_to_position=up_to,
                                                     now_us=now).events]

    assert versions(5) == [0, 1, 2, 3, 4, 5]
    assert versions(6) == [2, 3, 4, 5]
    assert versions(7) == [5]
    assert versions(8) == [5]
    assert store.get_metadata("s", up_to_position=6) == StreamMetadata("s", 0, {"$maxCount": 4})
    assert store.get_metadata("s", up_to_position=7).version == 1


def test_soft_delete_and_recreate_above_the_bound(store):
    append(store, "s", NO_STREAM, events(2))  # 0, 1
    delete(store, "s", ANY)  # 2
    append(store, "s", ANY, events(1))  # undelete metadata 3, event 4
    with pytest.raises(StreamNotFound):
        store.read_stream("s", 0, 10, up_to_position=2)
    page = store.read_stream("s", 0, 10, up_to_position=3)  # undeleted, no new event yet
    assert page.events == [] and page.last_version == 1
    assert store.stream_version("s", up_to_position=3) == 1
    assert [e.version for e in store.read_stream("s", 0, 10, up_to_position=4).events] == [2]
    assert [e.version for e in store.read_stream("s", 0, 10, up_to_position=1).events] == [0, 1]


def test_bounded_stream_version_with_an_interleaved_tail(store):
    """The search back from an uncommitted tail, at every bound."""
    positions = []
    for i in range(40):
        out = append(store, "s" if i % 3 else "other", ANY, events(1))
        if i % 3:
            positions.append(out.position)
    for bound in range(-1, store.writer_position + 1):
        want = sum(1 for p in positions if p <= bound) - 1
        assert store.stream_version("s", up_to_position=bound) == want, bound
        if want >= 0:
            page = store.read_stream("s", -1, 1, backwards=True, up_to_position=bound)
            assert page.events[0].version == want and page.last_version == want


def _history_of_deletes_and_metadata(store):
    """Every kind of record that changes a stream's state, interleaved."""
    store.write_epoch(1, "node-a", NOW)
    for i in range(4):
        append(store, "a", ANY, events(1), now=NOW + i * 1_000_000)
    store.set_metadata("a", ANY, {"$maxCount": 3, "x": 1}, NOW)
    append(store, "b", ANY, events(2))
    store.set_metadata("a", ANY, {"$maxAge": 2}, NOW)
    delete(store, "b", ANY)
    store.set_metadata("a", ANY, {"$tb": 1}, NOW)
    append(store, "b", ANY, events(1))
    append(store, "c", ANY, events(2))
    store.write_epoch(2, "node-b", NOW)
    delete(store, "c", ANY, tombstone=True)
    store.set_metadata("c", ANY, {"after": "tombstone"}, NOW)
    delete(store, "a", ANY)
    append(store, "a", ANY, events(1), now=NOW + 9_000_000)


def _reads(store, up_to=None):
    """What every read path answers (bounded by ``up_to``)."""
    now = NOW + 4_000_000
    out = {"all": store.read_all(0, 1000, up_to_position=up_to),
           "all-back": store.read_all(-1, 1000, backwards=True, up_to_position=up_to)}
    for s in ("a", "b", "c", "$$a", "$$b", "$$c", EPOCH_STREAM, "missing"):
        for name, read in (
                ("fwd", lambda: store.read_stream(s, 0, 1000, up_to_position=up_to, now_us=now)),
                ("back", lambda: store.read_stream(s, -1, 2, backwards=True,
                                                   up_to_position=up_to)),
                ("meta", lambda: store.get_metadata(s, up_to_position=up_to)),
                ("version", lambda: store.stream_version(s, up_to_position=up_to))):
            try:
                out[s, name] = read()
            except (StreamNotFound, StreamDeleted) as exc:
                out[s, name] = type(exc).__name__
    return out


def test_every_read_path_at_every_bound_answers_as_the_log_prefix_does(make_store):
    """Reads bounded by position P on the whole log == unbounded reads of a store holding only
    the log up to P (a replica that never received the rest)."""
    full, prefix = make_store(name="full"), make_store(name="prefix")
    _history_of_deletes_and_metadata(full)
    assert _reads(full, -1) == _reads(prefix)
    for position, raw in full.read_raw(-1, 1000):
        prefix.write_raw([(position, raw)])
        assert _reads(full, position) == _reads(prefix), position
    assert _reads(full) == _reads(prefix)


# --- replication support ---------------------------------------------------------------------
def _busy_history(store):
    """A log exercising every kind of record."""
    store.write_epoch(1, "node-a", NOW)
    a = events(3)
    append(store, "a", NO_STREAM, a)
    store.set_metadata("a", ANY, {"$maxCount": 2, "x": 1}, NOW)
    append(store, "b", ANY, events(2))
    delete(store, "b", ANY)
    append(store, "b", ANY, events(1))
    delete(store, "c", ANY, tombstone=True)
    store.write_epoch(2, "node-b", NOW)
    append(store, "a", ANY, events(2))
    return a


def _observable(store):
    """Everything a client or the cluster can see, for comparing two stores."""
    out = {"all": everything(store), "writer": store.writer_position,
           "epochs": store.epochs(), "streams": {}}
    for s in ("a", "b", "c", "$$a", "$$b", "missing"):
        try:
            page = store.read_stream(s, 0, 1000)
            out["streams"][s] = (page.events, page.last_version, store.get_metadata(s))
        except (StreamNotFound, StreamDeleted) as exc:
            out["streams"][s] = type(exc).__name__
        out["streams"][s + "#version"] = store.stream_version(s)
    return out


def test_read_raw_write_raw_roundtrip(make_store):
    leader, follower = make_store(name="leader"), make_store(name="follower")
    first_batch = _busy_history(leader)
    position = -1
    while True:
        chunk = leader.read_raw(position, 4, max_bytes=400)
        if not chunk:
            break
        assert [p for p, _ in chunk] == list(range(position + 1, position + 1 + len(chunk)))
        follower.write_raw(chunk, commit_position=chunk[-1][0])
        position = chunk[-1][0]
    assert _observable(follower) == _observable(leader)
    assert follower.commit_position == leader.writer_position
    assert follower.read_raw(-1, 1000) == leader.read_raw(-1, 1000)
    # idempotency survives replication
    assert append(follower, "a", ANY, first_batch) == append(leader, "a", ANY, first_batch)
    assert append(follower, "a", ANY, first_batch).idempotent
    assert isinstance(append(follower, "c", ANY, events(1)), StreamDeleted)
    # epoch numbering continues on the follower
    with pytest.raises(ValueError):
        follower.write_epoch(2, "x", NOW)


def test_write_raw_refuses_gaps_and_garbage(make_store):
    leader, follower = make_store(name="leader"), make_store(name="follower")
    append(leader, "a", ANY, events(3))
    raw = leader.read_raw(-1, 10)
    with pytest.raises(ValueError):
        follower.write_raw(raw[1:])
    with pytest.raises(ValueError):
        follower.write_raw([(0, b"\x93\x01\x02\x03")])
    with pytest.raises(ValueError):
        follower.write_raw([(0, raw[1][1])])  # position mismatch
    assert follower.writer_position == -1
    follower.write_raw([])
    follower.write_raw([], commit_position=5)
    assert follower.commit_position == 5 and follower.writer_position == -1


def test_read_raw_limits(store):
    append(store, "a", ANY, events(10))
    assert len(store.read_raw(-1, 3)) == 3
    assert len(store.read_raw(-1, 100, max_bytes=1)) == 1  # always at least one
    assert store.read_raw(9, 10) == [] and store.read_raw(-1, 0) == []
    assert [p for p, _ in store.read_raw(7, 100)] == [8, 9]


def test_truncate_after_restores_everything(make_store):
    store, reference = make_store(name="s"), make_store(name="r")
    a = _busy_history(store)
    _busy_history_prefix = store.read_raw(-1, 6)  # epoch 1, a x3, $$a, b0
    reference.write_raw(_busy_history_prefix)
    store.truncate_after(5)
    assert _observable(store) == _observable(reference)
    assert store.epochs() == [(1, 0, "node-a")]
    # the event-id index forgot the removed records and kept the others
    assert append(store, "a", ANY, a).idempotent
    b_again = append(store, "b", 0, events(1))
    assert b_again == AppendSuccess(1, 1, 6)  # b's head was restored to version 0
    store.truncate_after(-1)
    assert store.writer_position == -1 and everything(store) == [] and store.epochs() == []
    assert append(store, "a", NO_STREAM, a) == AppendSuccess(0, 2, 2)


def test_truncate_refuses_below_commit_position(store):
    append(store, "a", ANY, events(5))
    store.set_commit_position(3)
    store.set_commit_position(1)  # never backwards
    assert store.commit_position == 3
    with pytest.raises(ValueError):
        store.truncate_after(2)
    store.truncate_after(3)
    assert store.writer_position == 3
    store.truncate_after(10)  # nothing after: no-op
    assert store.writer_position == 3


def test_truncate_restores_soft_delete_state_and_tombstones(store):
    append(store, "s", ANY, events(2))
    delete(store, "s", ANY)  # position 2
    append(store, "s", ANY, events(1))  # undelete metadata 3, event 4
    delete(store, "s", ANY, tombstone=True)  # 5
    store.truncate_after(4)
    assert [e.version for e in store.read_stream("s", 0, 10).events] == [2]
    store.truncate_after(2)
    with pytest.raises(StreamNotFound):
        store.read_stream("s", 0, 10)
    assert store.stream_version("s") == 1
    store.truncate_after(1)
    assert store.get_metadata("s").raw == {}
    assert [e.version for e in store.read_stream("s", 0, 10).events] == [0, 1]


def test_epochs(store):
    assert store.epochs() == []
    append(store, "a", ANY, events(2))
    e1 = store.write_epoch(1, "n1", NOW)
    assert e1 == (1, 2, "n1") and store.writer_position == 2
    with pytest.raises(ValueError):
        store.write_epoch(1, "n2", NOW)
    e5 = store.write_epoch(5, "n2", NOW)
    assert store.epochs() == [e1, e5]
    # epoch records are in the log (read_raw) but hidden from $all reads, like Event Store's
    assert len(store.read_raw(-1, 100)) == 4
    page = store.read_all(0, 100)
    assert [e.position for e in page.events] == [0, 1] and page.next_position == 4
    assert isinstance(append(store, EPOCH_STREAM, ANY, events(1)), BadRequest)
    rec = store.read_stream(EPOCH_STREAM, 0, 10).events[1]
    assert json.loads(rec.data) == {"number": 5, "leader_id": "n2"}


def test_vote(store):
    assert store.last_vote() is None
    store.write_vote((3, "n2"))
    assert store.last_vote() == (3, "n2")
