"""Key files, the [security] topology section, the ZAP handler's decisions and the refusal
log's rate limit: the pure parts of docs/security.md."""

from __future__ import annotations

import logging
import os
import stat

import pytest
import zmq
import zmq.auth
from zmq.utils import z85
from typer.testing import CliRunner

from esnode.cli.main import app
from esnode.client import InvalidConnectionString, parse_connection_string
from esnode.core.config import TopologyError, load_topology, parse_topology
from esnode.transport.security import (
    ANY_CLIENT,
    EXTERNAL_DOMAIN,
    INTERNAL_DOMAIN,
    KeyFileError,
    NetworkSecurity,
    RefusalLog,
    ZapHandler,
    generate_keypair,
    key_hex,
    load_public_key,
    load_secret_key,
    node_security,
)
from tests.security.keys import secure_topology


def test_generate_writes_a_private_secret_and_refuses_to_overwrite(tmp_path):
    public_path, secret_path = generate_keypair(tmp_path / "node1")
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    public, secret = load_secret_key(secret_path)
    assert load_public_key(public_path) == public and zmq.curve_public(secret) == public
    assert zmq.auth.load_certificate(secret_path) == (public, secret)  # ZeroMQ's format
    with pytest.raises(KeyFileError, match="already exists"):
        generate_keypair(tmp_path / "node1")


def test_a_secret_readable_by_others_is_refused(tmp_path):
    _, secret_path = generate_keypair(tmp_path / "node1")
    os.chmod(secret_path, 0o640)
    with pytest.raises(KeyFileError, match="readable by others.*chmod 600"):
        load_secret_key(secret_path)
    assert load_secret_key(secret_path, allow_readable=True)  # demo keys only


def test_a_tampered_key_file_is_refused(tmp_path):
    _, secret_path = generate_keypair(tmp_path / "node1")
    other_public, _ = zmq.curve_keypair()
    text = secret_path.read_text()
    public = load_secret_key(secret_path)[0].decode()
    secret_path.write_text(text.replace(public, other_public.decode()))
    with pytest.raises(KeyFileError, match="does not belong"):
        load_secret_key(secret_path)
    (tmp_path / "bad.key").write_text('public-key = "short"\n')
    with pytest.raises(KeyFileError, match="no public-key"):
        load_public_key(tmp_path / "bad.key")


def test_cli_generates_and_shows_keys(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["keys", "generate", "node1", "external", "--dir",
                                 str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "external.key_secret").stat().st_mode) == 0o600
    shown = runner.invoke(app, ["keys", "show", str(tmp_path / "external.key")])
    public = load_public_key(tmp_path / "external.key")
    assert f"z85: {public.decode()}" in shown.output and key_hex(public) in shown.output
    again = runner.invoke(app, ["keys", "generate", "node1", "--dir", str(tmp_path)])
    assert again.exit_code == 1 and "already exists" in again.output


def test_security_section_loads_keys_relative_to_the_file(tmp_path):
    generate_keypair(tmp_path / "keys" / "n1")
    generate_keypair(tmp_path / "keys" / "external")
    (tmp_path / "t.toml").write_text("""
[security]
key_dir = "keys"
external_key = "keys/external"
[[nodes]]
name = "n1"
mem_db = true
internal_host = "127.0.0.1"
internal_port = 3001
external_host = "127.0.0.1"
external_port = 3002
""")
    topology = load_topology(tmp_path / "t.toml")
    sec = node_security(topology, topology.node("n1"))
    assert sec.internal.domain == INTERNAL_DOMAIN and sec.external.allow_any
    assert sec.member_keys["n1"] == load_public_key(tmp_path / "keys" / "n1.key")
    assert sec.internal.allowed == {}  # a node never needs to accept its own key


def test_missing_and_shared_keys_are_clear_errors(tmp_path):
    topology = secure_topology(tmp_path, ("n1", "n2"))
    (tmp_path / "keys" / "n2.key").unlink()
    with pytest.raises(KeyFileError, match="n2.key: no such key file"):
        node_security(topology, topology.node("n1"))
    (tmp_path / "keys" / "n2.key").write_text((tmp_path / "keys" / "n1.key").read_text())
    with pytest.raises(KeyFileError, match="same internal key"):
        node_security(topology, topology.node("n1"))


