"""CURVE on both networks: members talk, and every kind of stranger is refused at the
handshake (or, for a member claiming another's name, before decoding), with a log line
naming who, and nothing reaching the node's handlers."""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass

import pytest
import zmq

from esnode.transport.internal_codec import InternalCodec
from esnode.transport.security import node_security
from esnode.transport.zmq_transport import ZmqTransport
from tests.conftest import wait_for
from tests.security.keys import curve_dealer, keypair, secure_topology


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    term: int


CODEC = InternalCodec([Hello])
NAMES = ("n1", "n2", "n3")


def start_transports(topology, transports: dict, seeded: bool = False):
    """A secured transport per member, into ``transports`` (the caller stops them): peers by
    name at their endpoints, or (``seeded``) only seed addresses, as DNS discovery gives.
    Returns the cluster and the client inboxes by name."""
    inboxes = {n.name: queue.Queue() for n in topology.nodes}
    clients = {n.name: queue.Queue() for n in topology.nodes}
    for node in topology.nodes:
        others = [o for o in topology.nodes if o.name != node.name]
        where = ({"members": [o.name for o in others],
                  "seeds": [o.internal_bind for o in topology.nodes]} if seeded else
                 {"peers": {o.name: o.internal_bind for o in others}})
        t = ZmqTransport(node.external_bind, internal_bind=node.internal_bind,
                         node_name=node.name, internal_codec=CODEC,
                         security=node_security(topology, node), **where)
        t.start(lambda batch, q=clients[node.name]: [q.put(e) for e in batch],
                lambda peer: None,
                on_node=lambda batch, q=inboxes[node.name]: [q.put(m) for m in batch])
        transports[node.name] = t
    return inboxes, clients


@pytest.fixture
def cluster(tmp_path):
    """Three secured transports (n1..n3) at their topology endpoints; inboxes by name."""
    topology = secure_topology(tmp_path, NAMES)
    transports = {}
    try:
        inboxes, clients = start_transports(topology, transports)
        yield topology, transports, inboxes, clients, tmp_path / "keys"
    finally:
        for t in transports.values():
            t.stop()


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def send_until_received(t: ZmqTransport, to: str, msg, inbox: queue.Queue):
    """IMMEDIATE drops messages until the CURVE connection is up: resend until one arrives."""
    def arrived():
        t.send_node([(to, msg)])
        try:
            return inbox.get(timeout=0.1)
        except queue.Empty:
            return None
    return wait_for(arrived, timeout=10, message="a message over CURVE")


def refused(t: ZmqTransport, reason: str) -> int:
    return wait_for(lambda: t.refusals.by_reason.get(reason, 0), timeout=10,
                    message=f"a {reason} refusal")


def internal(topology, name):
    host, port = topology.node(name).internal_bind
    return f"tcp://{host}:{port}"


def external(topology, name):
    host, port = topology.node(name).external_bind
    return f"tcp://{host}:{port}"


def test_members_talk_over_curve(cluster):
    _, transports, inboxes, _, _ = cluster
    sender, got = send_until_received(transports["n1"], "n2", Hello(term=7), inboxes["n2"])
    assert (sender, got) == ("n1", Hello(term=7))


def test_unknown_key_is_refused_on_the_internal_network(cluster, ctx, caplog):
    topology, transports, inboxes, _, keys = cluster
    caplog.set_level(logging.WARNING, "esnode")
    stranger = keypair(keys, "stranger")
    sock = curve_dealer(ctx, internal(topology, "n2"), security_key(topology, keys, "n2"),
                        stranger, routing_id=b"n1")
    sock.send(CODEC.encode(Hello(term=1)))
    refused(transports["n2"], "unknown_key")
    assert inboxes["n2"].empty()
    assert f"a client key (not a cluster member's) {stranger[0].decode()}" in caplog.text
    assert "internal network: refused 127.0.0.1 at the handshake" in caplog.text


def test_client_key_is_refused_on_the_internal_network(tmp_path, ctx, caplog):
    """An allow-listed client key opens the external network, never the internal one."""
    caplog.set_level(logging.WARNING, "esnode")
    topology = secure_topology(tmp_path, ("n1",), client_keys=True)
    node = topology.node("n1")
    security = node_security(topology, node)
    t = ZmqTransport(node.external_bind, internal_bind=node.internal_bind, node_name="n1",
                     internal_codec=CODEC, security=security)
    got = queue.Queue()
    t.start(lambda batch: [got.put(e) for e in batch], lambda peer: None,
            on_node=lambda batch: [got.put(m) for m in batch])
    try:
        alice = keypair(tmp_path / "clients", "alice")
        sock = curve_dealer(ctx, internal(topology, "n1"), security.internal.public, alice)
        sock.send(CODEC.encode(Hello(term=1)))
        refused(t, "unknown_key")
        assert got.empty()
        assert alice[0].decode() in caplog.text
        # ... while the same key is welcome on the external network.
        ext = curve_dealer(ctx, external(topology, "n1"), security.external.public, alice)
        from esnode.transport.codec import encode_request
        ext.send(encode_request("ping", 1, {}))
        envelope = wait_for(lambda: got.get(timeout=0.1) if not got.empty() else None)
        assert type(envelope.request).__name__ == "Ping"
    finally:
        t.stop()


