"""Password checks off the transport thread, and the failed-login throttle (docs/security.md,
"Authentication over ZeroMQ"): a flood of wrong passwords does not slow other clients of the
node; a connection's requests keep their order around a login being checked; after too many
failures an address is refused without running scrypt, until the window has passed."""

from __future__ import annotations

import itertools
import time

import msgpack
import pytest
import zmq

from esnode.actors.node import Node
from esnode.core.acl import User, hash_password
from esnode.core.types import NO_STREAM, NotAuthenticated
from esnode.core.users import LiveUsers, LoginThrottle, LoginThrottled, user_append
from esnode.transport.codec import encode_request
from tests.conftest import start_leader, wait_for
from tests.security.test_zmq_login import FACTORIES, Conn, _append_args, _seeded_store, _topology

_corr = itertools.count(10_000)


class CountingUsers(LiveUsers):
    """``LiveUsers`` counting the password checks it runs (each one is a scrypt)."""

    checks = 0

    def authenticate(self, name: str, password: str):
        type(self).checks += 1
        return super().authenticate(name, password)


def _store_with_slow_user(config):
    """alice and friends (cheap hashes), and ``slow`` hashed at the real scrypt cost."""
    store = _seeded_store(config)
    (outcome,) = store.write([user_append(User("slow", hash_password("slow-pw")), NO_STREAM)],
                             now_us=0)
    assert not isinstance(outcome, Exception)
    return store


@pytest.fixture
def node_with():
    """Starts a node (plaintext passwords allowed) whose logins go through ``throttle``;
    yields a connect function; closes every connection and stops the node."""
    started: list[Node] = []
    ctx = zmq.Context()
    conns: list[Conn] = []

    def start(throttle: LoginThrottle):
        CountingUsers.checks = 0
        factories = FACTORIES.replace(
            store=_store_with_slow_user,
            users=lambda n: CountingUsers(n.store.read_all, lambda: n.board.readable_position,
                                          throttle=throttle))
        node = start_leader(Node(_topology(plaintext=True), "node1", factories))
        started.append(node)
        endpoint = node.transport.external_endpoint

        def connect(source: str = "", routing_id: bytes = b"", ping: bool = True) -> Conn:
            # "tcp://SOURCE:0;HOST:PORT": connect from another loopback address.
            target = endpoint.replace("tcp://", f"tcp://{source}:0;") if source else endpoint
            conns.append(Conn(ctx, target, routing_id=routing_id))
            assert not ping or conns[-1].code("ping") == "ok"
            return conns[-1]

        return node, connect

    try:
        yield start
    finally:
        for c in conns:
            c.close()
        ctx.term()
        for node in started:
            node.stop()


def _send_login(conn: Conn, user: str, password: str) -> int:
    corr = next(_corr)
    conn.sock.send(encode_request("authenticate", corr, {"user": user, "password": password}))
    return corr


def test_a_flood_of_wrong_passwords_does_not_stall_other_clients(node_with):
    """8 connections pipeline 10 wrong passwords each for a user hashed at full cost (80
    scrypts); meanwhile another client's pings are answered within a quarter of the time the
    flood takes (when scrypt ran on the transport thread, a ping waited for the whole burst).
    Each flooding connection gets its answers in the order it sent its logins."""
    node, connect = node_with(LoginThrottle(max_failures=10**6))  # measure the thread alone
    flooders = [connect() for _ in range(8)]
    pinger = connect()
    per_conn = 10
    started = time.monotonic()
    sent = {f: [_send_login(f, "slow", f"wrong-{i}") for i in range(per_conn)]
            for f in flooders}
    got: dict[Conn, list[tuple[int, str, dict]]] = {f: [] for f in flooders}
    latencies = []
    while any(len(got[f]) < per_conn for f in flooders):
        t = time.monotonic()
        assert pinger.code("ping") == "ok"
        latencies.append(time.monotonic() - t)
        for f in flooders:
            while f.sock.poll(0):
                got[f].append(tuple(msgpack.unpackb(f.sock.recv(), raw=False)))
        assert time.monotonic() - started < 120, "the flood was not answered within 120 s"
    flood_s = time.monotonic() - started
    print(f"{len(flooders) * per_conn} wrong passwords answered in {flood_s:.2f} s; "
          f"{len(latencies)} pings meanwhile, the slowest {max(latencies) * 1000:.0f} ms")
    for f in flooders:
        assert [corr for corr, _, _ in got[f]] == sent[f]
        assert {(kind, body["code"]) for _, kind, body in got[f]} == {
            ("error", "not_authenticated")}
    assert CountingUsers.checks == len(flooders) * per_conn
    assert len(latencies) >= 3, (latencies, flood_s)
    assert max(latencies) < flood_s / 4, (max(latencies), flood_s)


