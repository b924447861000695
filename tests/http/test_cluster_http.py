"""The HTTP API on a 3-node cluster of real processes: any node takes any request (writes on
a follower are forwarded to the leader), ES-RequireLeader answers 307 to the leader's HTTP
address, reads are served locally, and /gossip lists every member's HTTP endpoint."""

from __future__ import annotations

import json

import pytest
import requests

from tests.cluster.harness import wait_until
from tests.http.conftest import ATOM, EVENTS, ev

pytestmark = pytest.mark.slow


def post(url: str, events: list[dict], **headers: str) -> requests.Response:
    return requests.post(url, data=json.dumps(events), timeout=15, allow_redirects=False,
                         headers={"Content-Type": EVENTS, **headers})


def test_any_node_takes_writes_and_require_leader_redirects(http_cluster):
    cluster = http_cluster
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.names if n != leader)
    r = post(cluster.http(follower) + "/streams/fwd", [ev(), ev()], **{"ES-ExpectedVersion": "-1"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == cluster.http(follower) + "/streams/fwd/0"
    conflict = post(cluster.http(follower) + "/streams/fwd", [ev()],
                    **{"ES-ExpectedVersion": "7"})
    assert conflict.status_code == 400 and conflict.headers["ES-CurrentVersion"] == "1"
    for header in ("ES-RequireLeader", "ES-RequireMaster", "Kurrent-RequireLeader"):
        r = post(cluster.http(follower) + "/streams/fwd?x=1", [ev()], **{header: "True"})
        assert r.status_code == 307, (header, r.status_code, r.text)
        assert r.headers["Location"] == cluster.http(leader) + "/streams/fwd?x=1"
    assert post(cluster.http(leader) + "/streams/fwd", [ev()],
                **{"ES-RequireLeader": "true"}).status_code == 201
    read = requests.get(cluster.http(follower) + "/streams/fwd", headers={"Accept": ATOM,
                        "ES-RequireLeader": "true"}, allow_redirects=False, timeout=10)
    assert read.status_code == 307

    def served_locally():
        r = requests.get(cluster.http(follower) + "/streams/fwd", headers={"Accept": ATOM},
                         timeout=10)
        return r.status_code == 200 and len(r.json()["entries"]) == 3
    wait_until(served_locally, 10, "the follower serves the committed events", cluster)
    deleted = requests.delete(cluster.http(follower) + "/streams/fwd", timeout=10)
    assert deleted.status_code == 204


def test_gossip_lists_every_member_with_its_http_endpoint(http_cluster):
    cluster = http_cluster
    leader = cluster.wait_for_leader()
    for name in cluster.names:
        body = requests.get(cluster.http(name) + "/gossip", timeout=10).json()
        states = {m["name"]: m["state"] for m in body["members"]}
        assert states[leader] == "Leader" and len(states) == 3
        ports = {m["name"]: m["externalHttpPort"] for m in body["members"]}
        assert ports == cluster.http_ports


def test_a_forwarded_write_whose_leader_stalls_is_an_unknown_outcome_then_retried_once(
        http_cluster):
    cluster = http_cluster
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.names if n != leader)
    batch = [ev(), ev()]
    cluster.pause(leader)  # SIGSTOP: the forwarded write gets no answer
    try:
        r = post(cluster.http(follower) + "/streams/stalled", batch)
        print(f"\nPOST through a follower while the leader is stopped: {r.status_code} "
              f"{r.reason} {r.headers.get('ESnode-Error')}")
        assert r.status_code in (500, 503), r.status_code
        if r.status_code == 500:  # forwarded, then no answer / leader change: unknown
            assert r.reason == "Write timeout"
            assert r.headers["ESnode-Error"] == "outcome_unknown"
        else:  # an election had already started: refused, definitely not made
            assert r.headers["ESnode-Error"] in ("no_quorum", "not_ready")
    finally:
        cluster.resume(leader)
    cluster.wait_for_leader(timeout=30, settled=True)

    def retried() -> bool:
        again = post(cluster.http(follower) + "/streams/stalled", batch)
        return again.status_code == 201
    wait_until(retried, 30, "the retry with the same ids to succeed", cluster)
    assert post(cluster.http(follower) + "/streams/stalled", batch).status_code == 201

    def both_events_once() -> bool:
        r = requests.get(cluster.http(follower) + "/streams/stalled", timeout=10,
                         headers={"Accept": ATOM})
        return r.status_code == 200 and len(r.json()["entries"]) == 2
    wait_until(both_events_once, 10, "exactly the two events of the batch", cluster)
