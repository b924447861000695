"""``HttpCluster``: the process-level test cluster (tests/cluster/harness.py) with every node's
HTTP API on a free port, plus a fixture that always ends its processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.conftest import FAST
from tests.cluster.harness import Cluster
from tests.conftest import free_port


def make_certs(folder: Path, names: list[str]) -> Path:
    """A CA and one certificate per node (for 127.0.0.1 and localhost), as ``esnode certs``
    makes them; the CA certificate's path."""
    from esnode.httpapi import tls

    ca = tls.create_ca()
    tls.write_pair(folder, "ca", *ca)
    for name in names:
        tls.write_pair(folder, name, *tls.create_node_cert(*ca, name, ["127.0.0.1",
                                                                      "localhost"]))
    return folder / "ca.crt"


class HttpCluster(Cluster):
    """``tls``: every node's HTTP API speaks HTTPS with a certificate of a fresh CA (``ca``)."""

    def __init__(self, directory: Path, size: int = 3, tls: bool = False, **timers: int):
        self.ca = None
        if tls:
            self.ca = make_certs(Path(directory) / "certs", [f"node{i + 1}" for i in range(size)])
        super().__init__(directory, size, **timers)

    def topology_text(self, name: str = "test") -> str:
        if not hasattr(self, "http_ports"):
            self.http_ports = {n: free_port() for n in self.names}
        lines = super().topology_text(name).split("\n")
        out = []
        for line in lines:
            out.append(line)
            if line.startswith('name = "node'):
                node = line.split('"')[1]
                out.append(f"external_http_port = {self.http_ports[node]}")
                if self.ca is not None:
                    out.append(f'http_cert_file = "certs/{node}.crt"')
                    out.append(f'http_key_file = "certs/{node}.key"')
        return "\n".join(out)

    def http(self, name: str) -> str:
        scheme = "https" if self.ca is not None else "http"
        return f"{scheme}://127.0.0.1:{self.http_ports[name]}"


@pytest.fixture
def make_http_cluster(request, tmp_path) -> Iterator[Callable[..., HttpCluster]]:
    clusters: list[HttpCluster] = []

    def make(size: int = 3, tls: bool = False, **timers: int) -> HttpCluster:
        cluster = HttpCluster(tmp_path / f"cluster{len(clusters)}", size, tls, **timers)
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop_all(graceful=False)
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for cluster in clusters:
                print(f"\n===== node logs of {cluster.dir} =====\n{cluster.logs()}")


@pytest.fixture
def http_cluster(make_http_cluster) -> HttpCluster:
    """A started 3-node cluster (FAST timers) with HTTP, settled on a leader."""
    c = make_http_cluster(3, **FAST)
    c.start()
    c.wait_for_leader(timeout=30, settled=True)
    return c
