"""The HTTP API on one node, end to end through real sockets: writes, feeds, $all, deletes,
metadata, caching, long polls, forwarded-host links, node information."""

from __future__ import annotations

import json
import threading
import time
import uuid

from tests.http.conftest import ATOM, ev


def entries(response) -> list[int]:
    return [e["eventNumber"] if "eventNumber" in e else int(e["title"].split("@")[0])
            for e in response.json()["entries"]]


def links(response) -> dict[str, str]:
    return {link["relation"]: link["uri"] for link in response.json()["links"]}


def test_batch_append_is_201_with_location_and_reads_back_as_a_feed(http_node):
    h = http_node
    r = h.post_events("orders-1", [ev("A"), ev("B"), ev("C", data="plain text")],
                      **{"ES-ExpectedVersion": "-1"})
    assert r.status_code == 201 and r.headers["Location"] == h.url("/streams/orders-1/0")
    feed = h.get("/streams/orders-1?embed=body")
    assert feed.status_code == 200 and feed.headers["Content-Type"].startswith(ATOM)
    body = feed.json()
    assert body["headOfStream"] is True and body["streamId"] == "orders-1"
    assert entries(feed) == [2, 1, 0]
    first = body["entries"][2]
    assert first["eventType"] == "A" and json.loads(first["data"]) == {"n": 1}
    assert body["entries"][0]["isJson"] is False and "data" not in body["entries"][0]
    assert set(links(feed)) == {"self", "first", "previous", "metadata"}
    assert feed.headers["ETag"].startswith('"2;') and "no-cache" in feed.headers["Cache-Control"]
    assert body["eTag"] == feed.headers["ETag"].strip('"')
    again = h.get("/streams/orders-1?embed=body",
                  headers={"If-None-Match": feed.headers["ETag"]})
    assert again.status_code == 304


def test_single_event_without_id_redirects_to_an_idempotent_uri(http_node):
    h = http_node
    headers = {"Content-Type": "application/json", "ES-EventType": "Single"}
    r = h.session.post(h.url("/streams/single"), data=b'{"a": 1}', headers=headers,
                       allow_redirects=False)
    assert r.status_code == 307 and "/streams/single/incoming/" in r.headers["Location"]
    for _ in range(3):  # retries of the same URI write once
        again = h.session.post(r.headers["Location"], data=b'{"a": 1}', headers=headers)
        assert again.status_code == 201 and again.headers["Location"].endswith("/single/0")
    assert entries(h.get("/streams/single")) == [0]
    one = h.get("/streams/single/0", accept="application/json")
    assert one.json() == {"a": 1} and one.headers["Cache-Control"] == "max-age=31536000, public"
    event = h.get("/streams/single/head", accept="application/vnd.eventstore.event+json")
    assert event.json()["eventType"] == "Single" and "ETag" in event.headers


def test_retrying_a_post_with_the_same_event_ids_never_writes_twice(http_node):
    h = http_node
    batch = [ev(), ev()]
    for _ in range(3):
        assert h.post_events("idem", batch).status_code == 201
    assert entries(h.get("/streams/idem")) == [1, 0]
    eid = str(uuid.uuid4())
    for _ in range(2):
        r = h.session.post(h.url("/streams/idem"), data=b"{}", headers={
            "Content-Type": "application/json", "Kurrent-EventType": "K", "ES-EventId": eid})
        assert r.status_code == 201 and r.headers["Location"].endswith("/idem/2")


def test_expected_version_conflicts_carry_the_current_version(http_node):
    h = http_node
    assert h.post_events("ev", [ev()], **{"ES-ExpectedVersion": "-4"}).status_code == 400
    assert h.post_events("ev", [ev()], **{"ES-ExpectedVersion": "-1"}).status_code == 201
    r = h.post_events("ev", [ev()], **{"ES-ExpectedVersion": "5"})
    assert r.status_code == 400 and r.reason == "Wrong expected EventNumber"
    assert r.headers["ES-CurrentVersion"] == "0" == r.headers["Kurrent-CurrentVersion"]
    assert r.headers["ESnode-Error"] == "wrong_expected_version"
    assert h.post_events("ev", [ev()], **{"Kurrent-ExpectedVersion": "0"}).status_code == 201
    assert h.post_events("ev", [ev()], **{"ES-ExpectedVersion": "-4"}).status_code == 201


