"""Nodes find each other through gossip seeds or a DNS name (a real DNS server on loopback),
not through the topology's internal endpoints: those are made unreachable on purpose."""

from __future__ import annotations

import dataclasses
import socket

import pytest
from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSServer

from esnode.actors.node import Node
from esnode.core.config import parse_topology
from esnode.core.states import VNodeState
from tests.conftest import free_port, wait_for
from tests.node.rawclient import RawClient, event

ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
NAME = "cluster.esnode.test."


class ClusterResolver(BaseResolver):
    """A real DNS answer: every node's address for NAME, NXDOMAIN for anything else."""

    def resolve(self, request, handler):
        reply = request.reply()
        if str(request.q.qname) == NAME and request.q.qtype == QTYPE.A:
            for address in ADDRESSES:
                reply.add_answer(RR(NAME, QTYPE.A, rdata=A(address), ttl=5))
        else:
            reply.header.rcode = 3
        return reply


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_aliases_work() -> bool:
    try:
        with socket.socket() as s:
            s.bind((ADDRESSES[-1], 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not loopback_aliases_work(),
                                reason="127.0.0.2-4 cannot be bound on this machine")


def topology(discovery: dict, internal: int, external: int):
    nodes = [{"name": f"n{i + 1}", "mem_db": True, "internal_host": a, "internal_port": internal,
              # unreachable on purpose: only discovery may tell where a node is
              "internal_advertise_host": f"nowhere-{i}.invalid",
              "external_host": a, "external_port": external}
             for i, a in enumerate(ADDRESSES)]
    return parse_topology({"cluster": {"name": "disc", "size": 3},
                           "timers": {"election_timeout_ms": 500},
                           "discovery": discovery, "nodes": nodes})


def run_cluster(topo):
    nodes = []
    try:
        for n in topo.nodes:
            nodes.append(Node(topo, n.name).start())
        wait_for(lambda: sum(n.state is VNodeState.Leader for n in nodes) == 1
                 and sum(n.state is VNodeState.Follower for n in nodes) == 2,
                 timeout=20, message="a leader and two followers")
        # A write through a follower is forwarded, and every node serves it.
        follower = next(n for n in nodes if n.state is VNodeState.Follower)
        c = RawClient(follower.transport.external_endpoint)
        try:
            _, kind, body = c.call("append", {"stream": "found", "events": [event()]})
            assert kind == "ok", body
        finally:
            c.close()
        for n in nodes:
            wait_for(lambda n=n: n.store.stream_version("found") == 0
                     and n.board.readable_position >= body["position"],
                     message=f"{n.config.name} to hold the write")
        info = nodes[0].cluster_info()
        assert sorted(m["name"] for m in info["members"]) == ["n1", "n2", "n3"]
        assert all(m["alive"] for m in info["members"])
    finally:
        for n in nodes:
            n.stop()


def test_dns_discovery_against_a_real_dns_server():
    dns_port = free_udp_port()
    server = DNSServer(ClusterResolver(), port=dns_port, address="127.0.0.1")
    server.start_thread()
    try:
        internal, external = free_port(), free_port()
        run_cluster(topology({"dns": NAME.rstrip("."), "gossip_port": internal,
                              "dns_server": f"127.0.0.1:{dns_port}"}, internal, external))
    finally:
        server.stop()


def test_seed_list_discovery():
    internal, external = free_port(), free_port()
    run_cluster(topology({"seeds": [f"{a}:{internal}" for a in ADDRESSES]}, internal, external))


def test_seeds_at_the_gossip_port_of_each_node():
    """Event Store's layout: seeds name each node's gossip port (``internal_gossip_port``,
    its ``--int-http-port``), a second port of the same internal socket."""
    internal, gossip, external = free_port(), free_port(), free_port()
    topo = topology({"seeds": [f"{a}:{gossip}" for a in ADDRESSES]}, internal, external)
    run_cluster(dataclasses.replace(topo, nodes=tuple(
        dataclasses.replace(n, internal_gossip_port=gossip) for n in topo.nodes)))
