"""The routes of esnode's HTTP API, Event Store compatible (docs/http.md).

Each handler turns an HTTP request into the typed request the ZeroMQ gateway also handles
(``core.messages``: the same validation), awaits the same reply through ``HttpFace.call``,
and maps the shared error vocabulary (``EsError`` codes, docs/protocol.md) to Event Store's
statuses and reason phrases in one table (``ERROR_STATUS``). Writes on a follower are
forwarded to the leader by the gateway, as for ZeroMQ clients; ``ES-RequireLeader`` turns that
into a 307 to the leader's HTTP address.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from dataclasses import dataclass

import orjson
from aiohttp import web

from esnode.actors.replies import unwrap
from esnode.actors.status import StatusBoard
from esnode.core import messages as m
from esnode.core.config import NodeSection, Topology
from esnode.core.states import VNodeState
from esnode.core.types import (
    ALL_STREAM,
    ANY,
    METADATA_PREFIX,
    METADATA_TYPE,
    EsError,
    EventData,
    NotAuthenticated,
    StorageLimits,
    StreamNotFound,
    metadata_stream_of,
)
from esnode.core.users import LoginThrottled
from esnode.httpapi import atom, dashboard
from esnode.httpapi.face import PRINCIPAL, HttpFace
from esnode.httpapi.openapi import openapi_document

ES_VERSION = "esnode-0.1.0"

REQUEST_TIMEOUT_S = 10.0
"""Event Store's ``ESConsts.HttpTimeout``: a request not answered by then gets 408 (reads)
or 500 ``Write timeout`` with outcome unknown (writes)."""

BODY_TIMEOUT_S = 10.0
"""A client that does not finish sending its body within this gets 408."""

MAX_LONG_POLL_S = 300
"""Longest ``ES-LongPoll`` accepted."""

ERROR_STATUS: dict[str, tuple[int, str]] = {
    "wrong_expected_version": (400, "Wrong expected EventNumber"),
    "stream_deleted": (410, "Stream deleted"),
    "stream_not_found": (404, "Not Found"),
    "idempotency_conflict": (400, "Idempotency conflict"),
    "bad_request": (400, "Bad Request"),
    "too_large": (413, "Too large events received"),
    "storage_full": (507, "Insufficient Storage"),
    "not_leader": (503, "Not leader and no leader known"),
    "not_ready": (503, "Server Is Not Ready"),
    "no_quorum": (503, "No quorum"),
    "outcome_unknown": (500, "Write timeout"),
    "unavailable": (503, "Unavailable"),
    "not_authenticated": (401, "Unauthorized"),
    "access_denied": (403, "Access denied"),
}
"""The error vocabulary shared with the ZeroMQ face, as HTTP statuses (Event Store's reason
phrases where it has one). Every error response also says its code in ``ESnode-Error`` and
its message in a text body."""

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": (
        "Content-Type, X-Requested-With, X-Forwarded-Host, X-Forwarded-Prefix, X-PINGOTHER, "
        "Authorization, ES-LongPoll, ES-ExpectedVersion, ES-EventId, ES-EventType, "
        "ES-RequireMaster, ES-RequireLeader, ES-HardDelete, ES-ResolveLinkTos, "
        "Kurrent-LongPoll, Kurrent-ExpectedVersion, Kurrent-EventId, Kurrent-EventType, "
        "Kurrent-RequireLeader, Kurrent-HardDelete, Kurrent-ResolveLinkTos"),
    "Access-Control-Expose-Headers": (
        "Location, ES-Position, ES-CurrentVersion, Kurrent-Position, Kurrent-CurrentVersion"),
}

EVENTS_TYPES = (atom.EVENTS_JSON, atom.KURRENT_EVENTS_JSON, atom.EVENT_JSON,
                atom.KURRENT_EVENT_JSON)
"""Request bodies holding an array of events (Event Store accepts the singular name too)."""
SINGLE_TYPES = (atom.JSON, atom.OCTET)
"""Request bodies holding one event's data."""

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$")
_ZERO_UUID = uuid.UUID(int=0)


class HttpError(Exception):
    """A request refused before it reached the node (bad header, body, route argument)."""

    def __init__(self, status: int, reason: str, message: str = "", code: str = "bad_request"):
        super().__init__(message or reason)
        self.status, self.reason, self.code = status, reason, code


