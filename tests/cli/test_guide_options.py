"""Event Store's command-line options for ``esnode run``: what topology they describe, how
they override a topology file, and one clear line (exit 2) for anything wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from esnode.cli import guide
from esnode.cli.main import app
from esnode.core.config import load_topology, read_topology_file

REPO = Path(__file__).resolve().parents[2]
GUIDE_NODE1 = {"mem_db": True, "log": "./logs/log1", "int_ip": "127.0.0.1",
               "ext_ip": "127.0.0.1", "int_tcp_port": "1111", "ext_tcp_port": "1112",
               "int_http_port": "1113", "ext_http_port": "1114", "cluster_size": "3",
               "discover_via_dns": "false", "gossip_seed": "127.0.0.1:2113,127.0.0.1:3113"}


def test_the_guides_first_line_describes_a_three_member_topology(tmp_path):
    topology = guide.guide_topology(guide.parse_options(GUIDE_NODE1), tmp_path)
    me, *peers = topology.nodes
    assert topology.cluster.size == 3 and topology.majority == 2
    assert (me.name, me.internal_bind, me.internal_gossip_port, me.external_bind,
            me.external_http_port, me.mem_db, me.log_dir) == (
        "127.0.0.1:1113", ("127.0.0.1", 1111), 1113, ("127.0.0.1", 1112), 1114, True,
        str(tmp_path / "logs/log1"))
    # The others are known by the endpoint their seeds name, which is also their name.
    assert [(p.name, p.internal_advertise) for p in peers] == [
        ("127.0.0.1:2113", ("127.0.0.1", 2113)), ("127.0.0.1:3113", ("127.0.0.1", 3113))]


def test_defaults_one_durable_node_where_the_client_commands_look(tmp_path):
    topology = guide.guide_topology(guide.parse_options({"db": "db1"}), tmp_path)
    [me] = topology.nodes
    assert me.external_bind == ("127.0.0.1", 2113) and me.internal_bind == ("127.0.0.1", 2114)
    assert me.data_dir == str(tmp_path / "db1") and not me.mem_db


def test_dns_members_come_from_the_resolved_addresses(tmp_path):
    options = guide.parse_options({"int_ip": "10.0.0.1", "int_http_port": "2113",
                                   "cluster_size": "3", "cluster_dns": "cluster.example",
                                   "cluster_gossip_port": "2113"})
    topology = guide.guide_topology(options, tmp_path,
                                    lambda: ["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    assert [n.name for n in topology.nodes] == ["10.0.0.1:2113", "10.0.0.2:2113",
                                                 "10.0.0.3:2113"]


def test_with_config_the_options_override_the_named_node(tmp_path):
    raw = read_topology_file(REPO / "topology.toml")
    options = guide.parse_options({"ext_tcp_port": "9123", "node_priority": "5",
                                   "db": "elsewhere", "ext_http_port": "9124"})
    topology = load_topology(REPO / "topology.toml",
                             guide.override(raw, "node2", options, tmp_path))
    node2 = topology.node("node2")
    assert (node2.external_port, node2.priority, node2.data_dir, node2.external_http_port) \
        == (9123, 5, str(tmp_path / "elsewhere"), 9124)
    assert topology.node("node1").external_port == 2113  # the others untouched
    with pytest.raises(guide.GuideError, match="add --node NAME"):
        guide.override(raw, None, options, tmp_path)


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--mem-db", "--db", "x"], {}, "--db and --mem-db contradict each other"),
    (["--mem-db", "--run-projections=All"], {}, "esnode has no projections"),
    (["--mem-db", "--gossip-seed=127.0.0.1:1", "--cluster-dns", "x.example"], {},
     "contradict"),
    (["--mem-db", "--discover-via-dns=false", "--cluster-dns", "x.example"], {},
     "--discover-via-dns=false contradicts --cluster-dns"),
    (["--mem-db", "--discover-via-dns=maybe"], {}, "expected true or false"),
    (["--mem-db", "--int-tcp-port=70000"], {}, "between 1 and 65535"),
    (["--mem-db", "--cluster-size=3"], {}, "the other nodes are missing"),
    (["--mem-db", "--cluster-size=3", "--gossip-seed=127.0.0.1:2113"], {},
     "names 1 other node(s)"),
    (["--mem-db", "--int-ipp=127.0.0.1"], {}, "unknown option '--int-ipp' (did you mean "
                                               "--int-ip?)"),
    (["--mem-db"], {"ESNODE_EXT_TCP_PROT": "1"}, "unknown environment variable "
                                                 "ESNODE_EXT_TCP_PROT"),
    ([], {"ESNODE_MEM_DB": "true", "ESNODE_DB": "x"}, "contradict"),
    (["--mem-db", "--node", "node1"], {}, "give --config FILE too"),
])
def test_a_bad_option_is_one_line_and_exit_code_2(args, env, message, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", *args], env=env)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, \
        result.stderr


def test_no_topology_and_no_options_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 2
    assert "topology.toml: no such file; give --config FILE, or run one node from options" \
        in result.stderr


def test_unrelated_esnode_variables_are_left_alone():
    assert guide.unknown_environment({"ESNODE_FUZZ_EXAMPLES": "5000", "ESNODE_SIM_SEED": "1",
                                      "ESNODE_CONNECT": "x", "ESNODE_INT_IP": "1"}) is None


def test_every_option_has_its_environment_variable():
    assert guide.BY_FIELD["int_tcp_port"].envvar == "ESNODE_INT_TCP_PORT"
    help_text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).stdout
    for option in guide.OPTIONS:
        assert option.flag in help_text and option.envvar in help_text
