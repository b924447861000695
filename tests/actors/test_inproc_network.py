"""The in-process network itself: delivery thread, FIFO, wire codec, and each fault."""

from __future__ import annotations

import threading

import pytest

from esnode.core.cluster_messages import Heartbeat, VoteRequest
from esnode.core.messages import ErrorReply, Ping, Reply
from esnode.core.types import NotReady
from tests.support.inproc import ANY, FaultyNetwork, InProcNetwork, NetworkError


class Node:
    """A bare endpoint that records what reaches it (and on which thread)."""

    def __init__(self, network: InProcNetwork, name: str) -> None:
        self.transport = network.endpoint(name)
        self.received: list[tuple[str, object]] = []
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.transport.start(self.on_client, lambda peer: None, self.on_node)

    def on_node(self, batch):
        self.threads.add(threading.current_thread().name)
        self.batches.append(len(batch))
        self.received.extend(batch)

    def on_client(self, envelopes):
        self.transport.send_client([(e.peer, e.corr, Reply({"pong": True}))
                                    for e in envelopes])


def vote(term: int, sender: str = "a") -> VoteRequest:
    return VoteRequest(term, sender, 0, term)


@pytest.fixture
def net():
    network = FaultyNetwork(seed=7)
    yield network
    network.close()


def terms(node: Node) -> list[int]:
    return [m.term for _, m in node.received]


def test_delivers_in_order_on_the_network_thread_in_batches(net):
    a, b = Node(net, "a"), Node(net, "b")
    a.transport.send_node([("b", vote(t)) for t in range(1, 101)])
    net.wait_idle()
    assert terms(b) == list(range(1, 101))
    assert {sender for sender, _ in b.received} == {"a"}
    assert b.threads == {"inproc-network"}
    assert sum(b.batches) == 100 and len(b.batches) < 100
    assert net.stats["delivered"] == 100


def test_messages_cross_the_wire_codec(net):
    a, b = Node(net, "a"), Node(net, "b")
    a.transport.send_node([("b", vote(3))])
    net.wait_idle()
    (_, message), = b.received
    assert message == vote(3) and message is not vote(3)
    a.transport.send_node([("b", Ping())])  # a client request is not a cluster message
    net.wait_idle()
    with pytest.raises(NetworkError, match="cannot encode Ping"):
        net.check()


def test_drop_is_reproducible_from_the_seed():
    def delivered(seed: int) -> list[int]:
        network = FaultyNetwork(seed=seed)
        try:
            a, b = Node(network, "a"), Node(network, "b")
            network.drop("a", "b", 0.5)
            a.transport.send_node([("b", vote(t)) for t in range(1, 201)])
            network.wait_idle()
            return terms(b)
        finally:
            network.close()

    first = delivered(1)
    assert 60 < len(first) < 140
    assert delivered(1) == first
    assert delivered(2) != first


def test_cut_one_way_and_isolate_and_recover(net):
    a, b, c = Node(net, "a"), Node(net, "b"), Node(net, "c")
    net.cut_one_way("a", "b")
    a.transport.send_node([("b", vote(1)), ("c", vote(1))])
    b.transport.send_node([("a", vote(1, "b"))])
    net.wait_idle()
    assert (terms(a), terms(b), terms(c)) == ([1], [], [1])
    net.isolate("c")
    c.transport.send_node([("a", vote(2, "c")), ("b", vote(2, "c"))])
    a.transport.send_node([("c", vote(2))])
    net.wait_idle()
    assert (terms(a), terms(b), terms(c)) == ([1], [], [1])
    net.recover()
    c.transport.send_node([("a", vote(3, "c")), ("b", vote(3, "c"))])
    a.transport.send_node([("b", vote(3))])
    net.wait_idle()
    assert (terms(a), terms(b)) == ([1, 3], [3, 3])


def test_a_cut_stops_messages_already_in_flight(net):
    a, b = Node(net, "a"), Node(net, "b")
    net.delay("a", "b", 0.2)
    a.transport.send_node([("b", vote(1))])
    net.cut("a", "b")
    net.wait_idle()
    assert b.received == []


def test_duplicate_ignore_hook_and_reorder(net):
    a, b = Node(net, "a"), Node(net, "b")
    net.duplicate(ANY, "b", 1.0)
    a.transport.send_node([("b", vote(1))])
    net.wait_idle()
    assert terms(b) == [1, 1] and net.stats["duplicated"] == 1
    net.recover()
    net.ignore(Heartbeat)
    net.msg_hook = lambda frm, to, m: getattr(m, "term", 0) != 5
    a.transport.send_node([("b", vote(5)), ("b", vote(6))])
    net.wait_idle()
    assert terms(b) == [1, 1, 6]
    net.recover()
    b.received.clear()
    net.reorder("a", "b", 0.5, window=0.05)
    a.transport.send_node([("b", vote(t)) for t in range(1, 51)])
    net.wait_idle()
    assert sorted(terms(b)) == list(range(1, 51)) and terms(b) != list(range(1, 51))


def test_client_calls_and_timeouts(net):
    a = Node(net, "a")
    client = net.client("a")
    assert client.call(Ping()) == Reply({"pong": True})
    a.transport.pause_receiving()
    with pytest.raises(TimeoutError):
        client.call(Ping(), timeout=0.2)
    a.transport.stop()
    with pytest.raises(TimeoutError):
        net.client("a").call(Ping(), timeout=0.2)


def test_a_reply_the_real_codec_cannot_encode_is_an_error(net):
    a = Node(net, "a")
    a.transport.send_client([(b"client-9", 1, ErrorReply(NotReady("fine")))])
    net.check()
    a.transport.send_client([(b"client-9", 2, object())])
    with pytest.raises(NetworkError, match="cannot encode the reply"):
        net.check()


def test_the_double_and_the_zmq_transport_both_implement_the_port():
    import inspect

    from esnode.transport.port import Transport
    from esnode.transport.zmq_transport import ZmqTransport
    from tests.support.inproc import InProcTransport

    methods = [n for n, v in vars(Transport).items()
               if not n.startswith("_") and (callable(v) or isinstance(v, property))]
    assert {"start", "send_client", "send_node", "pause_receiving", "stop",
            "external_endpoint"} <= set(methods)
    for name in methods:
        port = vars(Transport)[name]
        for impl in (ZmqTransport, InProcTransport):
            have = getattr(impl, name)
            if isinstance(port, property):
                assert isinstance(have, property), (impl, name)
            else:
                assert (list(inspect.signature(have).parameters)
                        == list(inspect.signature(port).parameters)), (impl, name)