def _bad(reason: str, message: str = "") -> HttpError:
    return HttpError(400, reason, message or reason)


# --- headers ----------------------------------------------------------------------------------
def es_header(request: web.Request, name: str) -> str | None:
    """``Kurrent-<name>`` first, then ``ES-<name>`` (KurrentDB v25 reads both)."""
    headers = request.headers
    value = headers.get("Kurrent-" + name)
    return value if value is not None else headers.get("ES-" + name)


def _bool_header(request: web.Request, names: tuple[str, ...], default: bool = False) -> bool:
    for name in names:
        value = es_header(request, name)
        if value is not None:
            lowered = value.strip().lower()
            if lowered not in ("true", "false"):
                raise _bad(f"ES-{name} header in wrong format.")
            return lowered == "true"
    return default


def require_leader(request: web.Request) -> bool:
    return _bool_header(request, ("RequireLeader", "RequireMaster"))


def expected_version(request: web.Request) -> int:
    value = es_header(request, "ExpectedVersion")
    if value is None:
        return ANY
    try:
        expected = int(value.strip())
    except ValueError:
        raise _bad("ES-ExpectedVersion header in wrong format.") from None
    if not (expected >= -1 or expected in (ANY, -4)) or expected >= 1 << 63:
        raise _bad("ES-ExpectedVersion header in wrong format.")
    return expected


def long_poll(request: web.Request) -> int | None:
    value = es_header(request, "LongPoll")
    if value is None:
        return None
    try:
        seconds = int(value.strip())
    except ValueError:
        seconds = 0
    if not 0 < seconds <= MAX_LONG_POLL_S:
        raise _bad("ES-LongPoll header in wrong format.",
                   f"ES-LongPoll must be whole seconds between 1 and {MAX_LONG_POLL_S}")
    return seconds


def event_id(value: str, what: str = "ES-EventId header in wrong format.") -> str:
    try:
        parsed = uuid.UUID(value.strip())
    except (ValueError, AttributeError, TypeError):
        raise _bad(what) from None
    if parsed == _ZERO_UUID:
        raise _bad(what)
    return str(parsed)


def event_number(value: str) -> int:
    if value.isdigit() and len(value) < 19:
        return int(value)
    raise _bad(f"'{value[:40]}' is not valid event number")


def page_count(value: str) -> int:
    if value.isdigit() and len(value) < 6 and 1 <= int(value) <= m.MAX_READ_COUNT:
        return int(value)
    raise _bad(f"'{value[:40]}' is not valid count. Should be positive integer",
               f"count must be an integer between 1 and {m.MAX_READ_COUNT}")


def base_url(request: web.Request) -> str:
    """Scheme, host, port and prefix of the links, honouring ``X-Forwarded-Port``,
    ``-Proto``, ``-Host`` (first value, may carry a port) and ``-Prefix`` in Event Store's
    order, so feeds read through a load balancer point back at the balancer. Values that do
    not look like a host, port or scheme are ignored."""
    headers = request.headers
    scheme = request.scheme
    host, port = _split_host(request.host) or ("localhost", "")
    forwarded_port = _first(headers.get("X-Forwarded-Port"))
    if forwarded_port and forwarded_port.isdigit() and len(forwarded_port) <= 5:
        port = forwarded_port
    forwarded_proto = _first(headers.get("X-Forwarded-Proto"))
    if forwarded_proto and forwarded_proto.lower() in ("http", "https"):
        scheme = forwarded_proto.lower()
    forwarded_host = _split_host(_first(headers.get("X-Forwarded-Host")))
    if forwarded_host is not None:
        host, port = forwarded_host[0], forwarded_host[1] or port
    prefix = _first(headers.get("X-Forwarded-Prefix")) or ""
    prefix = "/" + "/".join(atom.quote(p, safe="-._~") for p in prefix.split("/") if p)
    return f"{scheme}://{host}{':' + port if port else ''}{prefix.rstrip('/')}"


def _media(request: web.Request) -> str:
    """The body's media type; none given is none (aiohttp would say octet-stream)."""
    return request.content_type if request.headers.get("Content-Type") else ""


def _first(value: str | None) -> str | None:
    return value.split(",", 1)[0].strip() if value else None


