"""Access control on a running 3-node cluster (every real actor, in-process network): each
request is checked on the node it arrives at, before any actor sees it, whatever its kind."""

from __future__ import annotations

import pytest

from esnode.actors.node import Node
from esnode.core import messages as m
from esnode.core.acl import ADMINS, Principal
from esnode.core.authz import Authorizer
from esnode.core.types import ANY
from tests.conftest import wait_for
from tests.support.cluster import InProcessCluster, new_event
from tests.support.inproc import outcome

ADMIN = Principal("admin", frozenset({ADMINS}))
ALICE = Principal("alice", frozenset())
BOB = Principal("bob", frozenset())


def _authorizer(node: Node) -> Authorizer:
    return Authorizer(node.store, lambda: node.board.readable_position)


@pytest.fixture
def cluster():
    """Function-scoped: conftest stops every actor after each test."""
    with InProcessCluster(3, overrides={"authorizer": _authorizer}) as c:
        leader = c.wait_for_leader()
        follower = c.followers(leader)[0]
        admin = c.client(leader.config.name, ADMIN)
        assert outcome(admin.call(m.Append("private", ANY, (new_event(),))))[0] == "ok"
        assert outcome(admin.call(m.SetMetadata(
            "private", {"$acl": {"$r": "bob", "$w": "bob", "$d": "bob", "$mr": "bob",
                                 "$mw": "bob"}})))[0] == "ok"
        # the follower serves reads and checks ACLs at its commit position: wait for the ACL
        fclient = c.client(follower.config.name, BOB)

        def acl_replicated():
            code, body = outcome(fclient.call(m.GetMetadata("private")))
            return code == "ok" and "$acl" in str(body)

        wait_for(acl_replicated, message="the ACL replicated to the follower")
        c.follower_name = follower.config.name
        yield c


def _code(cluster, who, request):
    return outcome(cluster.client(cluster.follower_name, who).call(request))


def test_anonymous_requests_are_refused_as_not_authenticated(cluster):
    code, text = _code(cluster, None, m.ReadStream("orders", 0, 10))
    assert code == "not_authenticated" and "needs a user" in text
    assert _code(cluster, None, m.Ping())[0] == "ok"


def test_a_write_through_a_follower_is_checked_there_and_forwarded_with_its_user(cluster):
    assert _code(cluster, ALICE, m.Append("orders", ANY, (new_event(),)))[0] == "ok"
    assert _code(cluster, BOB, m.Append("private", ANY, (new_event(),)))[0] == "ok"
    code, text = _code(cluster, ALICE, m.Append("private", ANY, (new_event(),)))
    assert (code, text) == ("access_denied",
                            "access denied: user 'alice' may not write to stream 'private'")


def test_acl_denials_on_every_kind_of_request(cluster):
    for request in (m.ReadStream("private", 0, 10), m.Delete("private"),
                    m.GetMetadata("private"), m.SetMetadata("private", {}),
                    m.Subscribe("private"), m.Append("$$private", ANY, (new_event(),))):
        assert _code(cluster, ALICE, request)[0] == "access_denied", request
    assert _code(cluster, BOB, m.ReadStream("private", 0, 10))[0] == "ok"


def test_system_streams_and_all_for_admins_only(cluster):
    assert _code(cluster, ALICE, m.ReadAll())[0] == "access_denied"
    assert _code(cluster, ALICE, m.Subscribe("$all"))[0] == "access_denied"
    assert _code(cluster, BOB, m.Append("$settings", ANY, (new_event(),)))[0] == "access_denied"
    assert _code(cluster, ADMIN, m.ReadAll())[0] == "ok"


def test_persistent_group_management_is_refused_to_ordinary_users(cluster):
    from esnode.core.persistent import GroupSettings

    code = _code(cluster, ALICE, m.CreateGroup("orders", "g", GroupSettings()))[0]
    assert code == "access_denied"


def test_the_leader_checks_forwarded_writes_again_with_the_user_they_carry():
    """A follower without a gate (or with older ACLs) forwards alice's write; the leader,
    which knows alice from the log, refuses it and the refusal reaches the client."""
    from esnode.core.acl import User, hash_password
    from esnode.core.types import NO_STREAM
    from esnode.core.users import LiveUsers, user_append

    def users(node: Node) -> LiveUsers:
        return LiveUsers(node.store.read_all, lambda: node.board.readable_position)

    with InProcessCluster(3, overrides={"authorizer": _authorizer, "users": users}) as c:
        leader = c.wait_for_leader()
        follower = c.followers(leader)[0]
        follower.authorizer = None  # its gate lets everything through (as if its ACLs lagged)
        admin = c.client(leader.config.name, ADMIN)
        fast = {"n": 2**10, "r": 8, "p": 1}
        for user in (User("alice", hash_password("pw", **fast)),
                     User("bob", hash_password("pw", **fast))):
            write = user_append(user, NO_STREAM)
            assert outcome(admin.call(m.Append(write.stream, NO_STREAM, write.events)))[0] == "ok"
        assert outcome(admin.call(m.SetMetadata("private", {"$acl": {"$w": "bob"}})))[0] == "ok"
        via_follower = c.client(follower.config.name, ALICE)
        code, body = outcome(via_follower.call(m.Append("private", ANY, (new_event(),))))
        assert code == "access_denied", body
        assert "user 'alice' may not write to stream 'private'" in body["message"]
        assert outcome(c.client(follower.config.name, BOB).call(
            m.Append("private", ANY, (new_event(),))))[0] == "ok"
        code, _ = outcome(c.client(follower.config.name, Principal("mallory")).call(
            m.Append("orders", ANY, (new_event(),))))
        assert code == "not_authenticated"
