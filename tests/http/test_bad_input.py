"""Bad input gets a clear 4xx and the node keeps serving: malformed bodies, unknown media
types, bad ids and headers, oversized bodies and headers, bad routes, slow clients."""

from __future__ import annotations

import socket
import time

import pytest

from esnode.actors.node import Factories
from esnode.core.types import StorageLimits
from esnode.storage import open_store
from tests.conftest import wait_for
from tests.http.conftest import EVENTS, ev, small_limits_face, start_http_node


@pytest.fixture
def strict_node():
    """Small limits and short timeouts, so the limits are cheap to hit."""
    limits = StorageLimits(max_append_bytes=64 * 1024, max_event_bytes=32 * 1024)
    factories = Factories().replace(
        store=lambda node: open_store(None, limits),
        http_face=small_limits_face(limits, body_timeout=0.5, idle_timeout=1.0,
                                    max_field_size=1024))
    h = start_http_node(factories)
    yield h
    h.session.close()
    h.node.stop()


def post(h, path, body, content_type=EVENTS, **headers):
    return h.session.post(h.url(path), data=body, headers={"Content-Type": content_type,
                                                           **headers}, allow_redirects=False)


@pytest.mark.parametrize("body", [b"", b"not json", b"{}", b"[]", b"[1]", b'[{"eventType": "x"}]',
                                  b'[{"eventId": "nope", "eventType": "x"}]',
                                  b'[{"eventId": "00000000-0000-0000-0000-000000000000", '
                                  b'"eventType": "x"}]',
                                  b'[{"eventId": "3f2504e0-4f89-11d3-9a0c-0305e82c3301"}]',
                                  b'[{"eventId": "3f2504e0-4f89-11d3-9a0c-0305e82c3301", '
                                  b'"eventType": ""}]', b"[" * 100_000, "[\"\udc80\"]"
                                  .encode("utf-8", "surrogatepass")])
def test_malformed_event_batches_are_400(strict_node, body):
    r = post(strict_node, "/streams/bad", body)
    assert r.status_code == 400 and r.headers["ESnode-Error"] == "bad_request"


def test_single_event_errors(strict_node):
    h = strict_node
    assert post(h, "/streams/s", b"{}", "application/json").status_code == 400  # no type
    r = post(h, "/streams/s", b"{}", "application/json", **{"ES-EventType": "T",
                                                              "ES-EventId": "x"})
    assert r.status_code == 400 and r.reason == "ES-EventId header in wrong format."
    r = post(h, "/streams/s", b"{oops", "application/json", **{"ES-EventType": "T",
             "ES-EventId": "3f2504e0-4f89-11d3-9a0c-0305e82c3301"})
    assert r.status_code == 400
    assert post(h, "/streams/s/incoming/not-a-uuid", b"{}", "application/json",
                **{"ES-EventType": "T"}).status_code == 400


@pytest.mark.parametrize("content_type", ["text/html", "application/xml", "", "image/png"])
def test_unknown_content_types_are_415(strict_node, content_type):
    r = post(strict_node, "/streams/s", b"[]", content_type)
    assert r.status_code == 415


@pytest.mark.parametrize("header, value", [("ES-ExpectedVersion", "abc"),
                                           ("ES-ExpectedVersion", "-3"),
                                           ("ES-ExpectedVersion", "99999999999999999999999"),
                                           ("ES-RequireLeader", "yes"),
                                           ("ES-RequireMaster", "1")])
def test_bad_headers_are_400(strict_node, header, value):
    assert post(strict_node, "/streams/s", b"[]", **{header: value}).status_code == 400


def test_bodies_over_the_append_limit_are_413(strict_node):
    h = strict_node
    big = [ev(data="x" * 40_000)]  # one event over max_event_bytes
    import json
    assert post(h, "/streams/big", json.dumps(big)).status_code == 413
    huge = b"[" + b" " * 2_000_000 + b"]"  # over the body limit itself
    assert post(h, "/streams/big", huge).status_code == 413
    assert post(h, "/streams/big", json.dumps([ev()])).status_code == 201


def test_oversized_headers_are_refused(strict_node):
    h = strict_node
    r = h.session.get(h.url("/ping"), headers={"X-Big": "y" * 5000})
    assert r.status_code in (400, 431)
    assert h.session.get(h.url("/ping")).status_code == 200


@pytest.mark.parametrize("path, status", [
    ("/streams/s/-1", 400), ("/streams/s/abc", 400), ("/streams/s/0/0", 400),
    ("/streams/s/0/forward/-5", 400), ("/streams/s/0/forward/99999999999", 400),
    ("/streams/s/0/backward/10001", 400), ("/streams/s/99999999999999999999999", 400),
    ("/streams/s/head/forward/5", 400), ("/nope", 404), ("/streams", 404),
    ("/streams/$all/0/forward/5", 400), ("/streams/" + "n" * 1200, 404),
])
def test_bad_read_routes(strict_node, path, status):
    r = strict_node.get(path)
    assert r.status_code == status, r.text


def test_wrong_verbs_are_405(strict_node):
    h = strict_node
    assert h.session.put(h.url("/streams/s")).status_code == 405
    assert h.session.delete(h.url("/ping")).status_code == 405
    assert h.session.post(h.url("/gossip")).status_code == 405


def test_writing_all_or_an_invalid_stream_name_is_400(strict_node):
    import json
    assert post(strict_node, "/streams/$all", json.dumps([ev()])).status_code == 400
    assert post(strict_node, "/streams/" + "n" * 1200, json.dumps([ev()])).status_code == 400


def test_unacceptable_accept_is_406(strict_node):
    assert strict_node.get("/streams/s", accept="text/html").status_code == 406


def _connect(h) -> socket.socket:
    host, port = h.base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_a_client_that_never_finishes_its_body_gets_408(strict_node):
    h = strict_node
    with _connect(h) as s:
        s.sendall(b"POST /streams/slow HTTP/1.1\r\nHost: x\r\nContent-Type: " + EVENTS.encode()
                  + b"\r\nContent-Length: 1000\r\n\r\n[")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408")
    assert h.session.get(h.url("/ping")).status_code == 200


def test_a_client_that_sends_headers_slowly_is_disconnected(strict_node):
    h = strict_node
    with _connect(h) as s:
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        s.settimeout(10)
        closed = b""
        try:
            closed = s.recv(4096)
        except (ConnectionResetError, TimeoutError):
            pass
        assert closed == b"" and time.monotonic() - started < 8
    assert h.session.get(h.url("/ping")).status_code == 200


def test_many_bad_requests_leave_the_node_serving(strict_node):
    h = strict_node
    for i in range(50):
        post(h, "/streams/s", b"garbage" * i)
    wait_for(lambda: h.session.get(h.url("/health/live")).status_code == 204, 5)
    assert h.post_events("after", [ev()]).status_code == 201
