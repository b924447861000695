"""Writes forwarded from a follower to the leader, under restarts and faults."""

from __future__ import annotations

from esnode.core.cluster_messages import ReplicateRecords
from esnode.core.messages import Append
from esnode.core.types import ANY
from tests.conftest import wait_for
from tests.support.cluster import new_event
from tests.support.inproc import outcome
from tests.support.stubs import FsyncGate, gated_storage


def test_a_late_answer_to_a_write_forwarded_before_a_restart_answers_no_new_write(
        make_cluster):
    """Forward ids used to restart at 1 with the process: the leader's late answer to a
    write forwarded before the follower restarted was relayed to the client of a different
    write, forwarded after it (a wrong acknowledgement: the versions and position of another
    write)."""
    gate = FsyncGate()
    cluster = make_cluster(store="lmdb", overrides={"storage_actor": gated_storage(gate)})
    net = cluster.network
    try:
        leader = cluster.wait_for_leader()
        lname = leader.config.name
        follower, other = (f.config.name for f in cluster.followers(leader))
        # Nothing commits: the other follower's disk is held, this one gets no records.
        gate.close(other)
        net.msg_hook = lambda frm, to, m: not (to == follower and type(m) is ReplicateRecords)
        first = cluster.client(follower)
        first.send(Append("first", ANY, (new_event(), new_event(), new_event())))
        wait_for(lambda: gate.held() == {other}, timeout=5, message="the first write shipped")

        cluster.stop_node(follower)  # its client never hears back: that is fine
        restarted = cluster.start_node(follower)
        wait_for(lambda: restarted.board.leader == lname, timeout=5,
                 message="the restarted follower to know the leader")
        second = cluster.client(follower)
        corr = second.send(Append("second", ANY, (new_event(),)))
        wait_for(lambda: leader.store.stream_version("second") == 0, timeout=5,
                 message="the second write on the leader")

        net.msg_hook = None
        gate.open()  # both commit; the leader answers both forwards, the first one first
        kind, body = outcome(second.wait(corr, timeout=5))
        assert kind == "ok", body
        assert (body["first_version"], body["last_version"]) == (0, 0), body
        cluster.wait_converged()
        position = [e.position for e in cluster.events(lname) if e.stream == "second"]
        assert body["position"] == position[0]
    finally:
        gate.open()
