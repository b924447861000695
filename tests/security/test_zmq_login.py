"""Login over ZeroMQ on a real node (127.0.0.1): ``authenticate`` binds a user to the
connection, the existing ACL checks then apply to it; wrong password and unknown user give one
message; a new connection (even one claiming the same routing id) starts anonymous; passwords
are refused without CURVE unless the operator allows plaintext (tests/dev)."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
import uuid

import msgpack
import pytest
import zmq

from esnode.actors.node import Factories, Node
from esnode.core.acl import ADMINS, User, hash_password
from esnode.core.authz import Authorizer
from esnode.core.config import parse_topology
from esnode.core.types import NO_STREAM
from esnode.core.users import LiveUsers, user_append
from esnode.storage.memory import MemoryEventStore
from esnode.transport.codec import encode_request
from esnode.transport.security import load_public_key
from tests.conftest import free_port, start_leader
from tests.security.keys import curve_dealer, keypair, secure_topology

FAST = {"n": 2**10, "r": 8, "p": 1}
_corr = itertools.count(1)


def _seeded_store(config) -> MemoryEventStore:
    """The log as a secured cluster has it after its admin created alice and (disabled) bob."""
    store = MemoryEventStore()
    for user in (User("admin", hash_password("admin-pw", **FAST), (ADMINS,)),
                 User("alice", hash_password("alice-pw", **FAST)),
                 User("bob", hash_password("bob-pw", **FAST), disabled=True)):
        (outcome,) = store.write([user_append(user, NO_STREAM)], now_us=0)
        assert not isinstance(outcome, Exception)
    return store


FACTORIES = Factories().replace(
    store=_seeded_store, http_face=None,
    users=lambda n: LiveUsers(n.store.read_all, lambda: n.board.readable_position),
    authorizer=lambda n: Authorizer(n.store, lambda: n.board.readable_position))


def _topology(plaintext: bool):
    return parse_topology({
        "cluster": {"name": "login", "size": 1},
        "security": {"allow_plaintext_passwords": plaintext},
        "nodes": [{"name": "node1", "mem_db": True, "internal_host": "127.0.0.1",
                   "internal_port": free_port(), "external_host": "127.0.0.1",
                   "external_port": free_port()}]})


class Conn:
    """A raw DEALER speaking the client protocol: one request, one answer (with a deadline)."""

    def __init__(self, ctx, endpoint, server_key=None, keys=None, routing_id=b""):
        self.sock = curve_dealer(ctx, endpoint, server_key, keys, routing_id)

    def call(self, op: str, **args) -> tuple[str, dict]:
        corr = next(_corr)
        self.sock.send(encode_request(op, corr, args))
        while True:
            assert self.sock.poll(10_000), f"no answer to {op} within 10 s"
            got_corr, kind, body = msgpack.unpackb(self.sock.recv(), raw=False)
            if got_corr == corr:
                return kind, body

    def code(self, op: str, **args) -> str:
        kind, body = self.call(op, **args)
        return "ok" if kind == "ok" else body["code"]

    def close(self):
        self.sock.close(linger=0)


def _append_args(stream: str) -> dict:
    return {"stream": stream, "expected_version": -2,
            "events": [[str(uuid.uuid4()), "t", b"{}", b"", True]]}


@pytest.fixture
def plain():
    """A node allowing plaintext passwords, and a zmq context for raw connections."""
    node = start_leader(Node(_topology(plaintext=True), "node1", FACTORIES))
    ctx = zmq.Context()
    conns: list[Conn] = []

    def connect(**kw) -> Conn:
        conns.append(Conn(ctx, node.transport.external_endpoint, **kw))
        return conns[-1]

    try:
        yield node, connect
    finally:
        for c in conns:
            c.close()
        ctx.term()
        node.stop()


def test_login_ok_then_requests_carry_the_user_within_its_acl(plain):
    node, connect = plain
    c = connect()
    assert c.code("append", **_append_args("orders")) == "not_authenticated"
    assert c.call("authenticate", user="alice", password="alice-pw") == ("ok", {"user": "alice"})
    assert c.code("append", **_append_args("orders")) == "ok"
    assert c.code("read_stream", stream="orders") == "ok"
    # Outside its ACL: system streams are for admins.
    assert c.code("read_stream", stream="$user-admin") == "access_denied"
    admin = connect()
    assert admin.code("authenticate", user="admin", password="admin-pw") == "ok"
    assert admin.code("set_metadata", stream="secret",
                      metadata={"$acl": {"$r": "admin", "$w": "admin"}}) == "ok"
    assert c.code("append", **_append_args("secret")) == "access_denied"
    assert c.code("read_stream", stream="secret") == "access_denied"


@pytest.mark.parametrize("user,password", [("alice", "wrong"), ("mallory", "alice-pw")])
def test_wrong_password_and_unknown_user_get_one_message(plain, user, password):
    _, connect = plain
    c = connect()
    kind, body = c.call("authenticate", user=user, password=password)
    assert kind == "error" and body["code"] == "not_authenticated"
    assert body["message"] == "not authenticated: unknown user or wrong password"
    assert c.code("read_stream", stream="orders") == "not_authenticated"


def test_disabled_user_is_refused(plain):
    _, connect = plain
    c = connect()
    assert c.code("authenticate", user="bob", password="bob-pw") == "not_authenticated"


def test_a_failed_login_logs_the_connection_out(plain):
    _, connect = plain
    c = connect()
    assert c.code("authenticate", user="alice", password="alice-pw") == "ok"
    assert c.code("authenticate", user="alice", password="nope") == "not_authenticated"
    assert c.code("read_stream", stream="orders") == "not_authenticated"


def test_the_session_is_per_connection_and_a_reused_routing_id_starts_anonymous(plain):
    node, connect = plain
    first = connect(routing_id=b"chosen-id")
    assert first.code("authenticate", user="alice", password="alice-pw") == "ok"
    other = connect()
    assert other.code("read_stream", stream="orders") == "not_authenticated"
    first.close()
    # Same routing id, new connection: ignored until the node has seen the old one close,
    # then served, anonymously (the session went with the old connection).
    deadline = time.monotonic() + 10
    while True:
        again = connect(routing_id=b"chosen-id")
        again.sock.send(encode_request("read_stream", next(_corr), {"stream": "orders"}))
        if again.sock.poll(200):
            _, kind, body = msgpack.unpackb(again.sock.recv(), raw=False)
            assert (kind, body["code"]) == ("error", "not_authenticated")
            break
        again.close()
        assert time.monotonic() < deadline, "the node never took the reconnection"


def test_a_client_claiming_a_connected_clients_routing_id_gets_nothing(plain):
    _, connect = plain
    victim = connect(routing_id=b"victim")
    assert victim.code("authenticate", user="admin", password="admin-pw") == "ok"
    thief = connect(routing_id=b"victim")
    thief.sock.send(encode_request("append", next(_corr), _append_args("$admin-only")))
    assert not thief.sock.poll(500)  # libzmq ignores it: no handover on the external socket
    assert victim.code("append", **_append_args("$admin-only")) == "ok"  # still admin


@contextlib.contextmanager
def _one_connection(topology, factories=FACTORIES, **conn):
    """A node and one raw connection to it, both closed afterwards."""
    node = start_leader(Node(topology, "node1", factories))
    ctx = zmq.Context()
    c = Conn(ctx, node.transport.external_endpoint, **conn)
    try:
        yield c
    finally:
        c.close()
        ctx.term()
        node.stop()


def test_passwords_are_refused_in_plaintext_unless_allowed():
    with _one_connection(_topology(plaintext=False)) as c:
        kind, body = c.call("authenticate", user="alice", password="alice-pw")
        assert kind == "error" and body["code"] == "not_authenticated"
        assert "only over CURVE" in body["message"]


def test_login_over_curve(tmp_path):
    keys = tmp_path / "keys"
    with _one_connection(secure_topology(tmp_path, internal=False),
                         server_key=load_public_key(keys / "external.key"),
                         keys=keypair(keys, "stranger")) as c:
        assert c.code("authenticate", user="alice", password="alice-pw") == "ok"
        assert c.code("append", **_append_args("orders")) == "ok"


def test_authenticate_on_an_open_node_is_a_bad_request():
    with _one_connection(_topology(plaintext=False), Factories().replace(http_face=None)) as c:
        assert c.code("authenticate", user="alice", password="x") == "bad_request"
        assert c.code("append", **_append_args("orders")) == "ok"


# --- the Python client: credentials in the connection string, a login per connection -----
def _uri(node, credentials: str) -> str:
    return f"esnode://{credentials}@{node.transport.external_endpoint.removeprefix('tcp://')}"


def test_the_sync_client_logs_in_and_works_within_its_acl(plain):
    from esnode.client import connect, new_event
    from esnode.client.errors import AccessDenied

    node, _ = plain
    with connect(_uri(node, "alice:alice-pw"), timeout=10) as client:
        client.append("orders", [new_event("t", {})])
        assert len(client.read_stream("orders").events) == 1
        with pytest.raises(AccessDenied):
            client.read_stream("$user-admin")


def test_a_wrong_password_is_a_clear_not_authenticated_error(plain):
    from esnode.client import connect
    from esnode.client.errors import NotAuthenticated

    node, _ = plain
    started = time.monotonic()
    with pytest.raises(NotAuthenticated, match="unknown user or wrong password"):
        with connect(_uri(node, "alice:nope"), timeout=10) as client:
            client.read_stream("orders")
    assert time.monotonic() - started < 5  # one attempt, no retry loop


def test_the_asyncio_client_logs_in(plain):
    import asyncio

    from esnode.client import new_event
    from esnode.client.errors import NotAuthenticated
    from esnode.client.aio import connect_async

    node, _ = plain

    async def scenario():
        async with connect_async(_uri(node, "alice:alice-pw"), timeout=10) as client:
            await client.append("orders", [new_event("t", {})])
        with pytest.raises(NotAuthenticated):
            async with connect_async(_uri(node, "mallory:x"), timeout=10) as client:
                await client.read_stream("orders")

    asyncio.run(scenario())


def test_credentials_in_the_connection_string_round_trip():
    from esnode.client.settings import parse_connection_string

    s = parse_connection_string("esnode://al%40ice:p%3Aw%40rd@127.0.0.1:2113,127.0.0.1:2123")
    assert (s.user, s.password) == ("al@ice", "p:w@rd")
    assert "p:w@rd" not in repr(s)
    assert parse_connection_string(s.to_uri()) == s


def test_the_client_logs_in_again_after_its_node_restarts():
    """A restarted node (same ports) knows nothing of the old login: the client's next
    connection, whether from re-discovery or ZeroMQ's silent reconnect, is logged in again."""
    from esnode.client import connect, new_event

    topology = _topology(plaintext=True)
    node = start_leader(Node(topology, "node1", FACTORIES))
    try:
        with connect(_uri(node, "alice:alice-pw"), timeout=10) as client:
            client.append("orders", [new_event("t", {})])
            node.stop()
            node = start_leader(Node(topology, "node1", FACTORIES))
            client.append("orders", [new_event("t", {})])
            assert len(client.read_stream("orders").events) == 1  # the restarted node's log
    finally:
        node.stop()