def _split_host(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    match = _HOST.match(value)
    return (match.group(1), match.group(2) or "") if match else None


# --- responses --------------------------------------------------------------------------------
def error_response(status: int, reason: str, message: str, code: str,
                   headers: dict | None = None) -> web.Response:
    all_headers = {"ESnode-Error": code}
    if headers:
        all_headers.update(headers)
    return web.Response(status=status, reason=reason, text=message + "\n", headers=all_headers)


def json_response(body: object, media: str = atom.JSON, status: int = 200,
                  headers: dict | None = None) -> web.Response:
    """``body`` serialised, or as it is when it is JSON bytes already."""
    all_headers = {"Content-Type": f"{media}; charset=utf-8"}
    if headers:
        all_headers.update(headers)
    data = body if type(body) is bytes else orjson.dumps(body)
    return web.Response(body=data, status=status, headers=all_headers)


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the HTTP face reads of its node (status board, topology, identity)."""

    board: StatusBoard
    topology: Topology
    name: str
    limits: StorageLimits


class HttpApi:
    def __init__(self, face: HttpFace, node: NodeView, request_timeout: float = REQUEST_TIMEOUT_S,
                 body_timeout: float = BODY_TIMEOUT_S) -> None:
        self.face = face
        self.node = node
        self.request_timeout = request_timeout
        self.body_timeout = body_timeout
        self.write_timeout = max(request_timeout, node.topology.timers.write_timeout_ms
                                 / 1000 * 1.5 + 1)
        self._openapi = orjson.dumps(openapi_document())
        self.entries = atom.EntryCache()

    # --- plumbing ---------------------------------------------------------------------------
    async def _call(self, request: object, timeout: float, write: bool) -> dict:
        """The reply body of one typed request; raises the typed error of an error reply."""
        try:
            reply = await self.face.call(request, timeout)
        except TimeoutError:
            if write:
                raise HttpError(500, "Write timeout", "no answer in time: the write may or may "
                                "not have been made; retry with the same event ids",
                                "outcome_unknown") from None
            raise HttpError(408, "Server was unable to handle request in time",
                            code="timeout") from None
        return unwrap(reply)

    def error_for(self, request: web.Request, exc: EsError, reading: bool = False
                  ) -> web.Response:
        code = exc.code
        status, reason = ERROR_STATUS.get(code, (500, "Internal Server Error"))
        headers = {}
        if code == "not_leader":
            target = self._leader_http()
            if target is not None:
                host, port = target.external_http_advertise
                location = f"{target.http_scheme}://{host}:{port}{request.rel_url}"
                return error_response(307, "Temporary Redirect", f"the leader is at {location}",
                                      code, {"Location": location})
        elif code == "wrong_expected_version":
            current = str(getattr(exc, "current", -1))
            headers = {"ES-CurrentVersion": current, "Kurrent-CurrentVersion": current}
        elif code == "not_authenticated":
            headers = {"WWW-Authenticate": 'Basic realm="esnode"'}
            if isinstance(exc, LoginThrottled):
                headers["Retry-After"] = str(exc.retry_in_s)
        elif code == "stream_deleted" and reading:
            reason = "Deleted"
        return error_response(status, reason, str(exc), code, headers)

    def _leader_http(self) -> NodeSection | None:
        """The leader's topology entry, when it has an HTTP API and is not this node."""
        leader = self.node.board.leader
        if not leader or leader == self.node.name:
            return None
        for n in self.node.topology.nodes:
            if n.name == leader and n.external_http_port:
                return n
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        """Event Store's error vocabulary for everything a handler raises; 503 while the node
        stops; CORS headers on every answer."""
        try:
            if not self.face.accepting:
                response = error_response(503, "Server Is Not Ready",
                                          "the node is shutting down", "not_ready")
            else:
                if self.face.users is not None:
                    PRINCIPAL.set(await self._principal(request))
                response = await handler(request)
        except HttpError as exc:
            response = error_response(exc.status, exc.reason, str(exc), exc.code)
        except EsError as exc:
            response = self.error_for(request, exc, reading=request.method in ("GET", "HEAD"))
        except web.HTTPException as exc:  # aiohttp's own 404/405/413
            exc.headers.update(CORS_HEADERS)
            raise
        response.headers.update(CORS_HEADERS)
        return response

    async def _principal(self, request: web.Request):
        """HTTP Basic: the user of ``Authorization``, or None without one (the access gate
        then answers 401). scrypt runs off the loop, behind the node's failed-login throttle
        (per address, shared with ZeroMQ); verified pairs are cached."""
        header = request.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, encoded = header.partition(" ")
        try:
            name, sep, password = base64.b64decode(encoded.strip(), validate=True).decode(
                ).partition(":")
        except (ValueError, UnicodeDecodeError):
            sep = ""
        if scheme.lower() != "basic" or not sep:
            raise NotAuthenticated("not authenticated: the Authorization header must be "
                                   "Basic base64(user:password)")
        users = self.face.users
        return await asyncio.get_running_loop().run_in_executor(
            None, users.throttle.authenticate, users.authenticate, request.remote or
            "an unknown address", name, password)

    async def _body(self, request: web.Request) -> bytes:
        try:
            return await asyncio.wait_for(request.read(), self.body_timeout)
        except TimeoutError:
            raise HttpError(408, "Request Timeout", f"the body was not received within "
                            f"{self.body_timeout:g}s", "timeout") from None
        except web.HTTPRequestEntityTooLarge:
            raise HttpError(413, "Too large events received",
                            f"the body is over the limit of {request.app._client_max_size} "
                            "bytes", "too_large") from None

    # --- writes -----------------------------------------------------------------------------
    async def post_stream(self, request: web.Request) -> web.Response:
        stream = request.match_info["stream"]
        return await self._post(request, stream, None)

    async def post_incoming(self, request: web.Request) -> web.Response:
        stream = request.match_info["stream"]
        eid = event_id(request.match_info["guid"], "the event id in the URL is not a UUID")
        return await self._post(request, stream, eid)

    async def _post(self, request: web.Request, stream: str, incoming_id: str | None
                    ) -> web.Response:
        media = _media(request)
        expected = expected_version(request)
        leader = require_leader(request)
        if incoming_id is None and media in EVENTS_TYPES:
            events = parse_events(await self._body(request))
        elif media in SINGLE_TYPES:
            event_type = es_header(request, "EventType")
            if not event_type:
                raise _bad("Must include an event type with the request either in body or as "
                           "ES-EventType header.")
            header_id = es_header(request, "EventId")
            if incoming_id is None and header_id is None:
                location = (f"{base_url(request)}/streams/{atom.escape(stream)}/incoming/"
                            f"{uuid.uuid4()}")
                return web.Response(status=307, reason="Temporary Redirect",
                                    text="Forwarding to idempotent URI",
                                    headers={"Location": location})
            eid = incoming_id or event_id(header_id)
            data = await self._body(request)
            is_json = media == atom.JSON
            if is_json:
                try:
                    orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise _bad("Write request body invalid.",
                               "the body is not valid JSON") from None
            events = (EventData(eid, event_type, data, b"", is_json),)
        else:
            raise HttpError(415, "Unsupported Media Type", "Invalid or missing Content-Type",
                            "bad_request")
        return await self._append(request, stream, expected, events, leader)

    async def _append(self, request: web.Request, stream: str, expected: int,
                      events: tuple[EventData, ...], leader: bool) -> web.Response:
        body = await self._call(m.Append(stream, expected, events, leader),
                                self.write_timeout, write=True)
        location = f"{base_url(request)}/streams/{atom.escape(stream)}/{body['first_version']}"
        return web.Response(status=201, reason="Created", headers={
            "Location": location, "ESnode-Position": str(body["position"])})

    async def post_metadata(self, request: web.Request) -> web.Response:
        stream = request.match_info["stream"]
        if stream.startswith(METADATA_PREFIX) or stream == ALL_STREAM:
            raise _bad("Bad Request", "metadata of a metadata stream or of $all cannot be set")
        expected = expected_version(request)
        leader = require_leader(request)
        event_type = es_header(request, "EventType")
        if event_type is not None and event_type != METADATA_TYPE:
            raise _bad("Bad Request. You should not include an event type for metadata.")
        media = _media(request)
        if media in EVENTS_TYPES:
            events = parse_events(await self._body(request))
            if len(events) != 1:
                raise _bad("Write request body invalid.", "write exactly one metadata event")
            eid, data = events[0].event_id, events[0].data
        elif media == atom.JSON:
            header_id = es_header(request, "EventId")
            eid = event_id(header_id) if header_id is not None else str(uuid.uuid4())
            data = await self._body(request)
        else:
            raise HttpError(415, "Unsupported Media Type", "Invalid or missing Content-Type")
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _bad("Write request body invalid.", "stream metadata must be a JSON object")
        event = EventData(eid, METADATA_TYPE, orjson.dumps(parsed), b"", True)
        return await self._append(request, metadata_stream_of(stream), expected, (event,),
                                  leader)

    async def delete_stream(self, request: web.Request) -> web.Response:
        stream = request.match_info["stream"]
        tombstone = _bool_header(request, ("HardDelete",))
        await self._call(m.Delete(stream, expected_version(request), tombstone,
                                  require_leader(request)), self.write_timeout, write=True)
        return web.Response(status=204, reason="Stream deleted")

    # --- reads ------------------------------------------------------------------------------
    async def get_stream(self, request: web.Request) -> web.Response:
        stream = request.match_info["stream"]
        if stream == ALL_STREAM:
            return await self._read_all(request, None, atom.FEED_PAGE_SIZE, False)
        return await self._read_stream(request, stream, -1, atom.FEED_PAGE_SIZE, False)

    async def get_page(self, request: web.Request) -> web.Response:
        """``/{n}/{c}``, ``/{n}/backward/{c}``, ``/{n}/forward/{c}`` of a stream or ``$all``."""
        return await self._page(request, request.match_info["stream"])

    async def get_meta_page(self, request: web.Request) -> web.Response:
        """The same pages of a stream's metastream (``/streams/{s}/metadata/...``)."""
        return await self._page(request, _metastream_in(request))

    async def get_meta_event(self, request: web.Request) -> web.Response:
        return await self._event(request, _metastream_in(request))

    async def _page(self, request: web.Request, stream: str) -> web.Response:
        info = request.match_info
        forward = info.get("direction") == "forward"
        count = page_count(info["count"])
        start = info["event"]
        if stream == ALL_STREAM:
            if start == "head":
                if forward:
                    raise _bad("Invalid position argument: head", "head reads go backward")
                return await self._read_all(request, None, count, False)
            try:
                position = atom.parse_position(start)
            except ValueError:
                raise _bad(f"Invalid position argument: {start[:40]}") from None
            return await self._read_all(request, position, count, forward)
        if start == "head":
            if forward:
                raise _bad("'head' is not valid event number", "head reads go backward")
            return await self._read_stream(request, stream, -1, count, False)
        return await self._read_stream(request, stream, event_number(start), count, forward)

    async def _read_stream(self, request: web.Request, stream: str, start: int, count: int,
                           forward: bool) -> web.Response:
        media = self._feed_media(request)
        embed = atom.embed_level(request.query.get("embed"))
        poll = long_poll(request) if forward else None
        leader = require_leader(request)
        head = start < 0
        read = m.ReadStream(stream, start, count, backwards=not forward, requires_leader=leader)
        try:
            body = await self._call(read, self.request_timeout, write=False)
        except StreamNotFound:
            if poll is None:
                raise
            body = None
        if poll is not None and (body is None or not body["events"]):
            last = body["last_version"] if body is not None else -1
            await self._wait_for_events(stream, last, poll)
            body = await self._call(read, self.request_timeout, write=False)
        last = body["last_version"]
        page = atom.stream_page(base_url(request), stream, body["events"], last,
                                last if head else start, count, forward, head, embed,
                                self.entries)
        return self._feed_response(request, page, media)

    async def _read_all(self, request: web.Request, start: int | None, count: int,
                        forward: bool) -> web.Response:
        media = self._feed_media(request)
        embed = atom.embed_level(request.query.get("embed"))
        poll = long_poll(request) if forward else None
        leader = require_leader(request)
        read = m.ReadAll(-1 if start is None else start, count, backwards=not forward,
                         requires_leader=leader)
        body = await self._call(read, self.request_timeout, write=False)
        if poll is not None and not body["events"]:
            await self._wait_for_events(ALL_STREAM, start - 1 if start else None, poll)
            body = await self._call(read, self.request_timeout, write=False)
        commit = self.node.board.readable_position
        page = atom.all_page(base_url(request), body["events"], start, count, forward,
                             body["next_position"], body["is_end"], commit, embed,
                             self.entries)
        return self._feed_response(request, page, media)

    async def _wait_for_events(self, stream: str, after: int | None, seconds: int) -> None:
        """Long poll: park until an event after ``after`` is committed (pushed by the
        subscriptions actor, the same machinery as catch-up subscriptions) or time runs out."""
        woken = asyncio.Event()

        def on_message(message: object) -> None:
            if type(message) in (m.EventsPushed, m.SubscriptionDropped, m.ErrorReply):
                woken.set()

        start = after if after is not None and after >= 0 else m.FROM_START
        subscription = self.face.subscribe(m.Subscribe(stream, start, 1), on_message)
        try:
            await asyncio.wait_for(woken.wait(), seconds)
        except TimeoutError:
            pass
        finally:
            self.face.unsubscribe(subscription)

    def _feed_media(self, request: web.Request) -> str:
        media = atom.negotiate(request.headers.get("Accept"), atom.FEED_TYPES,
                               request.query.get("format"))
        if media is None:
            raise HttpError(406, "Not Acceptable", "Requested URI is not available in "
                            "requested format; feeds are served as "
                            + ", ".join(atom.FEED_TYPES), "not_acceptable")
        return media

    def _feed_response(self, request: web.Request, page: atom.Page, media: str
                       ) -> web.Response:
        headers = {"Vary": "Accept"}
        if page.version is None:
            headers["Cache-Control"] = atom.CACHE_FOREVER
        else:
            tag = atom.etag(page.version, media)
            if request.headers.get("If-None-Match") == tag:
                return web.Response(status=304, reason="Not Modified", headers={"ETag": tag})
            headers["ETag"] = tag
            headers["Cache-Control"] = atom.NO_CACHE
            if "eTag" in page.body:
                page.body["eTag"] = tag.strip('"')
        return json_response(page.render(), media, headers=headers)

    async def get_event(self, request: web.Request) -> web.Response:
        return await self._event(request, request.match_info["stream"])

    async def _event(self, request: web.Request, stream: str) -> web.Response:
        if stream == ALL_STREAM:
            raise _bad("'$all' has no event numbers; read it with a position token")
        start = request.match_info["event"]
        head = start == "head"
        number = -1 if head else event_number(start)
        media = atom.negotiate(request.headers.get("Accept"), atom.EVENT_TYPES,
                               request.query.get("format"))
        if media is None:
            raise HttpError(406, "Not Acceptable", "Requested URI is not available in "
                            "requested format", "not_acceptable")
        read = m.ReadStream(stream, number, 1, backwards=head,
                            requires_leader=require_leader(request))
        body = await self._call(read, self.request_timeout, write=False)
        events = body["events"]
        if not events or (not head and events[0].version != number):
            raise HttpError(404, "Not Found", f"event {start} of stream {stream!r} not found",
                            "stream_not_found")
        event = events[0]
        headers = {"Vary": "Accept"}
        if head:
            tag = atom.etag(body["last_version"], media)
            if request.headers.get("If-None-Match") == tag:
                return web.Response(status=304, reason="Not Modified", headers={"ETag": tag})
            headers.update({"ETag": tag, "Cache-Control": atom.NO_CACHE})
        else:
            headers["Cache-Control"] = atom.CACHE_FOREVER
        if media in (atom.ATOM_JSON, atom.KURRENT_ATOM_JSON):
            return json_response(atom.single_entry(base_url(request), event), media,
                                 headers=headers)
        if media in (atom.EVENT_JSON, atom.KURRENT_EVENT_JSON):
            return json_response(atom.event_content(event), media, headers=headers)
        if media == atom.JSON:
            data = event.data if event.is_json and event.data else orjson.dumps(
                event.data.decode("utf-8", "replace"))
            headers["Content-Type"] = f"{atom.JSON}; charset=utf-8"
            return web.Response(body=data, headers=headers)
        headers["Content-Type"] = media
        return web.Response(body=event.data, headers=headers)

    async def get_metadata(self, request: web.Request) -> web.Response:
        stream = request.match_info["stream"]
        body = await self._call(m.GetMetadata(stream, require_leader(request)),
                                self.request_timeout, write=False)
        headers = {"Vary": "Accept", "Cache-Control": atom.NO_CACHE}
        if body["version"] >= 0:
            tag = atom.etag(body["version"], atom.JSON)
            if request.headers.get("If-None-Match") == tag:
                return web.Response(status=304, reason="Not Modified", headers={"ETag": tag})
            headers["ETag"] = tag
        return json_response(body["metadata"], atom.JSON, headers=headers)

    async def trailing_slash(self, request: web.Request) -> web.Response:
        path = request.rel_url.raw_path.rstrip("/")
        query = request.rel_url.raw_query_string
        location = f"{base_url(request)}{path}{'?' + query if query else ''}"
        return web.Response(status=307, reason="Temporary Redirect", text="Moved Permanently",
                            headers={"Location": location,
                                     "Cache-Control": atom.CACHE_FOREVER})

    # --- node information -------------------------------------------------------------------
    async def ping(self, request: web.Request) -> web.Response:
        return json_response({"text": "Ping request successfully handled"})

    async def info(self, request: web.Request) -> web.Response:
        return json_response({
            "esVersion": ES_VERSION, "dbVersion": ES_VERSION,
            "state": self.node.board.state.name.lower(), "projectionsMode": "None",
            "features": {"projections": False, "userManagement": False, "atomPub": True},
            "authentication": {"type": "insecure", "properties": {}}})

    async def health_live(self, request: web.Request) -> web.Response:
        if self.node.board.state is VNodeState.Initializing:
            return error_response(503, "Service Unavailable", "the node is starting",
                                  "not_ready")
        code = request.query.get("liveCode", "204")
        status = int(code) if code.isdigit() and 200 <= int(code) < 300 else 204
        return web.Response(status=status)

    async def gossip(self, request: web.Request) -> web.Response:
        return json_response(gossip_document(self.node))

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi,
                            headers={"Content-Type": "application/json; charset=utf-8"})

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=200)


