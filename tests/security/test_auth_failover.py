"""A logged-in client through a leader change, on a real 3-node cluster (one OS process per
node, LMDB, 127.0.0.1) with ``authentication = true``: the leader is SIGKILLed; the client's
next appends and reads succeed with its credentials (it logs in again on the node it moves
to), a stream whose ACL excludes it stays closed to it on the new leader, and its catch-up
subscription comes back logged in on another node with every event once."""

from __future__ import annotations

import pytest

from esnode.client import new_event
from esnode.client.errors import AccessDenied, NotAuthenticated
from esnode.core.acl import USER_EVENT_TYPE, User, hash_password
from esnode.core.types import NO_STREAM
from tests.cluster.conftest import FAST
from tests.client.test_real_cluster import real_cluster
from tests.cluster.harness import Cluster
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

ADMIN_PW = "admin-failover-pw"


class AuthCluster(Cluster):
    """A ``Cluster`` whose topology turns users and ACLs on (plaintext passwords allowed:
    the test is about sessions across a failover, CURVE has its own tests)."""

    def topology_text(self, name: str = "test") -> str:
        (self.dir / "admin.pw").write_text(ADMIN_PW + "\n")
        return super().topology_text(name) + "\n".join([
            "", "[security]", "authentication = true",
            f'admin_password_file = "{self.dir / "admin.pw"}"',
            "allow_plaintext_passwords = true", ""])


@pytest.fixture
def cluster(tmp_path):
    with real_cluster(tmp_path, AuthCluster, **FAST) as c:
        yield c


RIDE_OUT = {"maxDiscoverAttempts": 25, "operationTimeout": 3000}
"""Client options that outlast an election (tests/client/test_real_cluster.py)."""


def _admin_ready(cluster: Cluster):
    """An admin client, once the leader has written ``$user-admin`` and it is committed."""
    def attempt():
        try:
            return cluster.cluster_client(credentials=f"admin:{ADMIN_PW}", **RIDE_OUT)
        except NotAuthenticated:  # not bootstrapped yet: try again until the deadline
            return None

    return wait_for(attempt, timeout=30, interval=0.3, message="the admin to be bootstrapped")


def test_a_logged_in_client_keeps_working_through_a_leader_kill(cluster):
    admin = _admin_ready(cluster)
    alice = User("alice", hash_password("alice-pw"))
    admin.append(alice.stream, [new_event(USER_EVENT_TYPE, alice.to_event_data(),
                                          is_json=True)], NO_STREAM)
    admin.set_metadata("secret", {"$acl": {"$r": "admin", "$w": "admin"}})
    admin.append("secret", [new_event("Classified", {"n": 1})])

    client = cluster.cluster_client(credentials="alice:alice-pw", **RIDE_OUT)
    client.append("orders", [new_event("OrderPlaced", {"n": 1})])
    subscriber = cluster.cluster_client(credentials="alice:alice-pw", **RIDE_OUT)
    subscription = subscriber.subscribe("orders", from_="start")
    with pytest.raises(AccessDenied):
        client.read_stream("secret")

    leader = cluster.wait_for_leader(timeout=20, settled=True)
    cluster.kill(leader)
    # The client's very next calls: it finds the new leader, logs in there, and goes on.
    client.append("orders", [new_event("OrderPlaced", {"n": 2})])
    assert client.node != leader
    assert [e.data for e in client.read_stream("orders").events] == [b'{"n":1}', b'{"n":2}']
    with pytest.raises(AccessDenied, match="alice"):
        client.read_stream("secret")
    with pytest.raises(AccessDenied, match="alice"):
        client.append("secret", [new_event("Leak", {})])
    new_leader = cluster.wait_for_leader(timeout=20, exclude=[leader])
    assert new_leader != leader
    assert len(admin.read_stream("secret").events) == 1
    # Her subscription came back on another node, logged in there: every event once, in order.
    client.append("orders", [new_event("OrderPlaced", {"n": 3})])
    seen = []
    wait_for(lambda: _take(subscription, seen, 3), timeout=30, interval=0,
             message="alice's subscription to deliver the three orders")
    assert [e.data for e in seen] == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert subscription.get(0.5) is None  # nothing twice
    subscription.close()


def _take(subscription, seen: list, n: int) -> bool:
    """Take what the subscription has within 0.2 s; True once ``n`` events were seen."""
    event = subscription.get(0.2)
    if event is not None:
        seen.append(event)
    return len(seen) >= n
