"""The pure pieces of the feeds: content negotiation, position tokens, ETags, links."""

from __future__ import annotations

import orjson
import pytest

from esnode.core.types import EncodedEvents, RecordedEvent
from esnode.httpapi import atom
from esnode.storage.rules import encode_record


@pytest.mark.parametrize("accept, fmt, want", [
    (None, None, atom.ATOM_JSON), ("*/*", None, atom.ATOM_JSON),
    ("text/html, application/json;q=0.9", None, atom.JSON),
    ("application/vnd.kurrent.atom+json", None, atom.KURRENT_ATOM_JSON),
    ("text/html", None, None), (None, "json", atom.JSON), (None, "xml", None),
])
def test_negotiate(accept, fmt, want):
    assert atom.negotiate(accept, atom.FEED_TYPES, fmt) == want


def test_position_tokens_round_trip_and_refuse_the_rest():
    assert atom.position_token(5) == "0000000000000005" * 2
    assert atom.parse_position(atom.position_token(123456)) == 123456
    for bad in ("", "0" * 31, "g" * 32, "0" * 15 + "1" + "0" * 16, "F" * 32):
        with pytest.raises(ValueError):
            atom.parse_position(bad)


def test_etags_differ_by_version_and_media_type():
    assert atom.etag(3, atom.JSON) != atom.etag(3, atom.ATOM_JSON) != atom.etag(4, atom.ATOM_JSON)
    assert atom.etag(3, atom.JSON).startswith('"3;')


def test_embed_levels_and_escaping():
    assert atom.embed_level("PRETTY") == "body" and atom.embed_level("x") == "none"
    assert atom.escape("$all") == "%24all" and atom.escape("a/b c") == "a%2Fb%20c"
    assert atom.iso_time(1_500_000_000_123_456) == "2017-07-14T02:40:00.123456Z"


def _events(versions):
    return [RecordedEvent(f"00000000-0000-4000-8000-{v:012d}", "s", v, "T", b"{}", b"", True,
                          1_500_000_000_000_000, v) for v in versions]


def test_a_middle_backward_page_is_complete_and_links_both_ways():
    page = atom.stream_page("http://h", "s", _events([9, 8, 7]), 20, 9, 3, False, False, "none")
    links = {link["relation"]: link["uri"] for link in page.body["links"]}
    assert links["next"] == "http://h/streams/s/6/backward/3"
    assert links["previous"] == "http://h/streams/s/10/forward/3"
    assert page.version is None and page.body["headOfStream"] is False


def test_a_metastream_page_has_no_metadata_link():
    page = atom.stream_page("http://h", "$$s", _events([0]), 0, 0, 5, True, False, "none")
    assert "metadata" not in {link["relation"] for link in page.body["links"]}
    assert page.version == 0  # incomplete: revalidated


def _event(position: int, data: bytes = b'{"a": 1}', event_id: str | None = None):
    return RecordedEvent(event_id or f"00000000-0000-4000-8000-{position:012d}", "s", position,
                         "T", data, b'{"m": "\\u00e9"}', True, 1_500_000_000_000_000, position)


def test_a_page_renders_as_its_body_with_the_entries_last():
    events = _events([0, 1, 2])
    for embed in atom.EMBED_LEVELS:
        page = atom.stream_page("http://h", "s", events, 2, 0, 3, True, False, embed)
        rendered = orjson.loads(page.render())
        assert list(rendered) == [*page.body, "entries"]
        assert rendered["entries"] == [atom.entry("http://h", e, embed, "s")
                                       for e in events[::-1]]
    empty = atom.all_page("http://h", [], None, 5, False, 0, True, -1, "body")
    assert orjson.loads(empty.render())["entries"] == []


def test_the_entry_cache_serves_only_the_same_event_and_stays_bounded():
    cache = atom.EntryCache(max_bytes=2_000, max_entry=1_000)
    first = cache.render("http://h", _event(7), "body", "s")
    assert first == orjson.dumps(atom.entry("http://h", _event(7), "body", "s"))
    assert cache.render("http://h", _event(7), "body", "s") is first  # an equal event: hit
    # the position rewritten with another event (a truncated tail), another host, level
    other = _event(7, data=b'{"a": 2}', event_id="00000000-0000-4000-8000-999999999999")
    assert b'999999999999' in cache.render("http://h", other, "body", "s")
    assert b"http://x/" in cache.render("http://x", other, "body", "s")
    assert b'"data"' not in cache.render("http://h", other, "rich", "s")
    for position in range(100):  # bounded by bytes, oldest out first
        cache.render("http://h", _event(position), "body", "s")
    assert 0 < len(cache) <= 2_000 // len(first) + 1
    big = _event(1, data=b'"' + b"x" * 2_000 + b'"')
    assert len(cache.render("http://h", big, "body", "s")) > 2_000  # served, not kept
    assert all(len(v[1]) <= 1_000 for v in cache._items.values())


def test_pages_read_as_stored_render_as_the_decoded_ones_and_hit_by_their_bytes():
    recs = [_event(p) for p in range(5)]
    stored = EncodedEvents([encode_record(r) for r in recs], range(5))
    for page_of in (lambda evs, cache: atom.stream_page("http://h", "s", evs, 4, 0, 5, True,
                                                        False, "body", cache),
                    lambda evs, cache: atom.all_page("http://h", evs, 0, 5, True, 5, True, 4,
                                                     "body", cache)):
        for cache in (None, atom.EntryCache()):
            assert page_of(stored, cache).render() == page_of(recs, None).render()
    cache = atom.EntryCache()
    first = cache.render_encoded("http://h", stored, "body", "s")
    assert cache.render_encoded("http://h", stored, "body", "s")[2] is first[2]  # hits
    other = _event(2, data=b'{"a": 2}')  # the position rewritten: the bytes differ
    changed = EncodedEvents([encode_record(other)], [2])
    assert cache.render_encoded("http://h", changed, "body", "s") == [
        orjson.dumps(atom.entry("http://h", other, "body", "s"))]
    assert cache.render("http://h", other, "body", "s") == orjson.dumps(
        atom.entry("http://h", other, "body", "s"))  # a decoded read of the same position