def gossip_document(node: NodeView) -> dict:
    """``GET /gossip`` in Event Store's member shape (V5 keys, and KurrentDB's
    ``httpEndPoint*``), so HTTP clients can discover the cluster and find the leader."""
    board, topology = node.board, node.topology
    now = atom.iso_time(int(time.time() * 1_000_000))
    members = list(board.members)
    if not members:
        members = [None]
    out = []
    for member in members:
        name = member.name if member is not None else node.name
        config = next((n for n in topology.nodes if n.name == name), None)
        state = VNodeState(member.state) if member is not None else board.state
        internal = config.internal_advertise if config else ("", 0)
        external = ((member.external_host, member.external_port) if member is not None
                    else config.external_advertise if config else ("", 0))
        http = (config.external_http_advertise if config else None) or ("", 0)
        writer = member.writer_position if member is not None else board.readable_position
        commit = member.commit_position if member is not None else board.readable_position
        out.append({
            "instanceId": str(uuid.uuid5(uuid.NAMESPACE_URL,
                                         f"esnode:{topology.cluster.name}:{name}")),
            "timeStamp": now, "state": state.name,
            "isAlive": member.is_alive if member is not None else True,
            "internalTcpIp": internal[0], "internalTcpPort": internal[1],
            "internalSecureTcpPort": 0,
            "externalTcpIp": external[0], "externalTcpPort": external[1],
            "externalSecureTcpPort": 0,
            "internalHttpIp": internal[0], "internalHttpPort": internal[1],
            "externalHttpIp": http[0], "externalHttpPort": http[1],
            "httpEndPointIp": http[0], "httpEndPointPort": http[1],
            "lastCommitPosition": commit, "writerCheckpoint": writer,
            "chaserCheckpoint": writer, "epochPosition": -1,
            "epochNumber": member.epoch_number if member is not None else board.term,
            "epochId": str(_ZERO_UUID),
            "nodePriority": config.priority if config else 0,
            "isReadOnlyReplica": False, "esVersion": ES_VERSION, "name": name,
        })
    me = next((n for n in topology.nodes if n.name == node.name), None)
    server = me.internal_advertise if me else ("", 0)
    return {"members": out, "serverIp": server[0], "serverPort": server[1]}


