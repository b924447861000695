"""Per-connection limits and quiet refusals on a live node: a client over a limit gets a
typed error (``too_busy``, ``bad_request``), the node keeps serving everyone else, and a
flood of garbage becomes counters, not log lines."""

from __future__ import annotations

import logging

import msgpack
import pytest

from esnode.actors import subscriptions
from esnode.core.messages import Reply
from esnode.transport import zmq_transport
from tests.node.rawclient import RawClient, event
from tests.node.test_bad_input import client, node  # noqa: F401 - the live node fixtures


def test_pipelining_past_the_in_flight_bound_gets_too_busy(node, client, monkeypatch):
    monkeypatch.setattr(zmq_transport, "MAX_IN_FLIGHT", 20)
    flooder = RawClient(node.transport.external_endpoint)
    try:
        sent = [flooder.send("append", {"stream": "flood", "events": [event()]})
                for _ in range(2000)]
        replies = [flooder.recv() for _ in sent]
        kinds = {r[0]: (r[1], r[2]) for r in replies}
        busy = [c for c, (k, body) in kinds.items() if k == "error"]
        assert busy and all(kinds[c][1]["code"] == "too_busy" for c in busy)
        acked = sum(1 for k, _ in kinds.values() if k == "ok")
        _, kind, body = client.call("read_stream", {"stream": "flood", "max_count": 5000})
        assert kind == "ok" and len(body["events"]) == acked  # every ack intact, no more
        # Answered requests free their slots: the same connection is served again.
        assert flooder.call("ping")[1] == "ok"
        assert node.transport.refusals.by_reason["too_busy"] == len(busy)
    finally:
        flooder.close()


def test_a_message_of_many_frames_is_refused_without_keeping_them(client):
    client.send_raw(msgpack.packb([1, "ping", 5, {}]), *([b"x"] * 10_000))
    reply = client.recv()
    assert reply[1] == "error" and "at most 64 requests (a frame each), got more" \
        in reply[2]["message"]
    assert client.call("ping")[1] == "ok"


def answer(client: RawClient, op: str, args: dict) -> list:
    """The answer to one request, skipping events pushed to earlier subscriptions."""
    corr = client.send(op, args)
    while True:
        reply = client.recv()
        if reply[0] == corr and reply[1] in ("ok", "error"):
            return reply


def test_subscriptions_per_client_are_bounded(client, monkeypatch):
    monkeypatch.setattr(subscriptions, "MAX_SUBSCRIPTIONS_PER_CLIENT", 3)
    answers = [answer(client, "subscribe", {"stream": f"s{i}", "credit": 10})
               for i in range(4)]
    assert [a[1] for a in answers[:3]] == ["ok"] * 3
    assert answers[3][1] == "error" and answers[3][2]["code"] == "too_busy"
    answer(client, "unsubscribe", {"subscription": answers[0][0]})
    assert answer(client, "subscribe", {"stream": "again", "credit": 10})[1] == "ok"


def test_a_garbage_flood_is_counted_not_logged_line_by_line(node, client, caplog):
    caplog.set_level(logging.INFO, "esnode")
    n = 20_000
    for _ in range(n):
        client.send_raw(b"\xc1garbage")
    for _ in range(n):
        client.recv()
    assert node.transport.refusals.by_reason["bad_request"] == n
    refusal_lines = [r for r in caplog.records if "bad_request" in r.getMessage()]
    assert len(refusal_lines) <= 10, len(refusal_lines)
    assert client.call("ping")[1] == "ok"


def test_metadata_json_cannot_hold_is_refused_not_fatal(client):
    """Found by the live-node fuzzer: bytes inside set_metadata's map reached json.dumps on
    the transport thread, whose death left the node alive but deaf."""
    _, kind, body = client.call("set_metadata", {"stream": "s", "metadata": {"a": b"\x00"}})
    assert kind == "error" and body["code"] == "bad_request" and "JSON" in body["message"]
    assert client.call("ping")[1] == "ok"


def test_a_failing_handler_does_not_silence_the_transport():
    """Defence in depth: whatever a handler raises, the poller answers and carries on."""
    from esnode.transport.zmq_transport import ZmqTransport
    from tests.conftest import free_port

    calls = []

    def on_client(batch):
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("a bug behind the transport")
        t.send_client([(e.peer, e.corr, Reply({"pong": True})) for e in batch])

    t = ZmqTransport(("127.0.0.1", free_port()))
    t.start(on_client, lambda peer: None)
    c = RawClient(t.external_endpoint)
    try:
        first = c.call("ping")
        assert first[1] == "error" and "failed to take this request" in first[2]["message"]
        assert c.call("ping")[1] == "ok"
        assert t.refusals.by_reason["handler_failed"] == 1
    finally:
        c.close()
        t.stop()


def test_a_topology_nested_too_deeply_is_a_topology_error(tmp_path):
    """Found by atheris: tomllib recurses once per nesting level."""
    from esnode.core.config import TopologyError, load_topology

    (tmp_path / "t.toml").write_text("a = " + "[" * 100_000)
    with pytest.raises(TopologyError, match="nested too deeply"):
        load_topology(tmp_path / "t.toml")
