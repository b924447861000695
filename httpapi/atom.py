"""Event Store's atom+json feeds, links and cache headers, as pure functions (no I/O).

Everything here follows /work/shared/reference/http-api.md §3-4 (Event Store V5's
``Convert.cs`` and ``Configure.cs``); docs/http.md lists where esnode differs. Kept free of the
web framework so the rendering is unit-tested directly and costs only what it must (feed
reads are the hot read path: one dict and one ``orjson.dumps`` per entry, memoised by
``EntryCache``; the page splices the entries' bytes).
"""

from __future__ import annotations

import json
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

import orjson

from esnode.core.types import ALL_STREAM, METADATA_PREFIX, EncodedEvents, RecordedEvent

FEED_PAGE_SIZE = 20
"""Event Store's ``AtomSpecs.FeedPageSize``: the page of ``GET /streams/{s}``."""

ATOM_JSON = "application/vnd.eventstore.atom+json"
KURRENT_ATOM_JSON = "application/vnd.kurrent.atom+json"
JSON = "application/json"
EVENT_JSON = "application/vnd.eventstore.event+json"
KURRENT_EVENT_JSON = "application/vnd.kurrent.event+json"
EVENTS_JSON = "application/vnd.eventstore.events+json"
KURRENT_EVENTS_JSON = "application/vnd.kurrent.events+json"
OCTET = "application/octet-stream"
TEXT = "text/plain"

FEED_TYPES = (ATOM_JSON, JSON, KURRENT_ATOM_JSON)
"""Media types a feed is served in, the default first."""
EVENT_TYPES = (ATOM_JSON, EVENT_JSON, JSON, KURRENT_ATOM_JSON, KURRENT_EVENT_JSON, OCTET, TEXT)
"""Media types one event is served in, the default first."""
FORMATS = {"json": JSON, "atomxj": ATOM_JSON, "atom": ATOM_JSON, "text": TEXT}
"""``?format=`` values (Event Store's; ``atom`` means XML there: we have no XML)."""

CACHE_FOREVER = "max-age=31536000, public"
NO_CACHE = "max-age=0, no-cache, must-revalidate"
EMPTY_TIME = "0001-01-01T00:00:00Z"
AUTHOR = {"name": "EventStore"}
ZERO_POSITION = "0" * 32


def negotiate(accept: str | None, offered: tuple[str, ...], fmt: str | None = None) -> str | None:
    """The media type to answer in: ``?format=``, else the first offered type the Accept
    header names (header order; ``*/*`` and no header mean the route's default); ``None``
    means 406."""
    if fmt:
        wanted = FORMATS.get(fmt.lower())
        return wanted if wanted in offered else None
    if not accept:
        return offered[0]
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in offered:
            return media
        if media in ("*/*", "application/*"):
            return offered[0]
    return None


def etag(version: int, media: str) -> str:
    """``"<version>;<hash of the media type>"``: the hash is a fixed number per media type
    (Event Store's is a .NET string hash; only equality matters)."""
    return f'"{version};{zlib.crc32(media.encode())}"'


def position_token(position: int) -> str:
    """A ``$all`` position as Event Store writes it: commit then prepare position, 16 upper
    case hex digits each; esnode has one position, so both halves carry it."""
    return f"{position:016X}{position:016X}"


def parse_position(token: str) -> int:
    """Inverse of ``position_token``; raises ValueError on anything else."""
    if len(token) != 32:
        raise ValueError(token)
    commit, prepare = int(token[:16], 16), int(token[16:], 16)
    if commit != prepare or commit >= 1 << 63:
        raise ValueError(token)
    return commit


@lru_cache(maxsize=4096)
def escape(stream: str) -> str:
    """Stream names in links are percent-encoded (``$all`` -> ``%24all``)."""
    return quote(stream, safe="")


_second_cache: dict[int, str] = {}


def iso_time(created_us: int) -> str:
    """ISO-8601 UTC with microseconds and ``Z`` (formatting cached per second: feeds render
    many events written in the same second)."""
    seconds, micros = divmod(created_us, 1_000_000)
    prefix = _second_cache.get(seconds)
    if prefix is None:
        if len(_second_cache) > 4096:
            _second_cache.clear()
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second_cache[seconds] = prefix
    return f"{prefix}.{micros:06d}Z"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _json_or_text(raw: bytes):
    try:
        return json.loads(raw) if raw else ""
    except ValueError:
        return _text(raw)


def event_content(e: RecordedEvent) -> dict:
    """The ``content`` object of ``embed=content`` and of a single event."""
    return {"eventStreamId": e.stream, "eventNumber": e.version, "eventType": e.event_type,
            "eventId": e.event_id, "data": _json_or_text(e.data),
            "metadata": _json_or_text(e.metadata)}