def test_public_key_in_the_topology_is_checked():
    node = {"name": "n1", "mem_db": True, "internal_host": "h", "internal_port": 1,
            "external_host": "h", "external_port": 2, "public_key": "x" * 39}
    with pytest.raises(TopologyError, match="public_key: needs security.key_dir"):
        parse_topology({"nodes": [node]})
    with pytest.raises(TopologyError, match="40 Z85 characters"):
        parse_topology({"security": {"key_dir": "k"}, "nodes": [node]})
    with pytest.raises(TopologyError, match="security.nope: unknown key"):
        parse_topology({"security": {"nope": 1}, "nodes": [node]})


def zap(net: NetworkSecurity, key: bytes, mechanism: bytes = b"CURVE",
        domain: bytes | None = None) -> list[bytes]:
    handler = ZapHandler(None, net, RefusalLog(logging.getLogger("t")), "internal")
    creds = [z85.decode(key)] if mechanism == b"CURVE" else []
    return handler.answer([b"1.0", b"7", domain or net.domain.encode(), b"10.0.0.9", b"",
                           mechanism, *creds])


def test_zap_accepts_listed_keys_with_their_member_as_user_id():
    public, secret = zmq.curve_keypair()
    member, _ = zmq.curve_keypair()
    stranger, _ = zmq.curve_keypair()
    net = NetworkSecurity(INTERNAL_DOMAIN, public, secret, {member: "n2"})
    assert zap(net, member)[2:5] == [b"200", b"OK", b"n2"]
    assert zap(net, stranger)[2] == b"400"
    assert zap(net, member, mechanism=b"NULL")[2] == b"400"
    assert zap(net, member, domain=EXTERNAL_DOMAIN.encode())[2] == b"400"
    open_net = NetworkSecurity(EXTERNAL_DOMAIN, public, secret, {}, allow_any=True)
    assert zap(open_net, stranger)[4] == ANY_CLIENT.encode()


def test_refusal_log_rate_limits_and_counts(caplog):
    now = [0.0]
    logger = logging.getLogger("esnode.test-refusals")
    refusals = RefusalLog(logger, per_peer=3, interval=10.0, max_lines=5, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, "esnode.test-refusals")
    for i in range(100_000):
        refusals.refuse(f"peer{i % 4}", "bad_request", "refused %s", i)
    assert len(caplog.records) == 5  # the global cap within one interval
    now[0] = 11.0
    refusals.refuse("peer0", "bad_request", "refused again")
    summary = caplog.records[5].getMessage()
    assert "refused 99995 more messages from 4 peers" in summary
    assert "100000 refusals since start (bad_request=100000)" in summary
    assert caplog.records[6].getMessage() == "refused again"
    assert refusals.total == 100_001


@pytest.mark.parametrize("option", ["serverKey={hex}", "serverKey={z85}"])
def test_server_key_in_the_connection_string(option):
    public, _ = zmq.curve_keypair()
    from urllib.parse import quote
    text = option.format(hex=key_hex(public), z85=quote(public.decode(), safe=""))
    settings = parse_connection_string(f"esnode://127.0.0.1:2113?{text}")
    assert settings.server_key == public
    assert parse_connection_string(settings.to_uri()).server_key == public


def test_bad_server_key_and_lone_client_key_are_refused():
    with pytest.raises(InvalidConnectionString, match="serverKey: expected a CURVE public key"):
        parse_connection_string("esnode://h:1?serverKey=abc")
    with pytest.raises(InvalidConnectionString, match="clientKeyFile needs serverKey"):
        parse_connection_string("esnode://h:1?clientKeyFile=/k.key_secret")


def test_the_shipped_secure_example_loads_its_demo_keys_and_says_so(caplog):
    from pathlib import Path

    from esnode.transport.security import warn_if_insecure

    example = Path(__file__).parents[2] / "examples" / "secure-three-node-local.toml"
    topology = load_topology(example)
    caplog.set_level(logging.WARNING, "esnode.security")
    for node in topology.nodes:
        sec = node_security(topology, node)
        assert sec.internal and sec.external and sec.demo_keys
        warn_if_insecure(sec, node.name)
    assert caplog.text.count("DEMO KEYS") == 3 and "INSECURE" not in caplog.text


def test_a_node_without_keys_says_loudly_that_it_is_insecure(caplog):
    from esnode.transport.security import warn_if_insecure
    from tests.conftest import single_node_topology

    topology = single_node_topology()
    caplog.set_level(logging.WARNING, "esnode.security")
    warn_if_insecure(node_security(topology, topology.nodes[0]), "node1")
    assert "INSECURE: node node1 runs its internal (cluster) and external (client) networks " \
           "in PLAINTEXT" in caplog.text
