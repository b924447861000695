"""Any actor of a node can be replaced through ``Factories`` (the composition root's seam),
with no test-only switch in the product. A recording stub stands in for the subscriptions
actor; a storage actor whose replicated writes wait at a gate stands in for a follower with
a slow disk, which shows that no write is acknowledged before a majority holds it."""

from __future__ import annotations

import threading

import pykka

from esnode.actors.messages import (
    Committed,
    StatusChanged,
    SubscriptionRequest,
    Tick,
)
from esnode.actors.replica import Replica
from esnode.core.messages import Append, CaughtUp, Subscribe
from esnode.core.states import VNodeState
from esnode.core.types import ANY
from tests.conftest import wait_for
from tests.support.cluster import new_event
from tests.support.inproc import outcome
from tests.support.stubs import FsyncGate, gated_storage


class Recorder:
    """What each node's stub was told, by node name (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, list[object]] = {}

    def record(self, node: str, message: object) -> None:
        with self.lock:
            self.seen.setdefault(node, []).append(message)

    def of(self, node: str, cls: type) -> list:
        with self.lock:
            return [m for m in self.seen.get(node, []) if type(m) is cls]


def recording_subscriptions(recorder: Recorder) -> type[pykka.ThreadingActor]:
    """A subscriptions actor that records every message, and answers a subscription with
    ``CaughtUp`` at the last commit position it was told (so a client sees it at work)."""

    class StubSubscriptionsActor(pykka.ThreadingActor):
        def __init__(self, store, transport, clock, board, on_failure=None) -> None:
            super().__init__()
            self.transport, self.committed = transport, -1

        def on_receive(self, message: object) -> None:
            recorder.record(self.transport.name, message)
            if type(message) is Committed:
                self.committed = message.position
            elif type(message) is SubscriptionRequest:
                env = message.envelope
                self.transport.send_client([(env.peer, env.corr, CaughtUp(self.committed))])

    return StubSubscriptionsActor


def test_a_stub_subscriptions_actor_replaces_the_real_one_on_every_node(make_cluster):
    recorder = Recorder()
    cluster = make_cluster(overrides={"subscriptions_actor": recording_subscriptions(recorder)})
    leader = cluster.wait_for_leader()
    kind, body = outcome(cluster.client(leader.config.name).call(
        Append("s", ANY, (new_event(),))))
    assert kind == "ok", body
    for name in cluster.names:
        wait_for(lambda name=name: any(c.position >= body["position"]
                                       for c in recorder.of(name, Committed)),
                 message=f"{name}'s stub to hear of the commit")
        states = [s.state for s in recorder.of(name, StatusChanged)]
        want = VNodeState.Leader if name == leader.config.name else VNodeState.Follower
        assert states[-1] is want
    follower = cluster.followers(leader)[0].config.name
    reply = cluster.client(follower).call(Subscribe("$all"))
    assert type(reply) is CaughtUp and reply.position >= body["position"]
    (request,) = recorder.of(follower, SubscriptionRequest)
    assert request.envelope.request == Subscribe("$all")


def write_behind_gated_followers(cluster, gate: FsyncGate) -> tuple[list, tuple]:
    """Append on the leader while both followers hold the replicated records at the gate.
    Returns what the client got while only the leader had the write durable, and the final
    outcome once one follower's disk answers (2 of 3)."""
    leader = cluster.wait_for_leader()
    slow, late = (f.config.name for f in cluster.followers(leader))
    client = cluster.client(leader.config.name)
    gate.close(slow, late)
    corr = client.send(Append("gated", ANY, (new_event(),)))
    wait_for(lambda: gate.held() == {slow, late}, timeout=5,
             message="both followers to hold the replicated write")
    wait_for(lambda: leader.store.stream_version("gated") == 0, timeout=5,
             message="the leader's own copy")
    leader.storage.ask(Tick(), timeout=5)  # barrier: the writer is done with that write
    early = client.messages(corr)
    gate.open(slow)
    final = outcome(client.wait(corr, timeout=5))
    assert late in gate.held()  # decided without the third node
    return early, final


def test_no_acknowledgement_before_a_majority_has_the_write_durable(make_cluster, store):
    gate = FsyncGate()
    cluster = make_cluster(store=store, overrides={"storage_actor": gated_storage(gate)})
    try:
        early, (kind, body) = write_behind_gated_followers(cluster, gate)
        assert early == []  # durable on the leader alone (1 of 3): not acknowledged
        assert kind == "ok", body
        gate.open()
        cluster.wait_converged()
    finally:
        gate.open()


def test_the_check_catches_a_writer_that_acknowledges_on_its_own_fsync(make_cluster):
    """The same scenario with a deliberately broken writer (swapped in, as any actor can
    be): the premature acknowledgement is seen."""
    gate = FsyncGate()

    class AcksOnLocalFsync(Replica):
        def flush(self) -> None:
            super().flush()
            self._release(self._store.writer_position)  # the bug: no majority needed

    class BrokenWriter(gated_storage(gate)):
        replica_class = AcksOnLocalFsync

    cluster = make_cluster(overrides={"storage_actor": BrokenWriter})
    try:
        early, _ = write_behind_gated_followers(cluster, gate)
        assert [outcome(m)[0] for m in early] == ["ok"]
    finally:
        gate.open()
