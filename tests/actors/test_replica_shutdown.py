"""A write that reaches the writer after it shut down (the transport hands over what it read
before it paused) is refused as the node shutting down, ``not_ready``, which a client retries
elsewhere, and not as a cluster without a leader (``no_quorum``)."""

from __future__ import annotations

from esnode.actors.messages import PendingWrite
from esnode.actors.replica import Replica
from esnode.actors.status import StatusBoard
from esnode.core.clock import SystemClock
from esnode.core.cluster_state import CoreConfig
from esnode.core.messages import ErrorReply, Reply
from esnode.core.states import VNodeState
from esnode.core.types import AppendRequest, EventData, NotReady
from esnode.storage import MemoryEventStore


class RecordingTransport:
    """A fake transport: keeps what the replica answers clients."""

    def __init__(self) -> None:
        self.client: list = []

    def send_client(self, replies) -> None:
        self.client.extend(replies)

    def send_node(self, messages) -> None:
        pass


class IdleInbox:
    """A fake mailbox with nothing else queued: group commit flushes at once."""

    def empty(self) -> bool:
        return True

    def post_flush(self) -> None:
        raise AssertionError("nothing is queued")


def _write(corr: int) -> PendingWrite:
    event = EventData(f"00000000-0000-4000-8000-{corr:012d}", "T", b"{}", b"", True)
    return PendingWrite(b"peer", corr, AppendRequest("s", -2, (event,)))


def test_a_write_after_shutdown_is_refused_as_the_node_shutting_down():
    transport = RecordingTransport()
    replica = Replica(MemoryEventStore(), transport, SystemClock(),
                      CoreConfig(node_id="n1", members=("n1",)), mailbox=IdleInbox(),
                      board=StatusBoard(), notify=lambda message: None)
    replica.start()
    assert replica.core.state is VNodeState.Leader  # a cluster of one leads at once
    replica.append([_write(1)])
    assert [type(reply) for _, _, reply in transport.client] == [Reply]
    replica.shutdown()
    replica.append([_write(2)])
    (_, corr, refusal) = transport.client[-1]
    assert corr == 2 and type(refusal) is ErrorReply, refusal
    assert type(refusal.error) is NotReady and "shutting down" in str(refusal.error)