EMBED_LEVELS = ("none", "content", "rich", "body", "pretty", "tryharder")


def embed_level(value: str | None) -> str:
    """Case-insensitive; unknown values mean none (as Event Store). ``pretty`` and
    ``tryharder`` are served as ``body``."""
    level = (value or "none").lower()
    if level in ("pretty", "tryharder"):
        return "body"
    return level if level in EMBED_LEVELS else "none"


def entry(base: str, e: RecordedEvent, embed: str, position_stream: str) -> dict:
    """One feed entry; key order as Event Store's (reference §3.2-3.3). The event is
    unpacked once: this runs for every event of every feed page not already cached."""
    event_id, stream, number, event_type, data, metadata, is_json, created, _ = e
    url = f"{base}/streams/{escape(stream)}/{number}"
    if embed == "rich" or embed == "body":
        out = {"eventId": event_id, "eventType": event_type, "eventNumber": number}
        has_meta = False
        if embed == "body":
            if is_json:
                out["data"] = data.decode("utf-8", "replace")
            if metadata:
                out["metaData"] = metadata.decode("utf-8", "replace")
                has_meta = True
        out["streamId"] = stream
        out["isJson"] = is_json
        out["isMetaData"] = has_meta
        out["isLinkMetaData"] = False
        out["positionEventNumber"] = number
        out["positionStreamId"] = stream if position_stream == ALL_STREAM else position_stream
    else:
        out = {}
    out["title"] = f"{number}@{stream}"
    out["id"] = url
    out["updated"] = iso_time(created)
    out["author"] = AUTHOR
    out["summary"] = event_type
    if embed == "content" and is_json:
        out["content"] = event_content(e)
    out["links"] = [{"uri": url, "relation": "edit"}, {"uri": url, "relation": "alternate"}]
    return out


