"""HTTP Basic on a real node (its own HTTP server on 127.0.0.1): 401 without or with bad
credentials, 403 on an ACL denial, users read from the log (a disabled user counts at once)."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from esnode.actors.node import Factories, Node
from esnode.core.acl import ADMINS, User, hash_password
from esnode.core.authz import Authorizer
from esnode.core.types import NO_STREAM
from esnode.core.users import LiveUsers, user_append
from esnode.storage.memory import MemoryEventStore
from tests.http.conftest import EVENTS, ev, start_http_node

FAST = {"n": 2**10, "r": 8, "p": 1}


def _seeded_store(config) -> MemoryEventStore:
    """The log as a secured cluster has it after its admin created alice."""
    store = MemoryEventStore()
    for user in (User("admin", hash_password("admin-pw", **FAST), (ADMINS,)),
                 User("alice", hash_password("alice-pw", **FAST))):
        (outcome,) = store.write([user_append(user, NO_STREAM)], now_us=0)
        assert not isinstance(outcome, Exception)
    return store


def _users(node: Node) -> LiveUsers:
    return LiveUsers(node.store.read_all, lambda: node.board.readable_position)


def _authorizer(node: Node) -> Authorizer:
    return Authorizer(node.store, lambda: node.board.readable_position)


@pytest.fixture
def secured():
    h = start_http_node(Factories().replace(store=_seeded_store, users=_users,
                                            authorizer=_authorizer))
    yield h
    h.session.close()
    h.node.stop()


def _post(h, stream, auth=None, **headers):
    return requests.post(h.url(f"/streams/{stream}"), data=json.dumps([ev()]), auth=auth,
                         headers={"Content-Type": EVENTS, **headers}, timeout=15,
                         allow_redirects=False)


def _get(h, path, auth=None):
    return requests.get(h.url(path), auth=auth, timeout=15,
                        headers={"Accept": "application/json"})


def test_no_credentials_is_401_with_a_basic_challenge(secured):
    r = _post(secured, "orders")
    assert r.status_code == 401 and r.headers["ESnode-Error"] == "not_authenticated"
    assert r.headers["WWW-Authenticate"] == 'Basic realm="esnode"'
    assert _get(secured, "/ping").status_code == 200  # liveness stays open


@pytest.mark.parametrize("auth", [("alice", "wrong"), ("mallory", "alice-pw")])
def test_wrong_password_and_unknown_user_are_401_with_one_message(secured, auth):
    r = _post(secured, "orders", auth=auth)
    assert r.status_code == 401
    assert "unknown user or wrong password" in r.text


def test_malformed_authorization_is_401(secured):
    r = _post(secured, "orders", Authorization="Bearer abc")
    assert r.status_code == 401 and "Basic" in r.text


def test_user_writes_and_reads_its_streams_but_not_system_ones(secured):
    alice = ("alice", "alice-pw")
    assert _post(secured, "orders", auth=alice).status_code == 201
    assert _get(secured, "/streams/orders/0", auth=alice).status_code == 200
    r = _get(secured, "/streams/$all", auth=alice)
    assert r.status_code == 403 and r.headers["ESnode-Error"] == "access_denied"
    assert _get(secured, "/streams/$all", auth=("admin", "admin-pw")).status_code == 200


def test_stream_acl_denial_is_403_and_disabling_a_user_counts_at_once(secured):
    admin, alice = ("admin", "admin-pw"), ("alice", "alice-pw")
    r = requests.post(secured.url("/streams/secret/metadata"), auth=admin, timeout=15,
                      data=json.dumps([{"eventId": str(uuid.uuid4()), "eventType": "$metadata",
                                        "data": {"$acl": {"$r": "$admins"}}}]),
                      headers={"Content-Type": EVENTS})
    assert r.status_code == 201, r.text
    assert _post(secured, "secret", auth=alice).status_code == 201  # $w stays the default
    r = _get(secured, "/streams/secret/0", auth=alice)
    assert r.status_code == 403
    assert "user 'alice' may not read stream 'secret'" in r.text
    # admin disables alice (a new $User record in $user-alice, written through the gate)
    record = User("alice", hash_password("alice-pw", **FAST), disabled=True)
    r = requests.post(secured.url("/streams/$user-alice"), auth=admin, timeout=15,
                      data=json.dumps([{"eventId": str(uuid.uuid4()), "eventType": "$User",
                                        "data": json.loads(record.to_event_data())}]),
                      headers={"Content-Type": EVENTS})
    assert r.status_code == 201, r.text
    r = _post(secured, "orders", auth=alice)
    assert r.status_code == 401 and "disabled" in r.text


def _secured_topology(http_port: int, **security):
    from esnode.core.config import parse_topology
    from tests.conftest import free_port

    return parse_topology({
        "cluster": {"name": "test", "size": 1},
        "security": {"authentication": True, **security},
        "nodes": [{"name": "node1", "internal_host": "127.0.0.1", "internal_port": free_port(),
                   "external_host": "127.0.0.1", "external_port": free_port(),
                   "external_http_port": http_port, "mem_db": True}]})


def test_authentication_from_the_topology_refuses_to_start_without_an_admin_password(
        monkeypatch):
    from esnode.core.users import AdminPasswordMissing
    from tests.conftest import free_port

    monkeypatch.delenv("ESNODE_ADMIN_PASSWORD", raising=False)
    node = Node(_secured_topology(free_port()), "node1")
    with pytest.raises(AdminPasswordMissing, match="no default"):
        node.start()
    assert not hasattr(node, "store")  # refused before opening anything


def test_first_start_creates_admin_with_the_configured_password(tmp_path, monkeypatch):
    from tests.conftest import free_port, start_leader, wait_for

    monkeypatch.delenv("ESNODE_ADMIN_PASSWORD", raising=False)
    pw = tmp_path / "admin.pw"
    pw.write_text("first-run-secret\n")
    port = free_port()
    node = start_leader(Node(_secured_topology(port, admin_password_file=str(pw)), "node1"))
    try:
        base = f"http://127.0.0.1:{port}"

        # Wait on the node's user table, not on logins: failed logins while the admin is not
        # written yet would trip the failed-login throttle for this address.
        wait_for(lambda: node.users.refresh().get("admin"), message="admin created at first start")
        assert requests.get(base + "/streams/$all", auth=("admin", "first-run-secret"),
                            headers={"Accept": "application/json"}, timeout=15).status_code == 200
        assert requests.get(base + "/streams/$all", timeout=15).status_code == 401
        r = requests.get(base + "/streams/$all", auth=("admin", "admin"), timeout=15)
        assert r.status_code == 401
    finally:
        node.stop()
