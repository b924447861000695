"""``external_http_port`` in the topology, and the composition root's switch for the face."""

from __future__ import annotations

import copy
import socket

import pytest

from esnode.actors.node import Factories, Node
from esnode.core.config import TopologyError, parse_topology
from tests.conftest import free_port, single_node_topology, start_leader
from tests.config.test_topology import BASE


def with_http(**per_node) -> dict:
    raw = copy.deepcopy(BASE)
    for i, entry in enumerate(raw["nodes"]):
        entry["external_http_port"] = per_node.get(f"n{i + 1}", 3130 + i + 1)
    return raw


def test_http_ports_parse_and_advertise_on_the_external_host():
    raw = with_http()
    raw["nodes"][0]["external_advertise_host"] = "public.example"
    topo = parse_topology(raw)
    assert topo.node("n1").external_http_advertise == ("public.example", 3131)
    assert topo.node("n2").external_http_bind == ("127.0.0.1", 3132)
    assert parse_topology(BASE).node("n1").external_http_advertise is None


@pytest.mark.parametrize("ports, fragment", [
    ({"n1": 70000}, "nodes[0].external_http_port: port 70000"),
    ({"n2": 3122}, "nodes[1].external_http_port: same address as another endpoint"),
    ({"n3": 3131}, "nodes[2].external_http_port: duplicate port 127.0.0.1:3131"),
])
def test_bad_http_ports_are_named(ports, fragment):
    with pytest.raises(TopologyError) as info:
        parse_topology(with_http(**ports))
    assert fragment in str(info.value)


def test_the_http_face_can_be_disabled_by_the_composition_root():
    port = free_port()
    node = start_leader(Node(single_node_topology(external_http_port=port), "node1",
                             Factories().replace(http_face=None)))
    try:
        assert node.http is None
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens
    finally:
        node.stop()
