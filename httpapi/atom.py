"""Event Store's atom+json feeds, links and cache headers, as pure functions (no I/O).

Everything here follows /work/shared/reference/http-api.md §3-4 (Event Store V5's
``Convert.cs`` and ``Configure.cs``); docs/http.md lists where esnode differs. Kept free of the
web framework so the rendering is unit-tested directly and costs only what it must (feed
reads are the hot read path: one dict per entry, one ``orjson.dumps`` per page).
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

from esnode.core.types import ALL_STREAM, METADATA_PREFIX, RecordedEvent

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
    """One feed entry; key order as Event Store's (reference §3.2-3.3)."""
    url = f"{base}/streams/{escape(e.stream)}/{e.version}"
    out: dict = {}
    if embed in ("rich", "body"):
        out["eventId"] = e.event_id
        out["eventType"] = e.event_type
        out["eventNumber"] = e.version
        has_meta = False
        if embed == "body":
            if e.is_json:
                out["data"] = _text(e.data)
            if e.metadata:
                out["metaData"] = _text(e.metadata)
                has_meta = True
        out["streamId"] = e.stream
        out["isJson"] = e.is_json
        out["isMetaData"] = has_meta
        out["isLinkMetaData"] = False
        out["positionEventNumber"] = e.version
        out["positionStreamId"] = e.stream if position_stream == ALL_STREAM else position_stream
    out["title"] = f"{e.version}@{e.stream}"
    out["id"] = url
    out["updated"] = iso_time(e.created)
    out["author"] = AUTHOR
    out["summary"] = e.event_type
    if embed == "content" and e.is_json:
        out["content"] = event_content(e)
    out["links"] = [{"uri": url, "relation": "edit"}, {"uri": url, "relation": "alternate"}]
    return out


def single_entry(base: str, e: RecordedEvent) -> dict:
    """``GET /streams/{s}/{n}`` in atom+json: an entry with ``content``."""
    url = f"{base}/streams/{escape(e.stream)}/{e.version}"
    return {"title": f"{e.version}@{e.stream}", "id": url, "updated": iso_time(e.created),
            "author": AUTHOR, "summary": e.event_type, "content": event_content(e),
            "links": [{"uri": url, "relation": "edit"}, {"uri": url, "relation": "alternate"}]}


@dataclass(frozen=True, slots=True)
class Page:
    """A rendered feed page plus how it may be cached: ``version`` for the ETag (``None``
    when the page is complete and cacheable forever)."""

    body: dict
    version: int | None


def _link(uri: str, relation: str) -> dict:
    return {"uri": uri, "relation": relation}


def stream_page(base: str, stream: str, events: list[RecordedEvent], last: int, start: int,
                count: int, forward: bool, head: bool, embed: str) -> Page:
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
    entries = [entry(base, e, embed, stream) for e in entries_events]
    body = {"title": f"Event stream '{stream}'", "id": self_url,
            "updated": iso_time(events[0].created) if events else EMPTY_TIME,
            "streamId": stream, "author": AUTHOR, "headOfStream": head_of_stream}
    if not forward:
        body["selfUrl"] = self_url
    if head:
        body["eTag"] = None  # filled by the caller, which knows the media type
    body["links"] = links
    body["entries"] = entries
    return Page(body, None if complete else last)


def all_page(base: str, events: list[RecordedEvent], start: int | None, count: int,
             forward: bool, next_position: int, is_end: bool, commit: int,
             embed: str) -> Page:
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
            "author": AUTHOR, "headOfStream": False, "links": links,
            "entries": [entry(base, e, embed, ALL_STREAM) for e in shown]}
    return Page(body, None if complete else commit)
