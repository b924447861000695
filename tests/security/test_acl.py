"""The pure users-and-ACL core: scrypt password hashes, user records as ``$user-*`` event
data, ``$acl`` and ``$settings`` parsing, and Event Store's access decisions."""

from __future__ import annotations

import pytest

from esnode.core.acl import (
    ANONYMOUS,
    DefaultAcls,
    Principal,
    StreamAcl,
    User,
    allowed,
    hash_password,
    verify_password,
)
from esnode.core.types import BadRequest

FAST = {"n": 2**10, "r": 8, "p": 1}  # the tests' hashes: the format, not the cost


def test_scrypt_hash_verifies_only_its_password():
    stored = hash_password("s3cret", **FAST)
    assert stored.startswith("scrypt$1024$8$1$")
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret!", stored)
    assert hash_password("s3cret", **FAST) != stored  # salted
    for broken in ("", "scrypt$1$8$1$x$y", "md5$x", stored.replace("scrypt", "bcrypt"),
                   "scrypt$99999999999$8$1$AAAA$AAAA"):
        assert not verify_password("s3cret", broken)
    with pytest.raises(BadRequest):
        hash_password("")


def test_default_cost_is_memory_hard():
    stored = hash_password("pw")
    assert stored.split("$")[1:4] == ["16384", "8", "1"]  # 16 MiB per guess
    assert verify_password("pw", stored)


def test_user_record_round_trips_through_its_event_data():
    user = User("alice", hash_password("pw", **FAST), ("$ops", "accounting"), "Alice A.")
    assert user.stream == "$user-alice"
    assert User.from_event_data(user.to_event_data()) == user
    with pytest.raises(BadRequest):
        User("$admin", "x")
    with pytest.raises(BadRequest):
        User.from_event_data(b'{"loginName": "bob"}')


def test_acl_parsing_names_the_bad_part():
    acl = StreamAcl.parse({"$r": "$all", "$w": ["alice", "writers"]})
    assert acl.entries == {"$r": ("$all",), "$w": ("alice", "writers")}
    with pytest.raises(BadRequest, match="unknown operation '\\$x'"):
        StreamAcl.parse({"$x": "alice"})
    with pytest.raises(BadRequest, match=r"\$acl.\$w: expected"):
        StreamAcl.parse({"$w": 7})


ALICE = Principal("alice", frozenset({"writers"}))
BOB = Principal("bob")
ADMIN = Principal("admin", frozenset({"$admins"}))


@pytest.mark.parametrize("who, op, stream, acl, expected", [
    (ALICE, "$r", "orders", None, True),            # user streams: every user by default
    (ANONYMOUS, "$r", "orders", None, False),       # never without a user
    (ALICE, "$r", "$settings", None, False),        # system streams: admins only
    (ADMIN, "$w", "$settings", None, True),
    (ADMIN, "$d", "locked", {"$d": "nobody"}, True),  # admins bypass ACLs
    (ALICE, "$w", "locked", {"$w": "writers"}, True),  # by group
    (BOB, "$w", "locked", {"$w": "writers"}, False),
    (BOB, "$w", "locked", {"$w": ["x", "bob"]}, True),  # by name
    (BOB, "$r", "locked", {"$w": "writers"}, True),   # operations not listed: the default
    (BOB, "$mr", "$ce-x", {"$mr": "$all"}, True),     # an ACL may open a system stream
])
def test_access_decisions(who, op, stream, acl, expected):
    assert allowed(who, op, stream, StreamAcl.parse(acl)) is expected


def test_settings_change_the_defaults():
    defaults = DefaultAcls.parse({"$userStreamAcl": {"$r": "$all", "$w": "writers"}})
    assert allowed(ALICE, "$w", "orders", None, defaults)
    assert not allowed(BOB, "$w", "orders", None, defaults)
    assert not allowed(BOB, "$d", "orders", None, defaults)  # not in the new default
    assert not allowed(BOB, "$r", "$stats", None, defaults)  # system default unchanged