def test_soft_and_hard_delete(http_node):
    h = http_node
    h.post_events("soft", [ev(), ev()])
    r = h.session.delete(h.url("/streams/soft"))
    assert r.status_code == 204
    assert h.get("/streams/soft").status_code == 404
    assert h.post_events("soft", [ev()]).headers["Location"].endswith("/soft/2")
    assert entries(h.get("/streams/soft")) == [2]
    h.post_events("hard", [ev()])
    r = h.session.delete(h.url("/streams/hard"), headers={"ES-HardDelete": "true"})
    assert r.status_code == 204
    gone = h.get("/streams/hard")
    assert gone.status_code == 410 and gone.reason == "Deleted"
    post = h.post_events("hard", [ev()])
    assert post.status_code == 410 and post.reason == "Stream deleted"
    assert h.session.delete(h.url("/streams/x"), headers={"ES-HardDelete": "maybe"}
                            ).status_code == 400


def test_stream_metadata_write_and_read(http_node):
    h = http_node
    h.post_events("meta", [ev(), ev(), ev()])
    r = h.session.post(h.url("/streams/meta/metadata"), data=b'{"$maxCount": 2, "owner": "me"}',
                       headers={"Content-Type": "application/json",
                                "ES-EventId": str(uuid.uuid4())})
    assert r.status_code == 201 and r.headers["Location"].endswith("/streams/%24%24meta/0")
    got = h.get("/streams/meta/metadata", accept="application/json")
    assert got.json() == {"$maxCount": 2, "owner": "me"}
    assert entries(h.get("/streams/meta")) == [2, 1]
    page = h.get("/streams/meta/metadata/0/forward/10")
    assert page.status_code == 200 and page.json()["entries"][0]["summary"] == "$metadata"
    bad = h.session.post(h.url("/streams/meta/metadata"), data=b'[1]',
                         headers={"Content-Type": "application/json"})
    assert bad.status_code == 400


def test_paging_forward_and_backward_links(http_node):
    h = http_node
    h.post_events("pages", [ev() for _ in range(25)])
    head = h.get("/streams/pages")
    assert entries(head) == list(range(24, 4, -1))
    nxt = links(head)["next"]
    assert nxt.endswith("/streams/pages/4/backward/20")
    older = h.session.get(nxt, headers={"Accept": ATOM})
    assert entries(older) == [4, 3, 2, 1, 0] and "next" not in links(older)
    fwd = h.get("/streams/pages/0/forward/10")
    assert entries(fwd) == list(range(9, -1, -1))
    assert fwd.headers["Cache-Control"] == "max-age=31536000, public"
    assert links(fwd)["previous"].endswith("/streams/pages/10/forward/10")
    assert fwd.json()["headOfStream"] is False
    tail = h.get("/streams/pages/20/forward/10")
    assert entries(tail) == [24, 23, 22, 21, 20] and tail.json()["headOfStream"] is True
    assert "ETag" in tail.headers
    past = h.get("/streams/pages/30/forward/10")
    assert past.status_code == 200 and past.json()["entries"] == []
    assert "previous" not in links(past)
    assert h.get("/streams/pages/3/2").status_code == 200
    assert entries(h.get("/streams/pages/3/backward/2")) == [3, 2]


def test_embed_levels(http_node):
    h = http_node
    h.post_events("emb", [ev(data={"x": 1})])
    plain = h.get("/streams/emb").json()["entries"][0]
    assert "eventId" not in plain and "content" not in plain
    content = h.get("/streams/emb?embed=content").json()["entries"][0]
    assert content["content"]["data"] == {"x": 1}
    rich = h.get("/streams/emb?embed=RICH").json()["entries"][0]
    assert rich["isJson"] is True and "data" not in rich
    assert h.get("/streams/emb?embed=nonsense").json()["entries"][0] == plain


def test_all_feed_with_position_tokens(http_node):
    h = http_node
    h.post_events("all-a", [ev(), ev()])
    h.post_events("all-b", [ev()])
    head = h.get("/streams/$all")
    body = head.json()
    assert body["title"] == "All events" and body["id"].endswith("/streams/%24all")
    titles = [e["title"] for e in body["entries"]]
    assert titles[:3] == ["0@all-b", "1@all-a", "0@all-a"]
    encoded = h.get("/streams/%24all/head/backward/2")
    assert len(encoded.json()["entries"]) == 2
    nxt = links(encoded)["next"]
    older = h.session.get(nxt, headers={"Accept": ATOM})
    assert older.status_code == 200 and older.json()["entries"][0]["title"] == "0@all-a"
    forward = h.get("/streams/$all/" + "0" * 32 + "/forward/1000?embed=body")
    assert [e["eventType"] for e in forward.json()["entries"]][:1] == ["Tested"]
    assert h.get("/streams/$all/nothex/forward/10").status_code == 400


