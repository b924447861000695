"""Event Store's cluster guide, followed with esnode: its three command lines (ports shifted to
free ones) make a cluster that survives the loss of a node, and so does its DNS variant
against a real DNS server. No topology file is written or read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib.server import DNSServer

from tests.cluster.harness import Cluster, NoReply, common_free_port, new_event, wait_until
from tests.conftest import free_port
from tests.discovery.test_gossip_discovery import (
    ADDRESSES,
    NAME,
    ClusterResolver,
    free_udp_port,
    loopback_aliases_work,
)


class GuideCluster(Cluster):
    """Three nodes started with the guide's options. A node is named after its gossip
    endpoint (``--int-ip:--int-http-port``), which is also how this harness names it."""

    def __init__(self, directory: Path, hosts: list[str] | None = None,
                 dns: tuple[str, int] | None = None):
        super().__init__(directory, 3)
        self.config.unlink()  # nothing reads a topology file here
        same_ports = hosts is not None  # "separate machines": one address each, same ports
        hosts = hosts or ["127.0.0.1"] * 3
        shared = [common_free_port(hosts) for _ in range(4)] if same_ports else None
        self.lines: dict[str, list[str]] = {}
        self.ports, self.hosts, names = {}, {}, []
        plan = []
        for i, host in enumerate(hosts):
            int_tcp, ext_tcp, int_http, ext_http = shared or [free_port() for _ in range(4)]
            name = f"{host}:{int_http}"
            names.append(name)
            self.ports[name] = (int_http, ext_tcp)
            self.hosts[name] = host
            plan.append((i + 1, name, host, int_tcp, ext_tcp, int_http, ext_http))
        self.names = names
        for i, name, host, int_tcp, ext_tcp, int_http, ext_http in plan:
            line = ["run", "--mem-db", "--log", f"./logs/log{i}", "--int-ip", host,
                    "--ext-ip", host, f"--int-tcp-port={int_tcp}", f"--ext-tcp-port={ext_tcp}",
                    f"--int-http-port={int_http}", f"--ext-http-port={ext_http}",
                    "--cluster-size=3"]
            if dns is None:
                line += ["--discover-via-dns=false", "--gossip-seed=" + ",".join(
                    other for other in names if other != name)]
            else:
                line += ["--cluster-dns", dns[0], f"--cluster-gossip-port={int_http}",
                         "--dns-server", f"127.0.0.1:{dns[1]}"]
            self.lines[name] = line

    def arguments(self, name: str) -> list[str]:
        return self.lines[name]

    def internal(self, name: str) -> str:
        return f"tcp://{name}"


@pytest.fixture
def clusters(request, tmp_path) -> Iterator[list[GuideCluster]]:
    made: list[GuideCluster] = []
    try:
        yield made
    finally:
        for cluster in made:
            cluster.stop_all(graceful=False)
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            for cluster in made:
                print(f"\n===== node logs of {cluster.dir} =====\n{cluster.logs()}")


def appended(cluster: Cluster, node: str, stream: str, event: list) -> bool:
    """One append attempt (the same event id each time: retries are idempotent)."""
    try:
        return cluster.append(node, stream, [event], timeout=5)[0] == "ok"
    except NoReply:
        return False


def survives_losing_a_node(cluster: GuideCluster) -> None:
    """Elect, write through a follower, kill -9 the leader: the other two elect a leader,
    keep writing, and both hold every acknowledged write."""
    cluster.start()
    leader = cluster.wait_for_leader(timeout=30, settled=True)
    follower = next(n for n in cluster.names if n != leader)
    first = new_event()
    kind, body = cluster.append(follower, "guide", [first])
    assert kind == "ok", body
    cluster.kill(leader)
    survivors = [n for n in cluster.names if n != leader]
    cluster.wait_for_leader(timeout=30, among=survivors)
    second = new_event()
    wait_until(lambda: appended(cluster, survivors[0], "guide", second), 30,
               "an append through a survivor", cluster)
    for name in survivors:
        ids = wait_until(lambda n=name: (lambda ids: len(ids) == 2 and ids)(
            [e[0] for e in cluster.read_stream(n, "guide")]), 20, f"{name} to hold both",
            cluster)
        assert ids == [first[0], second[0]]
    # Each node wrote its log where --log said.
    assert sorted(p.parent.name for p in cluster.dir.glob("logs/*/*.log")) == \
        ["log1", "log2", "log3"]


def test_the_guides_three_command_lines_make_a_cluster_that_survives_a_kill(clusters, tmp_path):
    cluster = GuideCluster(tmp_path / "guide")
    clusters.append(cluster)
    survives_losing_a_node(cluster)


@pytest.mark.skipif(not loopback_aliases_work(),
                    reason="127.0.0.2-4 cannot be bound on this machine")
def test_the_guides_dns_variant_against_a_real_dns_server(clusters, tmp_path):
    dns_port = free_udp_port()
    server = DNSServer(ClusterResolver(), port=dns_port, address="127.0.0.1")
    server.start_thread()
    try:
        cluster = GuideCluster(tmp_path / "dns", hosts=ADDRESSES,
                               dns=(NAME.rstrip("."), dns_port))
        clusters.append(cluster)
        survives_losing_a_node(cluster)
    finally:
        server.stop()
