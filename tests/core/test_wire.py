"""The cluster messages survive the internal codec (transport/internal_codec.py)."""

import pytest

from esnode.core.cluster_messages import (
    WIRE_MESSAGES,
    Gossip,
    Heartbeat,
    MemberInfo,
    ReplicaAck,
    ReplicaSubscribed,
    ReplicateRecords,
    SubscribeReplica,
    TermNotice,
    VoteRequest,
    VoteResponse,
)
from esnode.core.types import Epoch

codec_module = pytest.importorskip("esnode.transport.internal_codec")

MEMBER = MemberInfo("n1", "i", 8, True, "h", 1, "e", 2, 3, 4, 5, 0, 1.5)
SAMPLES = [
    VoteRequest(2, "n1", 1, 40, pre_vote=True), VoteResponse(2, "n2", True), TermNotice(3, "n2"),
    Heartbeat(2, "n1", 10, 20, 7), SubscribeReplica(2, "n2", 7, 30, (Epoch(1, 0, "n1"),)),
    ReplicaSubscribed(2, "n1", 7, 30, 40),
    ReplicateRecords(2, "n1", 7, 30, ((31, b"a"), (40, b"b")), (Epoch(2, 31, "n1"),), 30),
    ReplicaAck(2, "n2", 7, 40), Gossip("n1", (MEMBER,)),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message):
    codec = codec_module.InternalCodec(WIRE_MESSAGES)
    assert codec.decode(codec.encode(message)) == message


def test_invalid_fields_are_rejected_on_construction():
    with pytest.raises(ValueError):
        ReplicateRecords(2, "n1", 7, 30, ((20, b"a"),), (), 30)  # position not after 30
    with pytest.raises(ValueError):
        VoteRequest(0, "n1", -1, -1)
