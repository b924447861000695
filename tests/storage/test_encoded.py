"""Pages read as stored (``encoded=True``: ``EncodedEvents``) against the decoded pages: the
same events, the same page fields and, spliced by the wire codec, the same reply and
subscription-push bytes (so a client decodes them exactly as before). Only a page no rule must look inside comes as stored:
``$maxAge`` and scavenged records take the decoding path (epoch records are dropped by
position)."""

from __future__ import annotations

import shutil
import tempfile

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esnode.actors.replies import reply_for
from esnode.client._calls import _events as client_events
from esnode.core.messages import EventsPushed
from esnode.core.types import AppendRequest, EncodedEvents, EventData, RecordedEvent
from esnode.storage import LmdbEventStore, MemoryEventStore
from esnode.storage.rules import encode_record
from esnode.transport.codec import encode_reply
from tests.storage.conftest import NOW, append, ev, events

_event = st.builds(
    lambda i, t, d, m, j: EventData(f"00000000-0000-4000-8000-{i:012d}", t, d, m, j),
    st.integers(0, 10**12), st.text(min_size=1, max_size=40), st.binary(max_size=300),
    st.binary(max_size=40), st.booleans())


def _same(encoded, decoded) -> None:
    """One page both ways: equal, and the same bytes on the wire, which a client decodes
    to the same records."""
    assert type(encoded.events) is EncodedEvents or not decoded.events
    assert encoded == decoded and list(encoded.events) == decoded.events
    wire = encode_reply(7, reply_for(encoded))
    assert wire == encode_reply(7, reply_for(decoded))
    corr, kind, body = msgpack.unpackb(wire, raw=False)
    assert (corr, kind) == (7, "ok") and client_events(body["events"]) == decoded.events
    # A subscription pushes pages the same way (catch-up and live).
    pushed = encode_reply(9, EventsPushed(encoded.events))
    assert pushed == encode_reply(9, EventsPushed(decoded.events))


_batch = st.tuples(st.sampled_from("abc"),
                   st.lists(_event, min_size=1, max_size=12, unique_by=lambda e: e.event_id))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(_batch, min_size=1, max_size=8),
       start=st.integers(-1, 40), count=st.integers(0, 50), backwards=st.booleans(),
       lmdb=st.booleans())
def test_pages_as_stored_equal_the_decoded_pages(batches, start, count, backwards, lmdb):
    path = tempfile.mkdtemp() if lmdb else None
    store = LmdbEventStore(path) if lmdb else MemoryEventStore()
    try:
        seen: set[str] = set()
        for stream, evs in batches:
            fresh = tuple(e for e in evs if e.event_id not in seen)
            seen.update(e.event_id for e in fresh)
            if fresh:
                store.write([AppendRequest(stream, -2, fresh)], NOW)
        up_to = store.writer_position - 1
        for s in "abc":
            if store.stream_version(s, up_to) < 0:
                continue
            first = start if backwards else max(start, 0)
            args = (s, first, count, backwards, up_to, NOW)
            _same(store.read_stream(*args, encoded=True), store.read_stream(*args))
        args = (start if backwards else max(start, 0), count, backwards, up_to)
        _same(store.read_all(*args, encoded=True), store.read_all(*args))
    finally:
        store.close()
        if path:
            shutil.rmtree(path)


def test_rules_that_look_inside_the_records_decode(make_store):
    store = make_store()
    store.write_epoch(1, "n1", NOW)
    append(store, "s", -1, events(5))
    store.set_metadata("aged", -1, {"$maxAge": 60}, NOW)
    append(store, "aged", -1, events(3), now=NOW - 120_000_000)
    append(store, "aged", 2, events(2))
    store.write_epoch(2, "n1", NOW)
    # epoch records are hidden from $all, by their positions (no decoding)
    for args in ((0, 100), (1, 100), (-1, 100, True), (-1, 3, True), (3, 4), (0, 1)):
        page = store.read_all(*args, encoded=True)
        assert type(page.events) is EncodedEvents and page == store.read_all(*args)
        assert all(r.stream != "$epoch-information" for r in page.events)
    # $maxAge needs each record's creation time
    aged = store.read_stream("aged", 0, 100, now_us=NOW, encoded=True)
    assert type(aged.events) is list and [e.version for e in aged.events] == [3, 4]
    assert type(store.read_stream("s", 0, 100, encoded=True).events) is EncodedEvents


def test_scavenged_records_are_never_sent_as_stored(make_store, backend, tmp_path):
    store = make_store()
    append(store, "s", -1, events(10))
    assert type(store.read_all(0, 100, encoded=True).events) is EncodedEvents
    rec = store.read_stream("s", 3, 1).events[0]
    gone = rec._replace(data=None, metadata=b"")
    store.rewrite([(rec.position, encode_record(gone))], b"checkpoint")
    for page in (store.read_all(0, 100, encoded=True), store.read_stream("s", 0, 100,
                                                                          encoded=True)):
        assert type(page.events) is list and len(page.events) == 9
        assert all(e.data is not None for e in page.events)
    # above the mark, pages come as stored again
    assert type(store.read_all(rec.position + 1, 100, encoded=True).events) is EncodedEvents
    if backend == "lmdb":  # the mark is durable
        store.close()
        again = make_store()
        assert type(again.read_all(0, 100, encoded=True).events) is list
        assert type(again.read_all(rec.position + 1, 100,
                                   encoded=True).events) is EncodedEvents


def test_a_replicated_scavenged_record_raises_the_mark(make_store):
    leader, follower = make_store(name="a"), make_store(name="b")
    append(leader, "s", -1, events(4))
    rec = leader.read_stream("s", 1, 1).events[0]
    raw = dict(leader.read_raw(-1, 100))
    raw[rec.position] = encode_record(rec._replace(data=None, metadata=b""))
    follower.write_raw(sorted(raw.items()))
    page = follower.read_all(0, 100, encoded=True)
    assert type(page.events) is list and len(page.events) == 3


def test_an_old_store_without_the_mark_decodes_what_it_had(tmp_path):
    store = LmdbEventStore(tmp_path / "db")
    append(store, "s", -1, events(5))
    with store._env.begin(write=True) as txn:  # as written before the mark existed
        txn.delete(b"scavenged", db=store._checkpoints)
    store.close()
    store = LmdbEventStore(tmp_path / "db")
    try:
        assert type(store.read_all(0, 100, encoded=True).events) is list
        append(store, "s", 4, [ev()])
        assert type(store.read_all(5, 100, encoded=True).events) is EncodedEvents
    finally:
        store.close()


def test_encoded_events_act_as_a_sequence_of_records():
    recs = [RecordedEvent(f"00000000-0000-4000-8000-{i:012d}", "s", i, "T", b"{}", b"",
                          True, NOW, 10 + i) for i in range(4)]
    page = EncodedEvents([encode_record(r) for r in recs], range(10, 14))
    assert page[2] == recs[2] and page[-1] == recs[-1] and len(page) == 4
    backwards = page[::-1]
    assert type(backwards) is EncodedEvents and list(backwards.positions) == [13, 12, 11, 10]
    assert backwards == recs[::-1] and list(page) == recs and page != recs[:3]
    assert list(reversed(page)) == recs[::-1] and recs[1] in page
    assert bool(EncodedEvents([], ())) is False
