"""A node's figures: Prometheus metrics on its own port, `esnode stats`, and the live
`esnode status --watch` table; the metrics port is released when the node stops."""

from __future__ import annotations

import json
import socket
import urllib.request

from typer.testing import CliRunner

from esnode.actors.node import Node
from esnode.cli.main import app
from tests.conftest import free_port, single_node_topology, start_leader
from tests.node.rawclient import RawClient, event

METRICS = ["esnode_write_requests_total", "esnode_events_written_total",
           "esnode_commit_seconds_bucket", "esnode_commit_batch_requests_bucket",
           "esnode_replica_write_seconds_bucket", "esnode_replicated_records_total",
           "esnode_term", "esnode_is_leader", "esnode_writer_position", "esnode_commit_position",
           "esnode_subscriptions", "esnode_storage_live_bytes", "esnode_storage_file_bytes",
           "esnode_storage_map_bytes", "esnode_scavenge_running", 'esnode_node_state{state="Leader"}',
           'esnode_queue_depth{actor="storage"}', "esnode_member_writer_position",
           "esnode_member_alive", "esnode_replication_lag_records",
           "esnode_replication_lag_seconds", "esnode_clients",
           "esnode_subscriptions_all_lag_max"]


def test_metrics_stats_and_watch(tmp_path, capsys):
    port, http = free_port(), free_port()
    node = start_leader(Node(single_node_topology(str(tmp_path / "db"), metrics_port=port,
                                                  external_http_port=http), "node1"))
    endpoint = node.transport.external_endpoint
    try:
        client = RawClient(endpoint)
        try:
            for _ in range(3):
                assert client.call("append", {"stream": "m", "events": [event()]})[1] == "ok"
        finally:
            client.close()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read() \
            .decode()
        for name in METRICS:
            assert name in text, name
        assert "esnode_events_written_total 3.0" in text
        # The same on the HTTP API's port.
        on_http = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5)
        assert on_http.headers["Content-Type"].startswith("text/plain")
        assert "esnode_events_written_total 3.0" in on_http.read().decode()

        runner = CliRunner()
        result = runner.invoke(app, ["stats", "--connect", endpoint, "--json"])
        assert result.exit_code == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["state"] == "Leader" and doc["events_written"] == 3
        assert doc["writer_position"] == doc["commit_position"] >= 3
        assert doc["clients"] >= 1 and doc["subscriptions_all_lag_max"] == 0

        from esnode.cli import ops

        result = runner.invoke(app, ["stats", "--connect", endpoint])
        assert "members as this node sees them" in result.stdout
        capsys.readouterr()
        ops.watch(endpoint, 5.0, interval=0.05, rounds=2)  # prints two tables (not a tty)
        watched = capsys.readouterr().out
        assert watched.count("records/s") == 2 and watched.count("node1") >= 2
    finally:
        node.stop()
    with socket.socket() as s:  # the metrics server is gone with the node (no listener)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
