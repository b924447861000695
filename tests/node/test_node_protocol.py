"""Every client operation end to end over real ZeroMQ sockets, on memory and LMDB stores."""

from __future__ import annotations

import threading

import pytest

from tests.node.rawclient import RawClient, event


@pytest.fixture
def client(node_endpoint):
    c = RawClient(node_endpoint)
    yield c
    c.close()


def append(client, stream, n=1, expected=-2):
    return client.call("append", {"stream": stream, "expected_version": expected,
                                  "events": [event() for _ in range(n)]})


def test_append_then_read_stream_forwards_and_backwards(client):
    corr, kind, body = append(client, "orders-1", 3, expected=-1)
    assert kind == "ok" and body["first_version"] == 0 and body["last_version"] == 2
    _, kind, body = client.call("read_stream", {"stream": "orders-1"})
    assert kind == "ok" and [e[2] for e in body["events"]] == [0, 1, 2] and body["is_end"]
    assert body["events"][0][1] == "orders-1" and body["events"][0][3] == "OrderPlaced"
    _, _, body = client.call("read_stream", {"stream": "orders-1", "from_version": -1,
                                             "backwards": True, "max_count": 2})
    assert [e[2] for e in body["events"]] == [2, 1]


def test_wrong_expected_version_is_a_typed_error(client):
    append(client, "s", 2)
    _, kind, body = append(client, "s", 1, expected=0)
    assert kind == "error" and body["code"] == "wrong_expected_version"
    assert body["current"] == 1 and body["stream"] == "s"


def test_idempotent_retry_returns_the_original_outcome(client):
    events = [event(), event()]
    first = client.call("append", {"stream": "idem", "expected_version": -1, "events": events})
    retry = client.call("append", {"stream": "idem", "expected_version": -1, "events": events})
    assert first[1] == retry[1] == "ok"
    assert retry[2]["position"] == first[2]["position"] and retry[2]["idempotent"]
    _, _, body = client.call("read_stream", {"stream": "idem"})
    assert len(body["events"]) == 2


def test_read_all_sees_every_append_in_order(client):
    for i in range(5):
        append(client, f"s-{i}")
    _, kind, body = client.call("read_all", {"from_position": 0, "max_count": 100})
    mine = [e for e in body["events"] if e[1].startswith("s-")]
    assert [e[1] for e in mine] == [f"s-{i}" for i in range(5)]
    positions = [e[8] for e in body["events"]]
    assert positions == sorted(positions)


def test_soft_delete_then_tombstone(client):
    append(client, "gone", 2)
    _, kind, _ = client.call("delete", {"stream": "gone", "expected_version": 1})
    assert kind == "ok"
    _, kind, body = client.call("read_stream", {"stream": "gone"})
    assert kind == "error" and body["code"] == "stream_not_found"
    _, kind, body = append(client, "gone", 1)
    assert kind == "ok" and body["first_version"] == 2  # versions continue
    _, kind, _ = client.call("delete", {"stream": "gone", "tombstone": True})
    assert kind == "ok"
    _, kind, body = append(client, "gone", 1)
    assert kind == "error" and body["code"] == "stream_deleted"
    _, kind, body = client.call("read_stream", {"stream": "gone"})
    assert kind == "error" and body["code"] == "stream_deleted"


def test_stream_metadata_round_trip_and_max_count(client):
    append(client, "capped", 5)
    _, kind, body = client.call("set_metadata", {"stream": "capped",
                                                 "metadata": {"$maxCount": 2, "owner": "ops"}})
    assert kind == "ok"
    _, kind, body = client.call("get_metadata", {"stream": "capped"})
    assert body["metadata"] == {"$maxCount": 2, "owner": "ops"} and body["version"] == 0
    _, _, body = client.call("read_stream", {"stream": "capped"})
    assert [e[2] for e in body["events"]] == [3, 4]


def test_cluster_info_and_ping(client, running_node):
    _, kind, body = client.call("cluster_info")
    assert kind == "ok" and body["leader"] == "node1"
    assert body["members"][0]["state"] == "Leader"
    assert body["members"][0]["external"] == list(running_node.config.external_advertise)
    _, kind, body = client.call("ping")
    assert kind == "ok" and body["node"] == "node1"


def test_pipelined_requests_on_one_connection(client):
    corrs = [client.send("append", {"stream": f"p-{i % 7}", "events": [event()]})
             for i in range(300)]
    replies = [client.recv() for _ in corrs]
    assert sorted(r[0] for r in replies) == sorted(corrs)
    assert all(r[1] == "ok" for r in replies)
    positions = sorted(r[2]["position"] for r in replies)
    assert len(set(positions)) == 300


def test_concurrent_clients_group_commit(node_endpoint):
    errors = []

    def worker(k):
        c = RawClient(node_endpoint)
        try:
            for i in range(50):
                _, kind, body = c.call("append", {"stream": f"w-{k}", "expected_version": i - 1,
                                                  "events": [event()]})
                if kind != "ok":
                    errors.append(body)
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    c = RawClient(node_endpoint)
    try:
        for k in range(8):
            _, _, body = c.call("read_stream", {"stream": f"w-{k}"})
            assert [e[2] for e in body["events"]] == list(range(50))
    finally:
        c.close()
