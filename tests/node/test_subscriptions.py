"""Catch-up subscriptions that turn live without gaps or duplicates, with credit flow control."""

from __future__ import annotations

import threading

import pytest

from tests.node.rawclient import RawClient, event


@pytest.fixture
def client(node_endpoint):
    c = RawClient(node_endpoint)
    yield c
    c.close()


def collect(sub_client, corr, want, timeout=10.0, grant=True):
    """Receive pushes for subscription ``corr`` until ``want`` events arrived."""
    events, caught_up = [], 0
    while len(events) < want:
        reply = sub_client.recv(timeout)
        assert reply[0] == corr, reply
        if reply[1] == "events":
            events.extend(reply[2])
            if grant:
                sub_client.send("credit", {"subscription": corr, "n": len(reply[2])})
        elif reply[1] == "caught_up":
            caught_up += 1
        else:
            raise AssertionError(f"unexpected push {reply}")
    return events, caught_up


def test_all_subscription_turns_live_without_gap_or_duplicate(node_endpoint, client):
    for i in range(50):
        client.call("append", {"stream": f"h-{i % 5}", "events": [event()]})
    writer_done = threading.Event()

    def writer():
        w = RawClient(node_endpoint)
        try:
            for i in range(150):
                w.call("append", {"stream": f"l-{i % 5}", "events": [event()]})
        finally:
            w.close()
            writer_done.set()

    sub = RawClient(node_endpoint)
    try:
        corr = sub.send("subscribe", {"stream": "$all", "from": "start", "credit": 64})
        _, kind, body = sub.recv()
        assert kind == "ok" and body["subscription"] == corr and body["from"] == -1
        assert body["incarnation"] == client.call("ping", {})[2]["incarnation"]
        t = threading.Thread(target=writer)
        t.start()
        events, _ = collect(sub, corr, 200)
        t.join()
        positions = [e[8] for e in events]
        assert positions == sorted(set(positions)), "gap-free, ordered, no duplicates"
        streams = [e[1] for e in events]
        assert streams.count("l-0") == 30 and len([s for s in streams if s.startswith("h-")]) == 50
    finally:
        sub.close()


def test_stream_subscription_from_a_version_is_exclusive(client):
    for _ in range(5):
        client.call("append", {"stream": "one", "events": [event()]})
    corr = client.send("subscribe", {"stream": "one", "from": 2})
    assert client.recv()[1] == "ok"
    events, caught_up = collect(client, corr, 2)
    assert [e[2] for e in events] == [3, 4]
    reply = client.recv()
    assert reply[1] == "caught_up"
    client.call("append", {"stream": "one", "events": [event()]})
    events, _ = collect(client, corr, 1)
    assert [e[2] for e in events] == [5]


def test_credit_bounds_what_the_node_sends(node_endpoint, client):
    for _ in range(30):
        client.call("append", {"stream": "flow", "events": [event()]})
    sub = RawClient(node_endpoint)
    try:
        corr = sub.send("subscribe", {"stream": "flow", "from": "start", "credit": 10})
        assert sub.recv()[1] == "ok"
        events, _ = collect(sub, corr, 10, grant=False)
        assert len(events) == 10
        with pytest.raises(TimeoutError):
            sub.recv(timeout=0.3)  # no credit left: nothing more may arrive
        sub.send("credit", {"subscription": corr, "n": 100})
        events, _ = collect(sub, corr, 20, grant=False)
        assert [e[2] for e in events] == list(range(10, 30))
    finally:
        sub.close()


def test_subscribe_from_end_sees_only_new_events(client):
    client.call("append", {"stream": "late", "events": [event()]})
    corr = client.send("subscribe", {"stream": "$all", "from": "end"})
    assert client.recv()[1] == "ok"
    assert client.recv()[1] == "caught_up"
    client.call_corr = None
    c2 = client.send("append", {"stream": "late", "events": [event()]})
    seen = []
    while len(seen) < 1:
        reply = client.recv()
        if reply[0] == corr:
            seen.extend(reply[2])
        else:
            assert reply[0] == c2 and reply[1] == "ok"
    assert [e[2] for e in seen] == [1]


def test_tombstone_drops_the_stream_subscription(client):
    client.call("append", {"stream": "doomed", "events": [event()]})
    corr = client.send("subscribe", {"stream": "doomed"})
    assert client.recv()[1] == "ok"
    collect(client, corr, 1)
    assert client.recv()[1] == "caught_up"
    d = client.send("delete", {"stream": "doomed", "tombstone": True})
    kinds = {}
    for _ in range(2):
        reply = client.recv()
        kinds[reply[0]] = reply
    assert kinds[d][1] == "ok"
    assert kinds[corr][1] == "dropped" and kinds[corr][2]["code"] == "stream_deleted"


def test_unsubscribe_stops_pushes(client):
    corr = client.send("subscribe", {"stream": "quiet"})
    assert client.recv()[1] == "ok"
    assert client.recv()[1] == "caught_up"
    _, kind, _ = client.call("unsubscribe", {"subscription": corr})
    assert kind == "ok"
    client.call("append", {"stream": "quiet", "events": [event()]})
    with pytest.raises(TimeoutError):
        client.recv(timeout=0.3)