def test_links_follow_forwarded_headers(http_node):
    h = http_node
    h.post_events("fwd", [ev()])
    r = h.get("/streams/fwd", headers={"X-Forwarded-Host": "balancer.example:8080, other",
                                       "X-Forwarded-Proto": "https",
                                       "X-Forwarded-Prefix": "/es"})
    assert r.json()["id"] == "https://balancer.example:8080/es/streams/fwd"
    r = h.get("/streams/fwd", headers={"X-Forwarded-Port": "9999"})
    assert r.json()["id"] == "http://127.0.0.1:9999/streams/fwd"
    post = h.post_events("fwd", [ev()], **{"X-Forwarded-Host": "lb:80"})
    assert post.headers["Location"] == "http://lb:80/streams/fwd/1"


def test_long_poll_wakes_on_a_new_event(http_node):
    h = http_node
    h.post_events("live", [ev()])
    result = {}

    def poll():
        started = time.monotonic()
        result["r"] = h.get("/streams/live/1/forward/20", headers={"ES-LongPoll": "10"})
        result["took"] = time.monotonic() - started

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.3)  # let the poll park (its result must not depend on it: see below)
    h.post_events("live", [ev("Late")])
    t.join(15)
    assert result["r"].status_code == 200 and result["took"] < 5
    assert [e["summary"] for e in result["r"].json()["entries"]] == ["Late"]
    started = time.monotonic()
    timed_out = h.get("/streams/live/9/forward/20", headers={"ES-LongPoll": "1"})
    assert timed_out.status_code == 200 and timed_out.json()["entries"] == []
    assert 0.9 < time.monotonic() - started < 5
    assert h.get("/streams/live/0/forward/1", headers={"ES-LongPoll": "x"}).status_code == 400


def test_long_poll_on_a_stream_that_does_not_exist_yet_and_on_all(http_node):
    h = http_node
    out = {}
    token = "0" * 15 + "0" * 17  # filled below
    tip = h.get("/streams/$all").json()["links"]
    prev = next(link["uri"] for link in tip if link["relation"] == "previous")
    token = prev.split("/")[-3]

    def poll(name, path):
        out[name] = h.get(path, headers={"ES-LongPoll": "10"})

    threads = [threading.Thread(target=poll, args=("new", "/streams/newborn/0/forward/5")),
               threading.Thread(target=poll, args=("all", f"/streams/$all/{token}/forward/5"))]
    for t in threads:
        t.start()
    time.sleep(0.3)
    h.post_events("newborn", [ev("Born")])
    for t in threads:
        t.join(15)
    assert [e["summary"] for e in out["new"].json()["entries"]] == ["Born"]
    assert [e["summary"] for e in out["all"].json()["entries"]] == ["Born"]


def test_node_information_endpoints(http_node):
    h = http_node
    assert h.get("/ping", accept="*/*").json() == {"text": "Ping request successfully handled"}
    assert h.get("/info", accept="*/*").json()["state"] == "leader"
    assert h.session.get(h.url("/health/live")).status_code == 204
    assert h.session.get(h.url("/health/live?liveCode=200")).status_code == 200
    gossip = h.get("/gossip", accept="*/*").json()
    member = gossip["members"][0]
    assert member["state"] == "Leader" and member["isAlive"] is True
    assert member["externalHttpPort"] == int(h.base.rsplit(":", 1)[1])
    spec = h.get("/openapi.json", accept="*/*").json()
    assert spec["openapi"].startswith("3.")
    options = h.session.options(h.url("/streams/x"))
    assert options.status_code == 200 and options.headers["Access-Control-Allow-Origin"] == "*"


def test_trailing_slash_redirects(http_node):
    h = http_node
    r = h.session.get(h.url("/streams/abc/"), allow_redirects=False)
    assert r.status_code == 307 and r.headers["Location"] == h.url("/streams/abc")


def test_stopping_the_node_ends_parked_long_polls_promptly():
    from tests.http.conftest import start_http_node

    h = start_http_node()
    result = {}

    def poll():
        try:
            result["status"] = h.get("/streams/parked/0/forward/5",
                                     headers={"ES-LongPoll": "60"}).status_code
        except Exception as exc:  # the connection closed: also a visible end
            result["status"] = type(exc).__name__

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.3)  # let it park
    started = time.monotonic()
    h.node.stop()
    t.join(20)
    took = time.monotonic() - started
    print(f"stop took {took:.2f}s, poll ended with {result['status']}")
    assert not t.is_alive() and took < 10
    assert result["status"] in (503, 404, "ConnectionError")
    h.session.close()
