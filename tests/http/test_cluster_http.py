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
