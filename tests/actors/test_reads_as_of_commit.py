"""Issue 9 at the actor level: the gateway's reads and the subscriptions actor answer as of the
commit position, deletes and metadata included. Both followers hold the leader's records at
their fsync gate, so the leader writes an append, a tombstone and a metadata change it cannot
commit; until the gate opens, nothing of them shows on the leader."""

from __future__ import annotations

from esnode.actors.messages import Tick
from esnode.core.messages import (
    FROM_END,
    Append,
    CaughtUp,
    Delete,
    EventsPushed,
    GetMetadata,
    ReadStream,
    SetMetadata,
    Subscribe,
    SubscriptionDropped,
)
from esnode.core.types import ANY
from tests.conftest import wait_for
from tests.support.cluster import new_event
from tests.support.inproc import outcome
from tests.support.stubs import FsyncGate, gated_storage


def versions(reply) -> list[int] | str:
    kind, body = outcome(reply)
    return [e.version for e in body["events"]] if kind == "ok" else kind


def pushed(client, corr) -> list:
    """What subscription ``corr`` received so far: event versions, then the other pushes."""
    out = []
    for message in client.messages(corr)[1:]:
        if type(message) is EventsPushed:
            out += [e.version for e in message.events]
        else:
            out.append(type(message).__name__)
    return out


def test_the_gateway_and_subscriptions_answer_as_of_the_commit_position(make_cluster):
    gate = FsyncGate()
    cluster = make_cluster(overrides={"storage_actor": gated_storage(gate)})
    try:
        leader = cluster.wait_for_leader()
        name = leader.config.name
        followers = [f.config.name for f in cluster.followers(leader)]
        client = cluster.client(name)
        for stream in ("s", "t", "m"):
            kind, body = outcome(client.call(Append(stream, ANY, tuple(
                new_event() for _ in range(3)))))
            assert kind == "ok", body
        cluster.wait_converged()
        committed = leader.store.writer_position

        gate.close(*followers)
        writes = [client.send(Append("s", ANY, (new_event(),))),
                  client.send(Delete("t", ANY, tombstone=True)),
                  client.send(SetMetadata("m", {"$maxCount": 1}, ANY))]
        wait_for(lambda: leader.store.writer_position == committed + 3, timeout=5,
                 message="the leader's own copy of the three writes")
        leader.storage.ask(Tick(), timeout=5)  # barrier: the writer is done with them
        assert leader.board.readable_position == committed

        assert versions(client.call(ReadStream("s", -1, 10, backwards=True))) == [2, 1, 0]
        assert versions(client.call(ReadStream("t"))) == [0, 1, 2]
        assert versions(client.call(ReadStream("m"))) == [0, 1, 2]
        assert outcome(client.call(GetMetadata("t")))[1]["version"] == -1
        assert outcome(client.call(GetMetadata("m")))[1] == {"stream": "m", "version": -1,
                                                              "metadata": {}}
        from_end = client.send(Subscribe("s", FROM_END))
        whole_t = client.send(Subscribe("t"))
        wait_for(lambda: pushed(client, whole_t) == [0, 1, 2, "CaughtUp"], timeout=5,
                 message="t delivered whole, not dropped")
        wait_for(lambda: pushed(client, from_end) == ["CaughtUp"], timeout=5,
                 message="the subscription to s from its committed end")

        gate.open()
        for corr in writes:
            assert outcome(client.wait(corr))[0] == "ok"
        # what was written but not committed when it subscribed is delivered now, not skipped
        wait_for(lambda: pushed(client, from_end) == ["CaughtUp", 3], timeout=5,
                 message="s@3 delivered to the subscription from the end")
        wait_for(lambda: pushed(client, whole_t)[-1:] == ["SubscriptionDropped"], timeout=5,
                 message="the subscription to t dropped once the tombstone commits")
        assert versions(client.call(ReadStream("t"))) == "stream_deleted"
        assert versions(client.call(ReadStream("m"))) == [2]
        for message in client.messages(whole_t):
            assert type(message) is not SubscriptionDropped or message.error.code == \
                "stream_deleted"
        assert all(type(m) is not CaughtUp or m.position >= committed
                   for m in client.messages(from_end))
    finally:
        gate.open()
