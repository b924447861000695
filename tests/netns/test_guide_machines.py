"""The cluster guide's "separate machines" variant on the hosts tier: one network namespace per
node, each started from its own command line (the same ports on every machine, its own
addresses, the other machines as gossip seeds), internal and external traffic on separate
networks. Killing one machine's node leaves the other two serving."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.test_guide_command_lines import survives_losing_a_node
from tests.netns import hosts

GOSSIP_PORT = 2115
"""The guide's --int-http-port (the same on every machine)."""


class GuideHostsCluster(hosts.HostsCluster):
    """Nodes started from the guide's options instead of a topology file. A node names itself
    after its gossip endpoint; ``info`` translates those names to this harness's."""

    def __init__(self, network: hosts.Network, directory):
        super().__init__(network, directory)
        self.config.unlink()
        self.alias = {f"{network.internal_ip(n)}:{GOSSIP_PORT}": n for n in self.names}

    def arguments(self, name: str) -> list[str]:
        seeds = ",".join(f"{self.net.internal_ip(n)}:{GOSSIP_PORT}" for n in self.names
                         if n != name)
        return ["run", "--mem-db", "--log", f"./logs/log{self.names.index(name) + 1}",
                "--int-ip", self.net.internal_ip(name), "--ext-ip", self.net.external_ip(name),
                f"--int-tcp-port={hosts.INTERNAL_PORT}", f"--ext-tcp-port={hosts.EXTERNAL_PORT}",
                f"--int-http-port={GOSSIP_PORT}", "--ext-http-port=2116", "--cluster-size=3",
                "--discover-via-dns=false", f"--gossip-seed={seeds}"]

    def info(self, name: str, timeout: float = 1.0) -> dict | None:
        body = super().info(name, timeout)
        if body is None:
            return None
        alias = self.alias
        return {**body, "node": alias.get(body["node"], body["node"]),
                "leader": alias.get(body["leader"], body["leader"]),
                "members": [{**m, "name": alias.get(m["name"], m["name"])}
                            for m in body["members"]]}


@pytest.fixture
def guide_cluster(request, network, tmp_path) -> Iterator[GuideHostsCluster]:
    network.heal()
    cluster = GuideHostsCluster(network, tmp_path / "guide")
    try:
        yield cluster
    finally:
        cluster.stop_all(graceful=False)
        network.heal()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            print(f"\n===== node logs of {cluster.dir} =====\n{cluster.logs()}")


def test_the_guides_separate_machines_command_lines(guide_cluster):
    survives_losing_a_node(guide_cluster)