def test_the_cli_logs_in_with_esnode_user_and_password(plain, monkeypatch):
    from typer.testing import CliRunner

    from esnode.cli.main import app

    node, _ = plain
    monkeypatch.setenv("ESNODE_CONNECT", "esnode://" + node.transport.external_endpoint
                       .removeprefix("tcp://"))
    runner = CliRunner()

    def run(*args, user="alice", password="alice-pw"):
        return runner.invoke(app, list(args), env={
            "COLUMNS": "200", "ESNODE_USER": user, "ESNODE_PASSWORD": password})

    assert run("append", "cli-orders", "--type", "OrderPlaced").exit_code == 0
    assert "OrderPlaced" in run("read", "cli-orders").stdout
    refused = run("read", "cli-orders", password="wrong")
    assert refused.exit_code != 0 and "not_authenticated" in refused.stderr
    denied = run("read", "$user-admin")
    assert denied.exit_code != 0 and "access_denied" in denied.stderr


def test_cli_user_commands_end_to_end(plain, monkeypatch):
    """add, list, passwd, disable, enable, delete as admin over ZeroMQ; each change counts
    for the next login; a deleted user's stream keeps its history and the name can be added
    again; an ordinary user may not manage users."""
    from typer.testing import CliRunner

    from esnode.cli.main import app

    node, connect = plain
    monkeypatch.setenv("ESNODE_CONNECT", "esnode://" + node.transport.external_endpoint
                       .removeprefix("tcp://"))
    runner = CliRunner()

    def run(*args, user="admin", password="admin-pw", code=0):
        result = runner.invoke(app, list(args), env={
            "COLUMNS": "200", "ESNODE_USER": user, "ESNODE_PASSWORD": password})
        assert result.exit_code == code, (result.stdout, result.stderr)
        return result

    def login(password: str) -> str:
        c = connect()
        try:
            return c.code("authenticate", user="carol", password=password)
        finally:
            c.close()

    run("user", "add", "carol", "--password", "carol-1", "--group", "team")
    assert login("carol-1") == "ok"
    listed = {json.loads(line)["user"]: json.loads(line) for line in
              run("user", "list", "--json").stdout.splitlines()}
    assert listed["carol"]["groups"] == ["team"] and listed["bob"]["disabled"] is True
    assert set(listed) == {"admin", "alice", "bob", "carol"}
    run("user", "add", "carol", "--password", "x", code=1)  # exists already
    run("user", "passwd", "carol", "--password", "carol-2")
    assert (login("carol-1"), login("carol-2")) == ("not_authenticated", "ok")
    run("user", "disable", "carol")
    assert login("carol-2") == "not_authenticated"
    run("user", "enable", "carol")
    assert login("carol-2") == "ok"
    run("user", "delete", "carol")
    assert login("carol-2") == "not_authenticated"
    assert "carol" not in run("user", "list").stdout
    for command in ("enable", "disable", "delete"):
        assert "deleted" in run("user", command, "carol", code=2).stderr
    admin = connect()
    assert admin.code("authenticate", user="admin", password="admin-pw") == "ok"
    kind, history = admin.call("read_stream", stream="$user-carol")
    assert kind == "ok" and len(history["events"]) == 5  # add, passwd, disable, enable, delete
    run("user", "add", "carol", "--password", "carol-3")  # continues the same stream
    assert (login("carol-2"), login("carol-3")) == ("not_authenticated", "ok")
    for command in ("enable", "delete"):
        denied = run("user", command, "carol", user="alice", password="alice-pw", code=1)
        assert "access_denied" in denied.stderr
    denied = run("user", "add", "dave", "--password", "x", user="alice", password="alice-pw",
                 code=1)
    assert "access_denied" in denied.stderr
    run("user", "passwd", "nobody", "--password", "x", code=2)
