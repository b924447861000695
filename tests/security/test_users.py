"""Users from the log and request authorization (core/users.py, core/authz.py), against a
real (in-memory) event store: what the gateway and the HTTP face will call."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import pytest

from esnode.core import messages as m
from esnode.core.acl import ADMINS, ANONYMOUS, OPS, Principal, User, hash_password
from esnode.core.authz import Authorizer, requirement
from esnode.core.persistent import GroupSettings
from esnode.core.types import (
    ANY,
    NO_STREAM,
    AccessDenied,
    AppendRequest,
    EventData,
    NotAuthenticated,
)
from esnode.core.users import (
    ADMIN,
    ADMIN_PASSWORD_ENV,
    AdminPasswordMissing,
    UserTable,
    admin_password,
    user_append,
)
from esnode.storage.memory import MemoryEventStore

FAST = {"n": 2**10, "r": 8, "p": 1}
ALICE = Principal("alice", frozenset())
BOB = Principal("bob", frozenset({"readers"}))
ADMIN_P = Principal(ADMIN, frozenset({ADMINS}))


def _event(event_type: str = "E", data: object = None) -> EventData:
    return EventData(str(uuid.uuid4()), event_type,
                     json.dumps(data if data is not None else {}).encode(), b"", True)


def _write(store, stream: str, *events: EventData, expected: int = ANY):
    (outcome,) = store.write([AppendRequest(stream, expected, events)], now_us=0)
    assert not isinstance(outcome, Exception), outcome
    return outcome


def _table(store) -> UserTable:
    return UserTable().load(
        lambda pos, n: store.read_all(pos, n, up_to_position=store.writer_position))


# --- users -------------------------------------------------------------------------------------
def test_admin_password_must_be_given(tmp_path):
    with pytest.raises(AdminPasswordMissing, match="no default"):
        admin_password(None, {})
    with pytest.raises(AdminPasswordMissing):
        admin_password(None, {ADMIN_PASSWORD_ENV: ""})
    assert admin_password(None, {ADMIN_PASSWORD_ENV: "s3cret"}) == "s3cret"
    f = tmp_path / "admin.pw"
    f.write_text("from-file\n")
    assert admin_password(f, {}) == "from-file"
    assert admin_password(f, {ADMIN_PASSWORD_ENV: "env-wins"}) == "env-wins"


def test_first_start_creates_admin_once_and_every_node_rebuilds_it_from_the_log():
    store = MemoryEventStore()
    write = UserTable().bootstrap("changeit-not-default")
    assert write.stream == "$user-admin" and write.expected_version == NO_STREAM
    (outcome,) = store.write([write], now_us=0)
    assert not isinstance(outcome, Exception)
    table = _table(store)  # a restart, or a follower that replicated the log
    assert table.bootstrap("other") is None
    principal = table.authenticate(ADMIN, "changeit-not-default")
    assert principal.is_admin
    # a second bootstrap racing the first cannot overwrite it
    (again,) = store.write([UserTable().bootstrap("x")], now_us=0)
    assert isinstance(again, Exception)


def test_wrong_password_unknown_user_and_disabled_user_are_refused():
    store = MemoryEventStore()
    _write(store, "$user-alice",
           _event("$User", json.loads(User("alice", hash_password("pw", **FAST)).to_event_data())))
    table = _table(store)
    assert table.authenticate("alice", "pw") == Principal("alice", frozenset())
    with pytest.raises(NotAuthenticated, match="unknown user or wrong password"):
        table.authenticate("alice", "nope")
    with pytest.raises(NotAuthenticated, match="unknown user or wrong password"):
        table.authenticate("mallory", "pw")
    # disabling (a new record in the same stream) takes effect at once, cache or not
    store.write([user_append(User("alice", hash_password("pw", **FAST), disabled=True), 0)],
                now_us=0)
    table.apply(store.read_stream("$user-alice", -1, 1, backwards=True).events[0])
    with pytest.raises(NotAuthenticated, match="disabled"):
        table.authenticate("alice", "pw")


def test_password_change_invalidates_the_verified_cache():
    table = UserTable()
    store = MemoryEventStore()
    store.write([user_append(User("bob", hash_password("old", **FAST)), NO_STREAM)], now_us=0)
    table.apply(store.read_stream("$user-bob", 0, 1).events[0])
    table.authenticate("bob", "old")
    store.write([user_append(User("bob", hash_password("new", **FAST)), 0)], now_us=0)
    table.apply(store.read_stream("$user-bob", 1, 1).events[0])
    with pytest.raises(NotAuthenticated):
        table.authenticate("bob", "old")
    assert table.authenticate("bob", "new").name == "bob"


def test_a_deleted_user_is_unknown_keeps_its_history_and_admin_is_not_recreated():
    store = MemoryEventStore()
    alice = User("alice", hash_password("pw", **FAST))
    admin = User(ADMIN, hash_password("root", **FAST), (ADMINS,))
    for i, record in enumerate([alice, replace(alice, deleted=True)]):
        store.write([user_append(record, NO_STREAM if i == 0 else i - 1)], now_us=0)
    store.write([user_append(admin, NO_STREAM), user_append(replace(admin, deleted=True), 0)],
                now_us=0)
    table = _table(store)
    with pytest.raises(NotAuthenticated, match="unknown user or wrong password"):
        table.authenticate("alice", "pw")
    assert table.users() == [] and "alice" not in table
    assert len(store.read_stream("$user-alice", 0, 10).events) == 2  # the history stays
    assert table.bootstrap("root") is None  # a deleted admin stays deleted
    # added again after the deletion: a new record in the same stream
    store.write([user_append(replace(alice, password_hash=hash_password("pw2", **FAST)), 1)],
                now_us=0)
    table.apply(store.read_stream("$user-alice", -1, 1, backwards=True).events[0])
    assert table.authenticate("alice", "pw2").name == "alice"


def test_user_records_outside_their_own_stream_or_malformed_are_ignored():
    store = MemoryEventStore()
    # a $User event claiming to be admin, written in another user's stream
    forged = User("admin", hash_password("mine", **FAST), (ADMINS,))
    _write(store, "$user-eve", _event("$User", json.loads(forged.to_event_data())))
    _write(store, "$user-bad", EventData(str(uuid.uuid4()), "$User", b"not json", b"", False))
    table = _table(store)
    assert "admin" not in table and "bad" not in table and table.users() == []


# --- authorization -----------------------------------------------------------------------------
def test_requirements_of_each_request():
    assert requirement(m.ReadAll()) == ("$r", "$all")
    assert requirement(m.Append("s", ANY, (_event(),))) == ("$w", "s")
    assert requirement(m.Delete("s")) == ("$d", "s")
    assert requirement(m.SetMetadata("s", {})) == ("$mw", "s")
    assert requirement(m.GetMetadata("s")) == ("$mr", "s")
    assert requirement(m.Subscribe("s")) == ("$r", "s")
    # the metadata stream itself is metadata access: no bypass of $mw by a plain append
    assert requirement(m.Append("$$s", ANY, (_event(),))) == ("$mw", "s")
    assert requirement(m.ReadStream("$$s", 0, 10)) == ("$mr", "s")


@pytest.fixture
def store():
    s = MemoryEventStore()
    _write(s, "orders", _event())
    _write(s, "private", _event())
    s.set_metadata("private", ANY, {"$acl": {"$r": "bob", "$w": ["bob"], "$d": "$admins",
                                             "$mr": "readers", "$mw": "bob"}}, now_us=0)
    return s


def _check(store, who, request):
    return Authorizer(store, lambda: store.writer_position).check(who, request)


def test_anonymous_needs_to_authenticate_except_for_ping_and_discovery(store):
    assert isinstance(_check(store, ANONYMOUS, m.ReadStream("orders", 0, 10)), NotAuthenticated)
    assert _check(store, ANONYMOUS, m.Ping()) is None
    assert _check(store, ANONYMOUS, m.ClusterInfo()) is None


def test_user_streams_are_open_to_authenticated_users_by_default(store):
    for request in (m.ReadStream("orders", 0, 10), m.Append("orders", ANY, (_event(),)),
                    m.Delete("orders"), m.GetMetadata("orders"), m.SetMetadata("orders", {}),
                    m.Subscribe("orders")):
        assert _check(store, ALICE, request) is None, request


@pytest.mark.parametrize("request_, op", [
    (m.ReadStream("private", 0, 10), "read"),
    (m.Subscribe("private"), "read"),
    (m.Append("private", ANY, (_event(),)), "write to"),
    (m.Delete("private"), "delete"),
    (m.GetMetadata("private"), "read the metadata of"),
    (m.SetMetadata("private", {}), "write the metadata of"),
    (m.Append("$$private", ANY, (_event(),)), "write the metadata of"),
])
def test_stream_acl_denials_say_who_what_and_where(store, request_, op):
    error = _check(store, ALICE, request_)
    assert isinstance(error, AccessDenied)
    assert str(error) == f"access denied: user 'alice' may not {op} stream 'private'"


def test_stream_acl_grants_by_user_and_group(store):
    assert _check(store, BOB, m.ReadStream("private", 0, 10)) is None
    assert _check(store, BOB, m.GetMetadata("private")) is None  # via group "readers"
    assert isinstance(_check(store, BOB, m.Delete("private")), AccessDenied)
    assert _check(store, ADMIN_P, m.Delete("private")) is None


def test_system_streams_and_all_are_for_admins_only(store):
    for request in (m.ReadAll(), m.Subscribe("$all"), m.ReadStream("$user-admin", 0, 1),
                    m.Append("$settings", ANY, (_event(),)), m.ListGroups()):
        assert isinstance(_check(store, ALICE, request), AccessDenied), request
        assert _check(store, ADMIN_P, request) is None


def test_settings_change_the_default_for_the_next_request(store):
    assert _check(store, ALICE, m.ReadStream("orders", 0, 10)) is None
    _write(store, "$settings", _event("settings", {"$userStreamAcl": {
        "$r": "$all", "$w": "writers", "$d": "$admins", "$mr": "$all", "$mw": "$admins"}}))
    assert _check(store, ALICE, m.ReadStream("orders", 0, 10)) is None
    assert isinstance(_check(store, ALICE, m.Append("orders", ANY, (_event(),))), AccessDenied)
    writer = Principal("w", frozenset({"writers"}))
    assert _check(store, writer, m.Append("orders", ANY, (_event(),))) is None


def test_malformed_acl_or_settings_fail_closed(store):
    store.set_metadata("orders", ANY, {"$acl": {"$x": "alice"}}, now_us=0)
    assert isinstance(_check(store, ALICE, m.ReadStream("orders", 0, 10)), AccessDenied)
    _write(store, "$settings", EventData(str(uuid.uuid4()), "s", b"[1]", b"", True))
    assert isinstance(_check(store, ALICE, m.ReadStream("other", 0, 10)), AccessDenied)
    assert _check(store, ADMIN_P, m.ReadStream("orders", 0, 10)) is None


def test_uncommitted_acl_changes_are_not_seen(store):
    committed = store.writer_position
    store.set_metadata("orders", ANY, {"$acl": {"$r": "$admins"}}, now_us=0)
    authz = Authorizer(store, lambda: committed)
    assert authz.check(ALICE, m.ReadStream("orders", 0, 10)) is None


def test_persistent_group_management_needs_ops_or_admins(store):
    create = m.CreateGroup("orders", "g", GroupSettings())
    assert isinstance(_check(store, ALICE, create), AccessDenied)
    assert _check(store, Principal("o", frozenset({OPS})), create) is None
    assert _check(store, ALICE, m.ConnectGroup("orders", "g")) is None
    assert isinstance(_check(store, ALICE, m.ConnectGroup("private", "g")), AccessDenied)


# --- the leader's second check of forwarded writes -------------------------------------------
def test_forwarded_writes_are_checked_again_with_the_user_they_carry(store):
    from esnode.core.forwarding import ForwardAppend, ForwardDelete
    from esnode.core.users import LiveUsers

    store.write([user_append(User("alice", hash_password("pw", **FAST)), NO_STREAM),
                 user_append(User("bob", hash_password("pw", **FAST)), NO_STREAM),
                 user_append(User("gone", hash_password("pw", **FAST), disabled=True),
                             NO_STREAM)], now_us=0)
    users = LiveUsers(store.read_all, lambda: store.writer_position)
    authz = Authorizer(store, lambda: store.writer_position)

    def fwd(user, stream="private", delete=False):
        if delete:
            return ForwardDelete("n2", 1, stream, ANY, False, user)
        return ForwardAppend("n2", 1, stream, ANY, (_event(),), user)

    assert authz.check_forward(fwd("bob"), users) is None
    assert authz.check_forward(fwd("alice", "orders"), users) is None
    assert isinstance(authz.check_forward(fwd("alice"), users), AccessDenied)
    assert isinstance(authz.check_forward(fwd("alice", delete=True), users), AccessDenied)
    assert isinstance(authz.check_forward(fwd("alice", "$$private"), users), AccessDenied)
    for who in (None, "gone", "nobody"):
        assert isinstance(authz.check_forward(fwd(who, "orders"), users), NotAuthenticated)