class EntryCache:
    """The rendered JSON of recently served feed entries, so that the many readers of the
    same recent events (competing consumers and subscribers polling a stream's or ``$all``'s
    newest pages) cost one rendering per event, not one per read.

    It is a pure memo: an entry is looked up by log position, link base and embed level,
    and used only when the stored event equals the one just read (a truncated and rewritten
    position, a different host in the links, never get a stale entry). A page read as stored
    (``EncodedEvents``) is checked by comparing the stored bytes, and decoded only for the
    entries it misses. Bounded by the bytes
    it holds (oldest first out); entries over ``max_entry`` bytes are not kept. One per HTTP
    face, used only on its loop's thread."""

    def __init__(self, max_bytes: int = 16 << 20, max_entry: int = 64 << 10) -> None:
        self.max_bytes, self.max_entry = max_bytes, max_entry
        self._items: OrderedDict[tuple, tuple[RecordedEvent | bytes, bytes]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def render(self, base: str, e: RecordedEvent, embed: str, position_stream: str) -> bytes:
        key = (e.position, base, embed, position_stream)
        hit = self._items.get(key)
        if hit is not None and hit[0] == e:
            return hit[1]
        return self._keep(key, hit, e, orjson.dumps(entry(base, e, embed, position_stream)))

    def render_encoded(self, base: str, events: EncodedEvents, embed: str,
                       position_stream: str) -> list[bytes]:
        """The entries of a page read as stored: a hit costs a bytes comparison."""
        items, out = self._items, []
        for i, (value, position) in enumerate(zip(events.values, events.positions)):
            key = (position, base, embed, position_stream)
            hit = items.get(key)
            if hit is not None and hit[0] == value:
                out.append(hit[1])
            else:
                data = orjson.dumps(entry(base, events[i], embed, position_stream))
                out.append(self._keep(key, hit, value, data))
        return out

    def _keep(self, key: tuple, hit: tuple | None, stamp: RecordedEvent | bytes,
              data: bytes) -> bytes:
        if len(data) <= self.max_entry:
            if hit is not None:
                self._bytes -= len(hit[1])
            self._items[key] = (stamp, data)
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                self._bytes -= len(self._items.popitem(last=False)[1][1])
        return data


def _entries(base: str, events: list[RecordedEvent], embed: str, position_stream: str,
             cache: EntryCache | None) -> list[bytes]:
    if cache is not None:
        if type(events) is EncodedEvents:
            return cache.render_encoded(base, events, embed, position_stream)
        render = cache.render
        return [render(base, e, embed, position_stream) for e in events]
    dumps = orjson.dumps
    return [dumps(entry(base, e, embed, position_stream)) for e in events]


def single_entry(base: str, e: RecordedEvent) -> dict:
    """``GET /streams/{s}/{n}`` in atom+json: an entry with ``content``."""
    url = f"{base}/streams/{escape(e.stream)}/{e.version}"
    return {"title": f"{e.version}@{e.stream}", "id": url, "updated": iso_time(e.created),
            "author": AUTHOR, "summary": e.event_type, "content": event_content(e),
            "links": [{"uri": url, "relation": "edit"}, {"uri": url, "relation": "alternate"}]}


@dataclass(frozen=True, slots=True)
class Page:
    """A rendered feed page plus how it may be cached: ``version`` for the ETag (``None``
    when the page is complete and cacheable forever). ``body`` holds every key but
    ``entries``, the last one, whose items are JSON already; ``render`` splices them in."""

    body: dict
    version: int | None
    entries: list[bytes]

    def render(self) -> bytes:
        """The page as JSON bytes."""
        head = orjson.dumps(self.body)
        return b"".join((head[:-1], b',"entries":[', b",".join(self.entries), b"]}"))


def _link(uri: str, relation: str) -> dict:
    return {"uri": uri, "relation": relation}


def stream_page(base: str, stream: str, events: list[RecordedEvent], last: int, start: int,
                count: int, forward: bool, head: bool, embed: str,
                cache: EntryCache | None = None) -> Page:
    """A page of a stream (or a ``$$`` metastream). ``start`` is the requested event number
    (for ``head``: the last one), ``last`` the stream's last event number; ``events`` as
    read, oldest first for forward pages and newest first for backward ones."""
    s = f"{base}/streams/{escape(stream)}"
    self_url = s
    links = [_link(self_url, "self"), _link(f"{s}/head/backward/{count}", "first")]
    if forward:
        if start >= 1:
            links.append(_link(f"{s}/0/forward/{count}", "last"))
            links.append(_link(f"{s}/{start - 1}/backward/{count}", "next"))
        top = min(start + count - 1, last)
        if events or start <= last:
            links.append(_link(f"{s}/{top + 1}/forward/{count}", "previous"))
        entries_events = events[::-1]
        head_of_stream = start + count - 1 >= last
        complete = len(events) == count
    else:
        if start - count >= 0:
            links.append(_link(f"{s}/0/forward/{count}", "last"))
            links.append(_link(f"{s}/{start - count}/backward/{count}", "next"))
        links.append(_link(f"{s}/{min(start, last) + 1}/forward/{count}", "previous"))
        entries_events = events
        head_of_stream = head
        complete = not head and start <= last
    if not stream.startswith(METADATA_PREFIX):
        links.append(_link(f"{s}/metadata", "metadata"))
    entries = _entries(base, entries_events, embed, stream, cache)
    body = {"title": f"Event stream '{stream}'", "id": self_url,
            "updated": iso_time(events[0].created) if events else EMPTY_TIME,
            "streamId": stream, "author": AUTHOR, "headOfStream": head_of_stream}
    if not forward:
        body["selfUrl"] = self_url
    if head:
        body["eTag"] = None  # filled by the caller, which knows the media type
    body["links"] = links
    return Page(body, None if complete else last, entries)


def all_page(base: str, events: list[RecordedEvent], start: int | None, count: int,
             forward: bool, next_position: int, is_end: bool, commit: int,
             embed: str, cache: EntryCache | None = None) -> Page:
    """A page of ``$all``. ``start`` is the requested position (``None`` for ``head``),
    ``next_position`` where the read would continue, ``commit`` the readable end."""
    s = f"{base}/streams/%24all"
    links = [_link(s, "self"), _link(f"{s}/head/backward/{count}", "first")]
    if forward:
        if start:
            links.append(_link(f"{s}/{ZERO_POSITION}/forward/{count}", "last"))
            links.append(_link(f"{s}/{position_token(start)}/backward/{count}", "next"))
        if events or not is_end:
            links.append(_link(f"{s}/{position_token(next_position)}/forward/{count}",
                               "previous"))
        shown = events[::-1]
        complete = len(events) == count
    else:
        if not is_end:
            links.append(_link(f"{s}/{ZERO_POSITION}/forward/{count}", "last"))
            links.append(_link(f"{s}/{position_token(next_position)}/backward/{count}", "next"))
        newest = events[0].position if events else (commit if start is None else start - 1)
        links.append(_link(f"{s}/{position_token(newest + 1)}/forward/{count}", "previous"))
        shown = events
        complete = start is not None
    links.append(_link(f"{s}/metadata", "metadata"))
    body = {"title": "All events", "id": s,
            "updated": iso_time(events[0].created) if events else EMPTY_TIME,
            "author": AUTHOR, "headOfStream": False, "links": links}
    return Page(body, None if complete else commit,
                _entries(base, shown, embed, ALL_STREAM, cache))
