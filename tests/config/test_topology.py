"""Topology validation: every mistake names the key and the problem."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from esnode.core.config import TopologyError, load_topology, parse_topology

ROOT = Path(__file__).resolve().parents[2]


def node(i: int, **extra) -> dict:
    entry = {"name": f"n{i}", "data_dir": f"data/n{i}", "internal_host": "127.0.0.1",
             "internal_port": 3110 + i, "external_host": "127.0.0.1", "external_port": 3120 + i}
    entry.update(extra)
    return entry


BASE = {"cluster": {"name": "c", "size": 3}, "nodes": [node(1), node(2), node(3)]}


def with_change(fn) -> dict:
    raw = copy.deepcopy(BASE)
    fn(raw)
    return raw


def test_valid_topology_parses():
    topo = parse_topology(BASE)
    assert topo.majority == 2 and topo.node("n2").external_advertise == ("127.0.0.1", 3122)


@pytest.mark.parametrize("change, fragment", [
    (lambda r: r["cluster"].update(size=2), "cluster.size: 2 is even"),
    (lambda r: r["cluster"].update(colour="red"), "cluster.colour: unknown key"),
    (lambda r: r.update(extra={}), "extra: unknown section"),
    (lambda r: r["nodes"][1].pop("internal_port"), "nodes[1].internal_port: missing"),
    (lambda r: r["nodes"][2].update(external_port=3121), "nodes[2].external_port: duplicate port"),
    (lambda r: r["nodes"][0].update(internal_port="x"), "nodes[0].internal_port: must be an integer"),
    (lambda r: r["nodes"][0].update(mem_db=True), "nodes[0]: set exactly one of data_dir"),
    (lambda r: r["nodes"][1].update(name="n1"), "nodes[1].name: duplicate"),
    (lambda r: r["nodes"].pop(), "cluster.size: is 3 but 2"),
    (lambda r: r["nodes"][0].update(external_port=70000), "nodes[0].external_port: port 70000"),
    (lambda r: r.update(timers={"election_timeout_ms": 0}), "timers.election_timeout_ms: must be positive"),
    (lambda r: r.update(discovery={"dns": "es.local"}), "discovery.gossip_port: required"),
    (lambda r: r["nodes"][0].update(external_port=3111), "nodes[0].external_port: same address"),
])
def test_invalid_topology_names_key_and_problem(change, fragment):
    with pytest.raises(TopologyError) as info:
        parse_topology(with_change(change))
    assert fragment in str(info.value)


def test_even_size_allowed_with_confirmation():
    raw = with_change(lambda r: (r["cluster"].update(size=4, allow_even_size=True),
                                 r["nodes"].append(node(4))))
    assert parse_topology(raw).majority == 3


def test_shipped_topology_and_examples_are_valid():
    files = [ROOT / "topology.toml", *sorted((ROOT / "examples").glob("*.toml"))]
    assert len(files) >= 2
    for path in files:
        topo = load_topology(path)
        assert topo.nodes and all(Path(n.data_dir).is_absolute() or n.mem_db for n in topo.nodes)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(TopologyError, match="no such file"):
        load_topology(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster\nname=")
    with pytest.raises(TopologyError, match="not valid TOML"):
        load_topology(bad)