def parse_events(body: bytes) -> tuple[EventData, ...]:
    """An ``application/vnd.eventstore.events+json`` body: a non-empty array of
    ``{eventId, eventType, data, metadata}``. Data and metadata that are JSON objects or
    arrays (or strings holding one) are stored as JSON; other strings as UTF-8 text."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _bad("Write request body invalid.", f"the body is not valid JSON ({exc})") \
            from None
    if type(items) is not list or not items:
        raise _bad("Write request body invalid.", "the body must be a non-empty JSON array "
                   "of events")
    events = []
    for i, item in enumerate(items):
        if type(item) is not dict:
            raise _bad("Write request body invalid.", f"event {i} is not a JSON object")
        raw_id, event_type = item.get("eventId"), item.get("eventType")
        if type(raw_id) is not str:
            raise _bad("Write request body invalid.", f"event {i}: eventId (a UUID) missing")
        eid = event_id(raw_id, f"event {i}: eventId {raw_id[:60]!r} is not a UUID")
        if type(event_type) is not str or not event_type:
            raise _bad("Write request body invalid.",
                       f"event {i}: eventType (a non-empty string) missing")
        data, data_json = _payload(item.get("data"))
        meta, meta_json = _payload(item.get("metadata"))
        events.append(EventData(eid, event_type, data, meta, data_json or meta_json))
    return tuple(events)


def _payload(value: object) -> tuple[bytes, bool]:
    if value is None:
        return b"", False
    cls = type(value)
    if cls is dict or cls is list:
        return orjson.dumps(value), True
    if cls is str:
        text = value.lstrip()
        if text[:1] in ("{", "["):
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError:
                parsed = None
            if type(parsed) in (dict, list):
                return orjson.dumps(parsed), True
        return value.encode("utf-8", "surrogatepass"), False
    return orjson.dumps(value), False


def build_app(face: HttpFace, node: NodeView, request_timeout: float = REQUEST_TIMEOUT_S,
              body_timeout: float = BODY_TIMEOUT_S, extra_routes=None) -> web.Application:
    """The application: every route of docs/http.md, in match order (the metadata routes
    before the generic page routes they would otherwise match). ``extra_routes(app, api)``
    adds more (a dashboard, metrics)."""
    api = HttpApi(face, node, request_timeout, body_timeout)
    limit = node.limits.max_append_bytes * 2 + (1 << 20)  # JSON text of the largest append
    app = web.Application(middlewares=[api.middleware], client_max_size=limit)
    routes = [
        ("GET", "/ping", api.ping), ("GET", "/info", api.info),
        ("GET", "/gossip", api.gossip), ("GET", "/health/live", api.health_live),
        ("HEAD", "/health/live", api.health_live),
        ("GET", "/openapi.json", api.openapi),
        ("POST", "/streams/{stream}/incoming/{guid}", api.post_incoming),
        ("GET", "/streams/{stream}/metadata", api.get_metadata),
        ("POST", "/streams/{stream}/metadata", api.post_metadata),
        ("GET", "/streams/{stream}/metadata/", api.trailing_slash),
        ("GET", "/streams/{stream}/metadata/{event}", api.get_meta_event),
        ("GET", "/streams/{stream}/metadata/{event}/{count}", api.get_meta_page),
        ("GET", "/streams/{stream}/metadata/{event}/{direction:backward|forward}/{count}",
         api.get_meta_page),
        ("GET", "/streams/{stream}", api.get_stream),
        ("POST", "/streams/{stream}", api.post_stream),
        ("DELETE", "/streams/{stream}", api.delete_stream),
        ("GET", "/streams/{stream}/", api.trailing_slash),
        ("GET", "/streams/{stream}/{event}", api.get_event),
        ("GET", "/streams/{stream}/{event}/{count}", api.get_page),
        ("GET", "/streams/{stream}/{event}/{direction:backward|forward}/{count}", api.get_page),
    ]
    paths: dict[str, None] = {}
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
        paths[path] = None
    for path in paths:
        app.router.add_route("OPTIONS", path, api.options)
    dashboard.add_routes(app, base_url)
    if extra_routes is not None:
        extra_routes(app, api)
    return app


def _metastream_in(request: web.Request) -> str:
    """The metastream of the route's stream (``$all`` has none)."""
    stream = request.match_info["stream"]
    if stream == ALL_STREAM:
        raise HttpError(404, "Not Found", "$all has no metadata stream here",
                        "stream_not_found")
    return metadata_stream_of(stream)