def test_requests_after_a_login_wait_for_its_verdict_in_order(node_with):
    """Pipelined on one connection without waiting: each request is attributed as of the
    logins sent before it, and every answer to a login comes before the answers of the
    requests sent after it."""
    node, connect = node_with(LoginThrottle())
    c = connect()
    script = [("append", _append_args("orders")),
              ("authenticate", {"user": "alice", "password": "alice-pw"}),
              ("append", _append_args("orders")),
              ("read_stream", {"stream": "$user-admin"}),  # alice, but not an admin
              ("authenticate", {"user": "alice", "password": "wrong"}),
              ("append", _append_args("orders")),
              ("authenticate", {"user": "slow", "password": "slow-pw"}),
              ("ping", {})]
    corrs = [next(_corr) for _ in script]
    for corr, (op, args) in zip(corrs, script):
        c.sock.send(encode_request(op, corr, args))
    answers: dict[int, tuple[str, str]] = {}
    order = []
    while len(answers) < len(script):
        assert c.sock.poll(10_000), f"no answer within 10 s; got {answers}"
        corr, kind, body = msgpack.unpackb(c.sock.recv(), raw=False)
        answers[corr] = (kind, "ok" if kind == "ok" else body["code"])
        order.append(corr)
    assert [answers[corr][1] for corr in corrs] == [
        "not_authenticated", "ok", "ok", "access_denied", "not_authenticated", "not_authenticated", "ok",
        "ok"]
    for i in (1, 4, 6):  # each login answered before what was sent after it
        assert all(order.index(corrs[i]) < order.index(later) for later in corrs[i + 1:])


def test_a_login_whose_connection_closes_while_it_is_checked_opens_no_session(node_with):
    """The right password for the full-cost user, then the connection closes at once; a new
    connection taking the same routing id (and, likely, the same descriptor) is anonymous
    whenever the verdict comes."""
    node, connect = node_with(LoginThrottle())
    first = connect(routing_id=b"chosen-id")
    _send_login(first, "slow", "slow-pw")
    first.close()
    deadline = time.monotonic() + 10
    while True:  # ignored by libzmq until the node has seen the old connection close
        again = connect(routing_id=b"chosen-id", ping=False)
        corr = next(_corr)
        again.sock.send(encode_request("append", corr, _append_args("orders")))
        while again.sock.poll(500):
            got_corr, kind, body = msgpack.unpackb(again.sock.recv(), raw=False)
            if got_corr == corr:  # (the old login's answer may come here first)
                assert (kind, body["code"]) == ("error", "not_authenticated")
                return
        assert time.monotonic() < deadline, "the node never took the reconnection"


def test_the_throttle_refuses_an_address_without_scrypt_and_lifts(node_with):
    """3 failures within the window: that address's next logins, right or wrong, are refused
    with the time to wait, without a password check, and counted in the refusal log; another
    address logs in meanwhile; once the window has passed the right password works again."""
    node, connect = node_with(LoginThrottle(max_failures=3, window_s=2.0))
    attacker = connect(source="127.0.0.2")
    for i in range(3):
        kind, body = attacker.call("authenticate", user="alice", password=f"guess-{i}")
        assert body["message"] == "not authenticated: unknown user or wrong password"
    checks = CountingUsers.checks
    kind, body = attacker.call("authenticate", user="alice", password="alice-pw")
    assert body["code"] == "not_authenticated"
    assert body["message"].startswith(
        "not authenticated: too many failed logins from 127.0.0.2, retry in ")
    assert body["message"].endswith(" s")
    assert CountingUsers.checks == checks  # refused without running scrypt
    assert node.transport.refusals.by_reason.get("login_throttled") == 1
    assert connect().code("authenticate", user="alice", password="alice-pw") == "ok"
    assert attacker.code("append", **_append_args("orders")) == "not_authenticated"
    wait_for(lambda: attacker.code("authenticate", user="alice", password="alice-pw") == "ok",
             timeout=10, interval=0.2, message="the throttle to lift")
    assert attacker.code("append", **_append_args("orders")) == "ok"


def test_throttle_window_per_address_and_what_counts():
    now = [100.0]
    throttle = LoginThrottle(max_failures=3, window_s=10.0, clock=lambda: now[0])
    checks = []

    def check(name: str, password: str):
        checks.append(name)
        if password != "right":
            raise NotAuthenticated("wrong")
        return name

    for t in (100.0, 101.0, 104.0):
        now[0] = t
        with pytest.raises(NotAuthenticated, match="wrong"):
            throttle.authenticate(check, "a", "u", "guess")
    assert throttle.authenticate(check, "b", "u", "right") == "u"  # another address
    now[0] = 104.2
    with pytest.raises(LoginThrottled, match="from a, retry in 6 s"):
        throttle.authenticate(check, "a", "u", "right")  # right or wrong: not checked
    assert len(checks) == 4
    now[0] = 110.01  # the first failure left the window: one more attempt
    assert throttle.authenticate(check, "a", "u", "right") == "u"
    with pytest.raises(NotAuthenticated, match="wrong"):
        throttle.authenticate(check, "a", "u", "guess")  # a success reset nothing
    with pytest.raises(LoginThrottled, match="retry in 1 s"):
        throttle.authenticate(check, "a", "u", "right")


def test_http_basic_goes_through_the_same_throttle():
    from esnode.actors.node import Factories
    from tests.http.conftest import start_http_node
    from tests.security.test_http_auth import _authorizer, _post
    from tests.security.test_http_auth import _seeded_store as http_store

    throttle = LoginThrottle(max_failures=2, window_s=60.0)
    h = start_http_node(Factories().replace(
        store=http_store, authorizer=_authorizer,
        users=lambda n: LiveUsers(n.store.read_all, lambda: n.board.readable_position,
                                  throttle=throttle)))
    try:
        for i in range(2):
            assert _post(h, "orders", auth=("alice", f"guess-{i}")).status_code == 401
        r = _post(h, "orders", auth=("alice", "alice-pw"))
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="esnode"'
        assert "too many failed logins from 127.0.0.1" in r.text
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    finally:
        h.session.close()
        h.node.stop()
