"""The hosts tier itself: what each cut really cuts, segregated networks, and clean-up."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.cluster.checker import History, check
from tests.cluster.harness import new_event, wait_until
from tests.netns import hosts
from tests.netns.conftest import new_network


def reaches(net: hosts.Network, frm: str, to: str, network: str = "internal") -> bool:
    return net.udp_reaches(frm, to, network)


def test_each_cut_drops_exactly_what_it_says(network):
    """UDP datagrams (one direction each) before and after every mechanism."""
    net = network
    a, b, c = net.names
    pairs = [(x, y) for x in net.names for y in net.names if x != y]
    assert all(reaches(net, x, y) for x, y in pairs)
    assert reaches(net, a, b, "external")

    net.cut_one_way(a, b)  # blackhole route in a's namespace
    assert not reaches(net, a, b) and reaches(net, b, a)
    assert reaches(net, a, c) and reaches(net, c, a) and reaches(net, a, b, "external")
    net.heal()

    net.cut(a, b)
    assert not reaches(net, a, b) and not reaches(net, b, a)
    assert reaches(net, a, c) and reaches(net, b, c)
    net.heal()

    net.isolate(a)  # internal switch port down: internal gone, clients still reach it
    assert not reaches(net, a, b) and not reaches(net, c, a)
    assert reaches(net, a, b, "external") and reaches(net, b, c)
    net.heal()

    net.isolate(a, ("internal", "external"))
    assert not reaches(net, a, b) and not reaches(net, a, b, "external")
    net.heal()

    net.partition([a, b], [c])
    assert reaches(net, a, b) and reaches(net, b, a)
    assert not any(reaches(net, x, c) or reaches(net, c, x) for x in (a, b))
    net.heal()
    # ARP may need a moment after a cable comes back: wait, do not sleep blindly
    wait_until(lambda: all(reaches(net, x, y) for x, y in pairs), 10, "every link back")


def test_segregated_networks(hosts_cluster):
    """Clients reach only the external network; cluster traffic runs only on the internal
    one; a node refuses a client request on its internal endpoint."""
    cluster, net = hosts_cluster, hosts_cluster.net
    cluster.start()
    leader = cluster.wait_for_leader(timeout=20)
    follower = next(n for n in cluster.names if n != leader)

    # The test process (the client) has no way onto the internal network.
    for node in cluster.names:
        with socket.socket() as s:
            s.settimeout(2)
            started = time.monotonic()
            with pytest.raises(OSError) as refused:
                s.connect((net.internal_ip(node), hosts.INTERNAL_PORT))
            assert time.monotonic() - started < 1.5, "must fail at once, not time out"
        print(f"client -> {net.internal_ip(node)}:{hosts.INTERNAL_PORT}: {refused.value}")
    route = hosts.ip("route", "get", net.internal_ip(leader), check=False)
    assert route.returncode != 0, route.stdout  # no route at all (never the default one)

    # ... and does all its work through the external one.
    history = History()
    for name in cluster.names:
        event = new_event()
        op = history.append("seg", [event[0]], name)
        kind, body = cluster.append(name, "seg", [event])
        assert history.complete(op, kind, body) == "ok", (name, kind, body)
    logs = cluster.wait_converged(cluster.names, at_least=len(history.ops))
    check(history, logs)

    # Connections inside each node's namespace: cluster ones only between internal
    # addresses on the internal port; on external addresses only the client.
    internal_net = net.internal_subnet.rsplit(".", 1)[0] + "."
    for node in cluster.names:
        conns = net.established(node)
        assert conns, node
        for local, peer in conns:
            local_ip, peer_ip = local.rsplit(":", 1)[0], peer.rsplit(":", 1)[0]
            if local_ip == net.internal_ip(node):
                assert peer_ip.startswith(internal_net) and peer_ip != net.internal_ip(node), \
                    (node, local, peer)
                assert str(hosts.INTERNAL_PORT) in (local.rsplit(":", 1)[1],
                                                    peer.rsplit(":", 1)[1]), (node, local, peer)
            else:
                assert local_ip == net.external_ip(node), (node, local, peer)
                assert peer_ip == net.client_ip, (node, local, peer)
        print(f"{node}: {len(conns)} established: "
              f"{sorted(p.rsplit(':', 1)[0] for _, p in conns)}")

    # A client request sent from a host on the internal network to a node's internal
    # endpoint: refused by name.
    args = json.dumps({"stream": "intruder", "events": [["0e4c1c0e-8f7b-4a8e-9d1e-3c9b7a1d2f40",
                                                           "T", "", "", True]]})
    answer = net.probe(leader, "request", net.internal_ip(follower), str(hosts.INTERNAL_PORT),
                       "append", args, "5")
    assert answer["reply"] is not None, answer
    _, kind, body = answer["reply"]
    assert kind == "error" and body["code"] == "bad_request", body
    assert "external endpoint" in body["message"], body
    print(f"client request on {follower}'s internal endpoint: {body['message']}")
    assert not any(e[1] == "intruder" for e in cluster.read_all(follower))
    assert cluster.wait_for_leader() == leader


def test_teardown_leaves_nothing_and_stale_leftovers_are_swept(tmp_path):
    """A network with a running node is destroyed completely; leftovers of a dead run (a
    pid that no longer exists) are found and removed by the sweep."""
    net = new_network(1)
    cluster = hosts.HostsCluster(net, tmp_path / "c")
    try:
        cluster.start()
        wait_until(lambda: cluster.info("node1"), 20, "node1 answers", cluster)
        pid = cluster.procs["node1"].pid
    finally:
        cluster.stop_all(graceful=False)
        net.destroy()
    assert net.leftovers() == []
    with pytest.raises(ProcessLookupError):
        import os
        os.kill(pid, 0)

    # a leftover of a run that died without cleaning up (pid 2**22 + 1 exceeds pid_max)
    dead = 4194305
    stale_ns = f"esn-{dead}-node1"
    hosts.ip("netns", "add", stale_ns)
    hosts.ip("link", "add", f"esn{dead}c", "type", "veth", "peer", "name", f"esn{dead}x")
    try:
        removed = hosts.sweep_stale()
        assert stale_ns in removed and f"esn{dead}c" in removed, removed
        assert stale_ns not in hosts.ip("netns", "list").stdout
        assert hosts.ip("link", "show", f"esn{dead}c", check=False).returncode != 0
    finally:
        hosts.ip("netns", "del", stale_ns, check=False)
        hosts.ip("link", "del", f"esn{dead}c", check=False)
