"""The OpenAPI 3 document of the HTTP API, served at ``/openapi.json`` (docs/http.md has the
prose). Built from a few shared pieces so each header and response is described once; the
property-based fuzz test (tests/http/test_fuzz.py) drives every path and verb listed here."""

from __future__ import annotations

from esnode.httpapi import atom


def _header(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def _path(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


BOOL = {"type": "string", "enum": ["true", "false", "True", "False"]}
STREAM = _path("stream", "stream name (percent-encoded; `$all` or `%24all` for the global log "
               "where reads allow it)")
EVENT = _path("event", "event number (>= 0), or `head`; for `$all` a 32-hex-digit position")
COUNT = _path("count", "page size, 1..10000", {"type": "integer", "minimum": 1,
                                              "maximum": 10000})
GUID = _path("guid", "the event id (a UUID)", {"type": "string", "format": "uuid"})

EXPECTED = _header("ES-ExpectedVersion", "-2 any (default), -1 no stream, -4 stream exists, "
                   "N: last event number must be N (also Kurrent-ExpectedVersion)",
                   {"type": "integer", "minimum": -4})
LEADER = [_header(h, "true: this node must be the leader, else 307 to the leader's HTTP "
                  "address", BOOL)
          for h in ("ES-RequireLeader", "ES-RequireMaster", "Kurrent-RequireLeader")]
LONG_POLL = _header("ES-LongPoll", "forward reads past the end wait up to this many seconds "
                    "for a new event (also Kurrent-LongPoll)",
                    {"type": "integer", "minimum": 1, "maximum": 300})
EMBED = {"name": "embed", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["none", "content", "rich", "body", "pretty",
                                               "tryharder"]}}
FORWARDED = [_header(h, "links and Location point back at a load balancer")
             for h in ("X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port",
                       "X-Forwarded-Prefix")]


def _error(description: str) -> dict:
    return {"description": description + " (no body but a text message; the ESnode-Error "
            "header names the error code of docs/protocol.md)",
            "headers": {"ESnode-Error": {"schema": {"type": "string"}}}}


ERRORS = {
    "400": _error("bad request: malformed body or header, wrong expected version (with "
                  "ES-CurrentVersion and Kurrent-CurrentVersion)"),
    "404": _error("stream or event not found"), "406": _error("no acceptable media type"),
    "408": _error("the request or its body did not arrive in time"),
    "410": _error("stream deleted (hard)"), "413": _error("over the append size limit"),
    "415": _error("unknown or missing Content-Type"),
    "500": _error("`Write timeout`: the outcome is unknown; retry with the same event ids"),
    "503": _error("not ready, no quorum (the write was not made), or no leader known"),
    "307": {"description": "to the leader (ES-RequireLeader on a follower), or to an "
            "idempotent URI (single event without ES-EventId)",
            "headers": {"Location": {"schema": {"type": "string"}}}},
}

EVENT_ITEM = {"type": "object", "required": ["eventId", "eventType"], "properties": {
    "eventId": {"type": "string", "format": "uuid"}, "eventType": {"type": "string",
                                                                   "minLength": 1},
    "data": {}, "metadata": {}}}
WRITE_BODY = {"required": True, "content": {
    atom.EVENTS_JSON: {"schema": {"type": "array", "minItems": 1, "items": EVENT_ITEM}},
    atom.KURRENT_EVENTS_JSON: {"schema": {"type": "array", "minItems": 1,
                                          "items": EVENT_ITEM}},
    atom.JSON: {"schema": {}}, atom.OCTET: {"schema": {"type": "string",
                                                       "format": "binary"}}}}
CREATED = {"201": {"description": "written (durable on a majority)", "headers": {
    "Location": {"schema": {"type": "string"}},
    "ESnode-Position": {"schema": {"type": "integer"}}}}}
FEED = {"200": {"description": "an atom+json feed page", "content": {
    media: {"schema": {"type": "object"}} for media in atom.FEED_TYPES}},
    "304": {"description": "If-None-Match matched the ETag"}}


def _op(summary: str, parameters: list, responses: dict, body: dict | None = None) -> dict:
    op = {"summary": summary, "parameters": parameters, "responses": {**responses, **ERRORS}}
    if body is not None:
        op["requestBody"] = body
    return op


def _read(summary: str, parameters: list) -> dict:
    return {"get": _op(summary, [*parameters, EMBED, *LEADER, LONG_POLL, *FORWARDED], FEED)}


def openapi_document() -> dict:
    single = [_header("ES-EventType", "event type of a single-event body"),
              _header("ES-EventId", "event id (UUID) of a single-event body; absent: 307")]
    info = {"get": _op("node information", [], {"200": {"description": "JSON"}})}
    paths = {
        "/ping": info, "/info": info,
        "/gossip": {"get": _op("cluster members in Event Store's gossip shape", [],
                               {"200": {"description": "JSON"}})},
        "/health/live": {"get": _op("204 once the node serves", [
            {"name": "liveCode", "in": "query", "required": False,
             "schema": {"type": "integer"}}], {"204": {"description": "live"}})},
        "/openapi.json": {"get": _op("this document", [], {"200": {"description": "JSON"}})},
        "/": {"get": _op("307 to the dashboard", [], {})},
        "/dashboard": {"get": _op("307 to the dashboard", [], {})},
        "/dashboard/": {"get": _op("the web dashboard (HTML; docs/operations.md)", [], {
            "200": {"description": "HTML"}, "304": {"description": "ETag matched"}})},
        "/dashboard/{name}": {"get": _op("the dashboard's script and style sheet", [_path(
            "name", "`dashboard.js` or `dashboard.css`")], {
            "200": {"description": "JavaScript or CSS"},
            "304": {"description": "ETag matched"}})},
        "/streams/{stream}": {
            **_read("head page of a stream (or $all), 20 events, newest first", [STREAM]),
            "post": _op("append events", [STREAM, EXPECTED, *LEADER, *single, *FORWARDED],
                        CREATED, WRITE_BODY),
            "delete": _op("delete a stream (soft; hard with ES-HardDelete)", [
                STREAM, EXPECTED, *LEADER, _header("ES-HardDelete", "tombstone", BOOL)],
                {"204": {"description": "deleted"}}),
        },
        "/streams/{stream}/incoming/{guid}": {
            "post": _op("idempotent single-event append", [STREAM, GUID, EXPECTED, *LEADER,
                                                            single[0]], CREATED, WRITE_BODY)},
        "/streams/{stream}/metadata": {
            "get": _op("stream metadata", [STREAM, *LEADER], {"200": {"description": "JSON"}}),
            "post": _op("write stream metadata", [STREAM, EXPECTED, *LEADER, single[1]],
                        CREATED, {"required": True, "content": {
                            atom.JSON: {"schema": {"type": "object"}},
                            atom.EVENTS_JSON: {"schema": {"type": "array",
                                                          "items": EVENT_ITEM}}}})},
        "/streams/{stream}/{event}": {"get": _op(
            "one event (atom+json entry, event+json, its data as JSON, or raw bytes)",
            [STREAM, EVENT, *LEADER], {"200": {"description": "the event"}})},
        "/streams/{stream}/{event}/{count}": _read("page backward", [STREAM, EVENT, COUNT]),
        "/streams/{stream}/{event}/backward/{count}": _read("page backward",
                                                            [STREAM, EVENT, COUNT]),
        "/streams/{stream}/{event}/forward/{count}": _read("page forward (long poll allowed)",
                                                           [STREAM, EVENT, COUNT]),
        "/streams/{stream}/metadata/{event}/forward/{count}": _read(
            "page forward through the metadata stream", [STREAM, EVENT, COUNT]),
        "/streams/{stream}/metadata/{event}/backward/{count}": _read(
            "page backward through the metadata stream", [STREAM, EVENT, COUNT]),
    }
    return {"openapi": "3.0.3",
            "info": {"title": "esnode HTTP API (Event Store compatible)", "version": "1",
                     "description": "See docs/http.md for every endpoint, header and "
                                    "difference from Event Store."},
            "paths": paths}
