import random

from esnode.core.cluster_messages import Gossip, GossipReply
from esnode.core.effects import Send
from esnode.core.gossip import GossipCore

from .helpers import config


def gossip(name="n1", now=0.0):
    cfg = config(name, internal_endpoint=("10.0.0.1", 2114), external_endpoint=("1.2.3.4", 2113))
    return GossipCore(cfg, random.Random(1), f"{name}-id", now)


def test_when_gossip_arrives_the_receiver_merges_and_answers_with_its_view():
    a, b = gossip("n1"), gossip("n2")
    effects = b.on_gossip(Gossip("n1", a.view(0.0)), 0.1)
    assert isinstance(effects[0], Send) and isinstance(effects[0].message, GossipReply)
    assert {m.name for m in effects[0].message.members} == {"n1", "n2"}


def test_the_newer_timestamp_wins_and_a_node_is_authoritative_about_itself():
    a, b = gossip("n1"), gossip("n2")
    a.update_self(5.0, state=8)
    b.merge(a.view(5.0), 5.0)
    stale = a.view(5.0)[0]._replace(timestamp=1.0, state=2)
    b.merge([stale], 6.0)
    assert b.members["n1"].state == 8
    b.merge([b.me._replace(name="n2", state=0, timestamp=99.0)], 6.0)
    assert b.members["n2"] == b.me  # others cannot overwrite our own entry


def test_a_silent_member_is_dead_after_the_timeout():
    a, b = gossip("n1"), gossip("n2")
    b.merge(a.view(0.0), 0.0)
    assert b.is_alive("n1", 1.9)
    assert not b.is_alive("n1", 2.1)
    assert not [m for m in b.view(2.1) if m.name == "n1"][0].is_alive


def test_clients_see_external_endpoints_only():
    view = gossip().client_view(0.0)
    assert view[0].external_host == "1.2.3.4" and not hasattr(view[0], "internal_host")


def test_a_round_goes_to_one_random_peer():
    a = gossip()
    effects = a.tick(0.0)
    assert len(effects) == 1 and effects[0].to in ("n2", "n3")
    assert a.tick(0.1) == []  # next round after gossip_interval