def test_member_key_used_by_another_member_is_refused(cluster, ctx, caplog):
    """n3's key, claiming to be n1: ZAP accepts the key (as n3), the transport refuses every
    frame whose claimed name is not the key's member, before decoding it."""
    topology, transports, inboxes, _, keys = cluster
    caplog.set_level(logging.WARNING, "esnode")
    sock = curve_dealer(ctx, internal(topology, "n2"), security_key(topology, keys, "n2"),
                        keypair(keys, "n3"), routing_id=b"n1")
    sock.send(CODEC.encode(Hello(term=99)))
    refused(transports["n2"], "impersonation")
    assert inboxes["n2"].empty()
    assert "claiming to be 'n1': its key is member 'n3'" in caplog.text


@pytest.mark.parametrize("network", ["internal", "external"])
def test_plaintext_peer_is_refused(cluster, ctx, caplog, network):
    topology, transports, inboxes, clients, _ = cluster
    caplog.set_level(logging.WARNING, "esnode")
    endpoint = (internal if network == "internal" else external)(topology, "n2")
    sock = curve_dealer(ctx, endpoint, b"", None, routing_id=b"n1")
    sock.send(b"\x94\x01\xa4ping\x01\x80")
    refused(transports["n2"], "handshake")
    assert inboxes["n2"].empty() and clients["n2"].empty()
    assert f"{network} network: refused " in caplog.text
    assert "not a CURVE handshake" in caplog.text


def test_wrong_server_key_never_connects(cluster, ctx):
    """A client that does not hold the right server key cannot talk to the node (CURVE
    authenticates the server too): here, the internal key used on the external network."""
    topology, transports, _, clients, keys = cluster
    sock = curve_dealer(ctx, external(topology, "n2"), security_key(topology, keys, "n2"),
                        zmq.curve_keypair())
    sock.send(b"\x94\x01\xa4ping\x01\x80")
    refused(transports["n2"], "handshake")
    assert clients["n2"].empty()


def security_key(topology, keys, name):
    from esnode.transport.security import load_public_key

    return load_public_key(keys / f"{name}.key")


def test_seeds_of_unknown_names_are_located_by_the_key_that_answers(tmp_path):
    """As with DNS discovery: seed addresses only, no names. A node probes each address with
    every member's key; the handshake that completes says who is there, and the other
    probes are closed."""
    topology = secure_topology(tmp_path, NAMES)
    transports = {}
    try:
        inboxes, _ = start_transports(topology, transports, seeded=True)
        for sender, receiver in (("n1", "n2"), ("n3", "n1"), ("n2", "n3")):
            got = send_until_received(transports[sender], receiver, Hello(term=5),
                                      inboxes[receiver])
            assert got == (sender, Hello(term=5))
        wait_for(lambda: all(len(t._seed_dealers) == 2 for t in transports.values()),
                 message="surplus probes closed")
        assert all(t.refusals.by_reason.get("impersonation", 0) == 0
                   for t in transports.values())
    finally:
        for t in transports.values():
            t.stop()


def test_without_its_zap_handler_a_secured_socket_refuses_everyone():
    """ZAP_ENFORCE_DOMAIN: a missing handler fails closed, never open."""
    from esnode.transport.security import INTERNAL_DOMAIN, NetworkSecurity, secure_router

    ctx = zmq.Context()
    try:
        public, secret = zmq.curve_keypair()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        secure_router(router, NetworkSecurity(INTERNAL_DOMAIN, public, secret))
        port = router.bind_to_random_port("tcp://127.0.0.1")
        monitor = router.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                            | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                            | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        dealer = curve_dealer(ctx, f"tcp://127.0.0.1:{port}", public, zmq.curve_keypair())
        dealer.send(b"hello")
        from zmq.utils.monitor import recv_monitor_message

        assert monitor.poll(10_000), "no handshake event"
        assert recv_monitor_message(monitor)["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert not router.poll(200)
        router.disable_monitor()
        for s in (monitor, dealer, router):
            s.close(linger=0)
    finally:
        ctx.term()


def test_zap_sees_the_server_sockets_routing_id_not_the_name_the_peer_claims():
    """Why impersonation is refused at the first message, not at the handshake
    (docs/security.md): the identity frame of a ZAP request is the ROUTER's own routing id;
    the name the DEALER claims only comes with its messages."""
    ctx = zmq.Context()
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    zap = ctx.socket(zmq.REP)
    router = ctx.socket(zmq.ROUTER)
    dealer = ctx.socket(zmq.DEALER)
    try:
        zap.bind("inproc://zeromq.zap.01")
        router.setsockopt(zmq.CURVE_SERVER, 1)
        router.setsockopt(zmq.CURVE_SECRETKEY, server_secret)
        router.setsockopt(zmq.ROUTING_ID, b"SERVERID")
        router.setsockopt(zmq.ZAP_DOMAIN, b"internal")
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.setsockopt(zmq.ROUTING_ID, b"CLAIMED")
        dealer.setsockopt(zmq.CURVE_SERVERKEY, server_public)
        dealer.setsockopt(zmq.CURVE_PUBLICKEY, client_public)
        dealer.setsockopt(zmq.CURVE_SECRETKEY, client_secret)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        assert zap.poll(10_000), "no ZAP request within 10 s"
        version, request_id, domain, address, identity, mechanism, *_ = zap.recv_multipart()
        assert (domain, address, identity, mechanism) == (
            b"internal", b"127.0.0.1", b"SERVERID", b"CURVE")
        zap.send_multipart([version, request_id, b"200", b"OK", b"n1", b""])
        dealer.send(b"hello")
        assert router.poll(10_000), "no message within 10 s"
        frames = router.recv_multipart(copy=False)
        assert [f.bytes for f in frames] == [b"CLAIMED", b"hello"]
        assert frames[-1].get("User-Id") == "n1"  # what the transport compares the name with
    finally:
        for sock in (dealer, router, zap):
            sock.close(linger=0)
        ctx.term()
