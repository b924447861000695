"""``esnode certs``: a test CA and a node certificate that Python's ``ssl`` accepts for a
real TLS handshake on 127.0.0.1."""

from __future__ import annotations

import socket
import ssl
import stat
import threading

from typer.testing import CliRunner

from esnode.cli.main import app


def test_node_certificate_serves_tls_that_the_ca_verifies(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["certs", "create-ca", "--out", str(tmp_path)]).exit_code == 0
    result = runner.invoke(app, ["certs", "create-node", "node1", "--ca", str(tmp_path),
                                 "--out", str(tmp_path), "-H", "127.0.0.1", "-H", "localhost"])
    assert result.exit_code == 0, result.output
    for key in ("ca.key", "node1.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600
    again = runner.invoke(app, ["certs", "create-ca", "--out", str(tmp_path)])
    assert again.exit_code == 1 and "already exists" in again.output

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "node1.crt", tmp_path / "node1.key")
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"hello over TLS")

    server = threading.Thread(target=serve)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.recv(100) == b"hello over TLS"
                assert tls.getpeercert()["subject"] == ((("commonName", "node1"),),)
    finally:
        server.join(10)
        listener.close()
