"""The esnode command's client commands, run with typer's CliRunner against the fake node
(and the real node once its storage exists)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from esnode.cli import main as cli
from esnode.cli.main import app
from tests.client.conftest import endpoint, fake, real_node_endpoint  # noqa: F401 - fixtures
from tests.conftest import free_port


def invoker(endpoint: str, monkeypatch):
    """``run(*args, code=0)``: the esnode command against ``endpoint``, exit code checked."""
    monkeypatch.setenv("ESNODE_CONNECT", endpoint)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
        assert result.exit_code == code, (result.output, result.stderr)
        return result

    return invoke


@pytest.fixture
def run(endpoint, monkeypatch):  # noqa: F811
    return invoker(endpoint, monkeypatch)


def lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_append_read_and_json_output(run):
    run("append", "cli-1", "--type", "OrderPlaced", "--data", '{"total": 12}',
        "--metadata", '{"by": "cli"}', "--expected-version", "no-stream")
    [doc] = lines(run("append", "cli-1", "--type", "OrderShipped", "-e", "0", "--json"))
    assert doc["version"] == 1 and doc["stream"] == "cli-1"
    table = run("read", "cli-1").stdout
    assert "OrderPlaced" in table and "OrderShipped" in table and "total" in table
    docs = lines(run("read", "cli-1", "--json"))
    assert [d["type"] for d in docs] == ["OrderPlaced", "OrderShipped"]
    assert docs[0]["data"] == {"total": 12} and docs[0]["metadata"] == {"by": "cli"}
    assert [d["version"] for d in lines(run("read", "cli-1", "--backwards", "--limit", "1",
                                            "--json"))] == [1]
    assert [d["version"] for d in lines(run("read", "cli-1", "--from", "1", "--json"))] == [1]
    all_docs = lines(run("read-all", "--json", "--backwards", "--limit", "2"))
    assert [d["type"] for d in all_docs] == ["OrderShipped", "OrderPlaced"]


def test_given_event_id_makes_the_append_idempotent_in_output(run):
    eid = "6f1c0c43-2b9f-4a59-9a51-2f4f1b7f8a11"
    [doc] = lines(run("append", "cli-id", "--type", "T", "--id", eid, "--json"))
    assert doc["event_id"] == eid


def test_subscribe_prints_history_then_stops_at_the_limit(run):
    for i in range(3):
        run("append", "cli-sub", "--type", f"E{i}")
    docs = lines(run("subscribe", "cli-sub", "--json", "--limit", "3"))
    assert [d["type"] for d in docs] == ["E0", "E1", "E2"]
    docs = lines(run("subscribe", "cli-sub", "--from", "0", "--json", "--limit", "2"))
    assert [d["version"] for d in docs] == [1, 2]
    text = run("subscribe", "cli-sub", "--limit", "3")
    assert "cli-sub@2" in text.stdout


def test_delete_metadata_status_and_ping(run):
    run("append", "cli-del", "--type", "T")
    run("metadata", "set", "cli-del", '{"$maxCount": 3, "owner": "me"}')
    [doc] = lines(run("metadata", "get", "cli-del", "--json"))
    assert doc["metadata"] == {"$maxCount": 3, "owner": "me"}
    run("delete", "cli-del", "--tombstone")
    failed = run("read", "cli-del", code=1)
    assert failed.stderr.strip().startswith("esnode: stream_deleted:")
    assert len(failed.stderr.strip().splitlines()) == 1
    members = lines(run("status", "--json"))
    assert members and all({"name", "state", "alive", "epoch", "writer_position",
                            "commit_position"} <= m.keys() for m in members)
    assert "state" in run("status").stdout
    [pong] = lines(run("ping", "--json"))
    assert pong["state"] == "Leader" and pong["rtt_ms"] >= 0


@pytest.mark.parametrize(("args", "message"), [
    (["append", "s", "--type", "T", "--data", "{bad"], "--data is not valid JSON"),
    (["append", "s", "--type", "T", "--id", "nope"], "not a UUID"),
    (["append", "s", "--type", "T", "-e", "sometimes"], "--expected-version"),
    (["metadata", "set", "s", "[1]"], "JSON object"),
    (["metadata", "set", "s", "{x"], "the metadata is not valid JSON"),
    (["subscribe", "s", "--from", "later"], "--from"),
    (["ping", "--connect", "esnode://host:99999"], "bad port '99999'"),
])
def test_bad_input_is_one_line_and_exit_code_2(run, args, message):
    result = run(*args, code=2)
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_failed_operation_is_one_line_and_exit_code_1(run):
    run("append", "cli-wev", "--type", "T")
    result = run("append", "cli-wev", "--type", "T", "-e", "no-stream", code=1)
    assert result.stderr.startswith("esnode: wrong_expected_version:")


def test_unreachable_node(monkeypatch):
    monkeypatch.delenv("ESNODE_CONNECT", raising=False)
    target = f"esnode://127.0.0.1:{free_port()}?maxDiscoverAttempts=1&gossipTimeout=100"
    result = CliRunner().invoke(app, ["ping", "--connect", target])
    assert result.exit_code == 1 and "esnode: unavailable: no node answered" in result.stderr


def test_default_connect_comes_from_topology_toml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.default_connect() == "tcp://127.0.0.1:2113"
    (tmp_path / "topology.toml").write_text(
        '[cluster]\nname = "t"\nsize = 3\n' + "".join(
            f'[[nodes]]\nname = "n{i}"\nmem_db = true\ninternal_host = "127.0.0.1"\n'
            f'internal_port = {3000 + i}\nexternal_host = "0.0.0.0"\nexternal_port = {4000 + i}\n'
            f'external_advertise_host = "10.0.0.{i}"\n' for i in (1, 2, 3)))
    assert cli.default_connect() == "esnode://10.0.0.1:4001,10.0.0.2:4002,10.0.0.3:4003"


def test_help_teaches_with_examples():
    runner = CliRunner()
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    for command in ("append", "read", "read-all", "subscribe", "delete", "metadata", "status",
                    "ping"):
        assert command in top.stdout
    for command in (["append"], ["read"], ["subscribe"], ["delete"], ["metadata", "set"]):
        text = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"}).stdout
        assert "Examples" in text and f"esnode {' '.join(command)}" in text and "--connect" in text


def test_the_default_endpoint_is_said_and_refused_at_once(tmp_path, monkeypatch):
    """No --connect and no ./topology.toml: the command names the default it tried and
    gives up in about a second when nothing listens (not after the client's 11 s)."""
    import time

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ESNODE_CONNECT", raising=False)
    monkeypatch.setattr(cli, "DEFAULT_ENDPOINT", f"tcp://127.0.0.1:{free_port()}")
    started = time.monotonic()
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 1 and time.monotonic() - started < 3
    assert f"trying {cli.DEFAULT_ENDPOINT}" in result.stderr
    assert "nothing listens on 127.0.0.1:" in result.stderr and "(the default)" in result.stderr


def test_piped_tables_keep_whole_cells(run):
    """Not a terminal (a pipe, CliRunner): no 80-column cut, whatever COLUMNS says."""
    stream = "a-rather-long-stream-name-" + "x" * 90
    run("append", stream, "--type", "SomethingHappenedWithALongName")
    table = CliRunner().invoke(app, ["read", stream], env={"COLUMNS": "80"}).stdout
    assert stream in table and "SomethingHappenedWithALongName" in table


def test_prefix_options_filter_all_on_the_node(real_node_endpoint, monkeypatch):  # noqa: F811
    run_ = invoker(real_node_endpoint, monkeypatch)
    for stream, event_type in [("order-1", "OrderPlaced"), ("cart-1", "CartOpened"),
                               ("order-2", "OrderShipped"), ("order-2", "Note")]:
        run_("append", stream, "--type", event_type)
    docs = lines(run_("read-all", "--json", "--stream-prefix", "order-", "--type-prefix",
                      "Order"))
    assert [d["type"] for d in docs] == ["OrderPlaced", "OrderShipped"]
    docs = lines(run_("subscribe", "$all", "--json", "--limit", "2", "--stream-prefix", "cart-",
                      "--stream-prefix", "order-1"))
    assert [d["stream"] for d in docs] == ["order-1", "cart-1"]
    failed = run_("subscribe", "order-1", "--type-prefix", "X", code=2)
    assert "'$all' subscriptions only" in failed.stderr


def test_group_commands_and_consume(real_node_endpoint, monkeypatch):  # noqa: F811
    run_ = invoker(real_node_endpoint, monkeypatch)
    for i in range(3):
        run_("append", "cli-work", "--type", f"Job{i}")
    run_("group", "create", "cli-work", "billing", "--start-from", "start", "--strategy",
         "Pinned", "--max-retry-count", "2")
    failed = run_("group", "create", "cli-work", "billing", code=1)
    assert failed.stderr.strip().startswith("esnode: group_exists:")
    bad = run_("group", "create", "cli-work", "x", "--strategy", "Random", code=2)
    assert "consumer_strategy" in bad.stderr
    docs = lines(run_("consume", "cli-work", "billing", "--json", "--limit", "3"))
    assert [d["type"] for d in docs] == ["Job0", "Job1", "Job2"]
    assert all(d["retry_count"] == 0 for d in docs)
    run_("group", "update", "cli-work", "billing", "--max-retry-count", "5")
    [doc] = lines(run_("group", "info", "cli-work", "billing", "--json"))
    assert doc["settings"]["max_retry_count"] == 5 and doc["settings"]["consumer_strategy"] \
        == "Pinned" and doc["checkpoint"] >= -1
    [listed] = lines(run_("group", "list", "--json"))
    assert listed["group"] == "billing"
    assert "0 parked" in run_("group", "replay-parked", "cli-work", "billing").stderr
    run_("group", "delete", "cli-work", "billing")
    missing = run_("group", "info", "cli-work", "billing", code=1)
    assert "group_not_found" in missing.stderr
