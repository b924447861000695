"""TLS on the HTTP API (docs/http.md, "TLS"): ``esnode certs`` makes a CA and node
certificates; a node with ``http_cert_file``/``http_key_file`` answers HTTPS that verifies
against the CA and refuses plaintext; its links, redirects and the cluster's 307s to the
leader use https; the topology refuses half a configuration."""

from __future__ import annotations

import dataclasses
import json
import ssl
import stat
import uuid

import pytest
import requests
from typer.testing import CliRunner

from esnode.actors.node import Node
from esnode.cli.main import app
from esnode.core.config import TopologyError, load_topology, parse_topology
from esnode.httpapi.tls import TlsError, server_context
from tests.cluster.conftest import FAST
from tests.cluster.harness import wait_until
from tests.conftest import free_port, single_node_topology, start_leader
from tests.http.balancer import Balancer
from tests.http.cluster import make_certs
from tests.http.conftest import ATOM, EVENTS, ev


def test_esnode_certs_makes_a_ca_and_node_certificates_that_verify(tmp_path):
    runner = CliRunner()
    out = tmp_path / "certs"
    made = runner.invoke(app, ["certs", "create-ca", "--out", str(out)])
    assert made.exit_code == 0, made.output
    node = runner.invoke(app, ["certs", "create-node", "node1", "--out", str(out),
                               "--ca-cert", str(out / "ca.crt"), "--ca-key", str(out / "ca.key"),
                               "--ip", "127.0.0.1", "--dns", "node1.example"])
    assert node.exit_code == 0, node.output
    for key in ("ca.key", "node1.key"):
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600
    again = runner.invoke(app, ["certs", "create-ca", "--out", str(out)])
    assert again.exit_code == 1 and "exists already" in again.output
    no_ca = runner.invoke(app, ["certs", "create-node", "n", "--ca-cert", str(tmp_path / "x")])
    assert no_ca.exit_code == 1 and "esnode certs create-ca" in no_ca.output

    from cryptography import x509

    cert = x509.load_pem_x509_certificate((out / "node1.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["node1.example"]
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate((out / "ca.crt").read_bytes()))


def https_session(ca) -> requests.Session:
    """A session that trusts only ``ca`` (``trust_env`` off: REQUESTS_CA_BUNDLE in the
    environment would otherwise win over ``verify``)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca)
    return session


def tls_topology(tmp_path, **node):
    ca = make_certs(tmp_path / "certs", ["node1", "other"])
    port = free_port()
    topology = single_node_topology(external_http_port=port,
                                    http_cert_file=str(tmp_path / "certs/node1.crt"),
                                    http_key_file=str(tmp_path / "certs/node1.key"), **node)
    return topology, port, ca


def test_a_node_with_tls_answers_https_with_the_ca_and_refuses_plaintext(tmp_path):
    topology, port, ca = tls_topology(tmp_path)
    node = start_leader(Node(topology, "node1"))
    session = https_session(ca)
    try:
        base = f"https://127.0.0.1:{port}"
        assert session.get(base + "/ping", timeout=10).json()["text"].startswith("Ping")
        written = session.post(base + "/streams/tls-1", data=json.dumps([ev(), ev()]),
                               headers={"Content-Type": EVENTS}, timeout=10)
        assert written.status_code == 201
        assert written.headers["Location"] == base + "/streams/tls-1/0"
        page = session.get(base + "/streams/tls-1", headers={"Accept": ATOM}, timeout=10).json()
        assert {link["uri"].split(":")[0] for link in page["links"]} == {"https"}
        assert page["entries"][0]["id"].startswith(base + "/streams/tls-1/")
        # one event without an id: the 307 to the idempotent URI is https too
        single = session.post(base + "/streams/tls-1", data=b"{}", allow_redirects=False,
                              headers={"Content-Type": "application/json",
                                       "ES-EventType": "T"}, timeout=10)
        assert single.status_code == 307 and single.headers["Location"].startswith(base)
        assert session.get(base + "/", allow_redirects=False, timeout=10).headers[
            "Location"] == base + "/dashboard/"

        with pytest.raises(requests.exceptions.SSLError):  # a client without the CA
            requests.get(base + "/ping", timeout=10)
        with pytest.raises(requests.exceptions.ConnectionError):  # plaintext on the TLS port
            requests.get(f"http://127.0.0.1:{port}/ping", timeout=10)
        context = server_context(str(tmp_path / "certs/node1.crt"),
                                 str(tmp_path / "certs/node1.key"))
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert session.get(base + "/health/live", timeout=10).status_code == 204
    finally:
        session.close()
        node.stop()


def test_a_node_whose_key_does_not_match_its_certificate_does_not_start(tmp_path):
    topology, _, _ = tls_topology(tmp_path)
    node_config = dataclasses.replace(topology.nodes[0],
                                      http_key_file=str(tmp_path / "certs/other.key"))
    bad = dataclasses.replace(topology, nodes=(node_config,))
    with pytest.raises(TlsError, match="not a usable PEM certificate and matching key"):
        Node(bad, "node1").start()
    missing = dataclasses.replace(bad, nodes=(dataclasses.replace(
        node_config, http_cert_file=str(tmp_path / "nope.crt")),))
    with pytest.raises(TlsError, match="nope.crt: no such file"):
        Node(missing, "node1").start()


def test_the_topology_takes_both_files_or_neither_relative_to_its_folder(tmp_path):
    base = {"name": "n1", "internal_host": "127.0.0.1", "internal_port": 2114,
            "external_host": "127.0.0.1", "external_port": 2113, "mem_db": True}

    def parse(**node):
        return parse_topology({"cluster": {"size": 1}, "nodes": [{**base, **node}]})

    with pytest.raises(TopologyError, match="set both http_cert_file and http_key_file"):
        parse(external_http_port=2115, http_cert_file="a.crt")
    with pytest.raises(TopologyError, match="has no HTTP API"):
        parse(http_cert_file="a.crt", http_key_file="a.key")
    assert parse(external_http_port=2115).nodes[0].http_scheme == "http"
    path = tmp_path / "topology.toml"
    path.write_text('[cluster]\nsize = 1\n[[nodes]]\nname = "n1"\nmem_db = true\n'
                    'internal_host = "127.0.0.1"\ninternal_port = 2114\n'
                    'external_host = "127.0.0.1"\nexternal_port = 2113\n'
                    'external_http_port = 2115\nhttp_cert_file = "certs/n1.crt"\n'
                    'http_key_file = "certs/n1.key"\n')
    node = load_topology(path).nodes[0]
    assert node.http_cert_file == str(tmp_path / "certs/n1.crt")
    assert node.http_key_file == str(tmp_path / "certs/n1.key")
    assert node.http_scheme == "https"


@pytest.fixture
def tls_cluster(make_http_cluster):
    """A started 3-node cluster (FAST timers) whose HTTP APIs speak only HTTPS."""
    cluster = make_http_cluster(3, tls=True, **FAST)
    cluster.start()
    cluster.wait_for_leader(timeout=30, settled=True)
    return cluster


@pytest.mark.slow
def test_a_tls_cluster_redirects_to_the_leader_over_https(tls_cluster):
    cluster = tls_cluster
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.names if n != leader)
    session = https_session(cluster.ca)
    try:
        body = json.dumps([ev(eid=str(uuid.uuid4()))])
        headers = {"Content-Type": EVENTS, "ES-RequireLeader": "true"}
        r = session.post(cluster.http(follower) + "/streams/tls-c", data=body, headers=headers,
                         allow_redirects=False, timeout=15)
        assert r.status_code == 307, r.text
        assert r.headers["Location"] == cluster.http(leader) + "/streams/tls-c"
        assert r.headers["Location"].startswith("https://")
        followed = session.post(r.headers["Location"], data=body, headers=headers, timeout=15)
        assert followed.status_code == 201, followed.text
        forwarded = session.post(cluster.http(follower) + "/streams/tls-c",
                                 data=json.dumps([ev()]), headers={"Content-Type": EVENTS},
                                 timeout=15)
        assert forwarded.status_code == 201
        assert forwarded.headers["Location"] == cluster.http(follower) + "/streams/tls-c/1"
        members = session.get(cluster.http(follower) + "/gossip", timeout=10).json()["members"]
        assert {m["name"]: m["httpEndPointPort"] for m in members} == cluster.http_ports
    finally:
        session.close()


@pytest.mark.slow
def test_the_tls_haproxy_example_verifies_the_nodes_and_serves_https(tls_cluster, tmp_path):
    from esnode.httpapi import tls

    certs = tls_cluster.ca.parent
    ca = (certs / "ca.crt").read_bytes(), (certs / "ca.key").read_bytes()
    cert, key = tls.create_node_cert(*ca, "lb", ["127.0.0.1", "localhost"])
    (certs / "lb.pem").write_bytes(cert + key)
    lb = Balancer("haproxy-tls", tls_cluster.http_ports, tmp_path, certs=certs)
    try:
        url, session = lb.url, lb.session
        assert url.startswith("https://")
        for i in range(4):  # round robin over nodes, each reached over verified TLS
            r = session.post(f"{url}/streams/lb-tls", data=json.dumps([ev(data={"i": i})]),
                             headers={"Content-Type": EVENTS}, timeout=15,
                             allow_redirects=False)
            assert r.status_code == 201, (r.status_code, r.text)
            assert r.headers["Location"] == f"{url}/streams/lb-tls/{i}"

        def feed() -> bool:
            r = session.get(f"{url}/streams/lb-tls", headers={"Accept": ATOM}, timeout=10)
            body = r.json()
            assert {link["uri"].split("/streams/")[0] for link in body["links"]} == {url}
            return len(body["entries"]) == 4
        wait_until(feed, 10, "the 4 events through the TLS balancer", tls_cluster)
    finally:
        lb.stop()
