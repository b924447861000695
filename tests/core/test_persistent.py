"""The persistent-subscription group core, driven by hand and by hypothesis: dispatch by
strategy, timeouts and retries, parking, acks that are never redelivered once persisted
(also across a rebuild, as on a new leader, with in-flight state and unpersisted effects
lost), bad input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esnode.core.persistent import (
    Deliver,
    Dropped,
    GroupCore,
    GroupSettings,
    Park,
    PersistCheckpoint,
    PersistRetries,
    PersistSettled,
    Refused,
    group_stream,
)
from esnode.core.types import BadRequest, RecordedEvent


def ev(version: int, stream: str = "s", position: int | None = None) -> RecordedEvent:
    return RecordedEvent(f"id-{stream}-{version}", stream, version, "T", b"{}", b"", True, 0,
                         version * 10 if position is None else position)


def delivered(effects) -> list[tuple[object, int, int]]:
    return [(e.consumer, e.event.version, e.retry_count) for e in effects if type(e) is Deliver]


def test_round_robin_dispatches_within_windows_and_acks_are_persisted_before_confirmation():
    core = GroupCore("s", "g", GroupSettings())
    assert core.connect("a", 2, 0.0) == [] and core.connect("b", 1, 0.0) == []
    effects = core.events([ev(i) for i in range(5)], 0.0)
    assert delivered(effects) == [("a", 0, 0), ("b", 1, 0), ("a", 2, 0)]
    effects = core.ack("a", [0, 20], "reply-1", 1.0)
    assert effects[0] == PersistSettled((0, 20), "reply-1")
    assert delivered(effects) == [("a", 3, 0), ("a", 4, 0)]  # settling frees places
    assert core.wants() == 20  # buffer empty: read more
    assert core.wants() and not delivered(core.events([ev(5)], 1.0))  # no place free
    assert core.wants() == 0  # something buffered and nobody has room: read nothing


def test_dispatch_to_single_and_pinned():
    single = GroupCore("s", "g", GroupSettings(consumer_strategy="DispatchToSingle"))
    single.connect("a", 2, 0.0)
    single.connect("b", 5, 0.0)
    assert [c for c, *_ in delivered(single.events([ev(i) for i in range(4)], 0.0))] == \
        ["a", "a", "b", "b"]
    pinned = GroupCore("$all", "g", GroupSettings(consumer_strategy="Pinned"))
    pinned.connect("a", 100, 0.0)
    pinned.connect("b", 100, 0.0)
    events = [ev(i, f"stream-{i % 7}", position=i) for i in range(70)]
    owner: dict[str, object] = {}
    assert len(delivered(pinned.events(events, 0.0))) == 70
    for e in pinned.inflight.values():
        assert owner.setdefault(e.event.stream, e.consumer) == e.consumer
    assert len(set(owner.values())) == 2


def test_pinned_waits_for_the_owner_without_stalling_other_streams():
    core = GroupCore("$all", "g", GroupSettings(consumer_strategy="Pinned"))
    core.connect("a", 0, 0.0)
    core.connect("b", 10, 0.0)
    streams = [f"x{i}" for i in range(40)]
    events = [ev(0, s, position=i) for i, s in enumerate(streams)]
    got = delivered(core.events(events, 0.0))
    assert got and all(c == "b" for c, *_ in got) and len(core.ready) == 40 - len(got)


def test_timeouts_retry_with_counts_then_park():
    core = GroupCore("s", "g", GroupSettings(message_timeout=1.0, max_retry_count=2))
    core.connect("a", 10, 0.0)
    assert delivered(core.events([ev(0)], 0.0)) == [("a", 0, 0)]
    assert delivered(core.tick(1.0)) == [("a", 0, 1)]
    assert delivered(core.tick(2.0)) == [("a", 0, 2)]
    effects = core.tick(3.0)
    assert [type(e) for e in effects if type(e) is not PersistCheckpoint] == [Park]
    assert "retried 2 time(s)" in effects[0].reason and core.parked_count == 1
    assert core.tick(10.0) == [] and core.next_deadline() is None


def test_nack_actions():
    core = GroupCore("s", "g", GroupSettings())
    core.connect("a", 10, 0.0)
    core.events([ev(i) for i in range(4)], 0.0)
    effects = core.nack("a", [0], "park", "bad data", "r1", 0.0)
    assert effects[0] == Park(ev(0), "bad data", "r1")
    assert delivered(core.nack("a", [10], "retry", "", "r2", 0.0)) == [("a", 1, 1)]
    assert core.nack("a", [20], "skip", "", "r3", 0.0)[0] == PersistSettled((20,), "r3")
    effects = core.nack("a", [30], "stop", "", "r4", 0.0)
    assert Dropped("a", "the consumer asked to stop") in effects and "a" not in core.consumers
    assert [e for e, _ in core.ready] == [ev(1), ev(3)]  # back in order for the next consumer
    assert type(core.nack("a", [1], "explode", "", "r", 0.0)[0]) is Refused


def test_bad_acks_are_refused_and_change_nothing():
    core = GroupCore("s", "g", GroupSettings())
    core.connect("a", 1, 0.0)
    core.connect("b", 1, 0.0)
    core.events([ev(0), ev(1)], 0.0)
    for consumer, positions in (("b", [0]), ("a", [999]), ("nobody", [0])):
        [refused] = core.ack(consumer, positions, "r", 0.0)
        assert type(refused) is Refused and isinstance(refused.error, BadRequest)
    assert set(core.inflight) == {0, 10}
    core.ack("a", [0], "r", 0.0)
    [again] = core.ack("a", [0], "r", 0.0)  # twice: already settled
    assert type(again) is Refused


def test_a_full_group_refuses_another_consumer_and_settings_are_validated():
    core = GroupCore("s", "g", GroupSettings(max_subscriber_count=1))
    core.connect("a", 1, 0.0)
    with pytest.raises(BadRequest, match="maximum of 1"):
        core.connect("b", 1, 0.0)
    for bad in ({"consumer_strategy": "Random"}, {"max_retry_count": -1},
                {"message_timeout": 0}, {"start_from": "middle"}, {"colour": 1},
                {"min_checkpoint_count": 5, "max_checkpoint_count": 2}):
        with pytest.raises(BadRequest):
            GroupSettings.from_wire(bad)
    s = GroupSettings.from_wire({"max_retry_count": 3})
    assert GroupSettings.from_wire({"read_batch_size": 7}, s).max_retry_count == 3
    assert group_stream("orders", "g1", "parked") == "$persistentsubscription-orders::g1-parked"


def test_checkpoints_cover_only_settled_prefixes():
    core = GroupCore("s", "g", GroupSettings(min_checkpoint_count=2))
    core.connect("a", 10, 0.0)
    core.events([ev(i) for i in range(4)], 0.0)
    effects = core.ack("a", [10, 20], "r", 0.0)  # 0 still in flight: no progress yet
    assert not [e for e in effects if type(e) is PersistCheckpoint]
    effects = core.ack("a", [0, 30], "r", 0.0)
    assert PersistCheckpoint(30, 3) in effects and core.settled == set()


# --- the model: random schedules, with rebuilds as on a new leader -------------------------
OPS = st.lists(st.tuples(st.sampled_from(["ack", "nack_park", "nack_retry", "skip", "tick",
                                          "credit", "disconnect", "connect", "rebuild",
                                          "lose"]),
                         st.integers(0, 2), st.integers(0, 5)), max_size=80)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, strategy=st.sampled_from(["RoundRobin", "DispatchToSingle", "Pinned"]),
       n=st.integers(1, 30), max_retry=st.integers(0, 3))
def test_no_durably_settled_event_is_ever_delivered_again_and_nothing_is_lost(
        ops, strategy, n, max_retry):
    """Random acks, nacks, timeouts, consumers coming and going, and rebuilds (the leader
    changed: in-flight state is gone, only persisted settlements and checkpoints remain;
    ``lose`` drops the effects of the last ack before they were persisted, as a failover
    between the ack and its write would). Then one consumer acks whatever comes: every event
    ends settled exactly once by durable state, no durably settled event was delivered
    after it was settled, and no event is delivered with a retry count below the one
    durably recorded for it (rebuilds carry the counts on)."""
    log = [ev(i, f"st-{i % 4}", position=i) for i in range(n)]
    gs = GroupSettings(message_timeout=1.0, max_retry_count=max_retry,
                       consumer_strategy=strategy, min_checkpoint_count=3, read_batch_size=4)
    durable_settled: set[int] = set()
    durable_parked: set[int] = set()
    durable_checkpoint = [-1, None]  # position, resume cursor
    durable_retries: dict[int, int] = {}
    now = [0.0]
    core = [GroupCore("$all", "g", gs)]

    def feed(effects, persist=True):
        for e in effects:
            if type(e) is Deliver:
                assert e.event.position not in durable_settled, \
                    f"durably settled event {e.event.position} delivered again"
                assert e.retry_count >= durable_retries.get(e.event.position, 0)
            elif persist and type(e) is PersistRetries:
                durable_retries.update(e.counts)
            elif persist and type(e) is PersistSettled:
                durable_settled.update(e.positions)
            elif persist and type(e) is Park:
                durable_settled.add(e.event.position)
                durable_parked.add(e.event.position)
            elif persist and type(e) is PersistCheckpoint:
                durable_checkpoint[:] = [e.position, e.resume]

    def read():
        c = core[0]
        while (want := c.wants()) > 0:
            start = -1 if c.cursor is None else c.cursor
            page = [e for e in log if e.position > start][:want]
            if not page:
                return
            feed(c.events(page, now[0]))

    def rebuild():
        position, resume = durable_checkpoint
        core[0] = GroupCore("$all", "g", gs, position,
                            {p for p in durable_settled if p > position}, resume, now[0],
                            dict(durable_retries))

    for i in range(3):
        feed(core[0].connect(f"c{i}", 2, now[0]))
    for op, who, k in ops:
        c = core[0]
        consumer = f"c{who}"
        mine = sorted((c.consumers[consumer].inflight if consumer in c.consumers else ()))
        pick = mine[:k % 3 + 1] if mine else []
        if op == "ack" and pick:
            feed(c.ack(consumer, pick, "r", now[0]))
        elif op == "lose" and pick:
            feed(c.ack(consumer, pick, "r", now[0]), persist=False)
            rebuild()
            for j in range(3):
                feed(core[0].connect(f"c{j}", 2, now[0]))
        elif op in ("nack_park", "nack_retry", "skip") and pick:
            action = {"nack_park": "park", "nack_retry": "retry", "skip": "skip"}[op]
            feed(c.nack(consumer, pick, action, "", "r", now[0]))
        elif op == "tick":
            now[0] += 0.6 * k
            feed(c.tick(now[0]))
        elif op == "credit" and mine:  # settle everything it holds
            feed(c.ack(consumer, mine, "r", now[0]))
        elif op == "disconnect":
            feed(c.disconnect(consumer, now[0]))
        elif op == "connect" and consumer not in c.consumers:
            feed(c.connect(consumer, k + 1, now[0]))
        elif op == "rebuild":
            rebuild()
            for j in range(3):
                feed(core[0].connect(f"c{j}", 2, now[0]))
        read()
    # drain: one consumer that acks everything
    c = core[0]
    for consumer in list(c.consumers):
        feed(c.disconnect(consumer, now[0]))
    feed(c.connect("drain", 1000, now[0]))
    for _ in range(n * (max_retry + 2) + 10):
        read()
        mine = sorted(c.consumers["drain"].inflight)
        if not mine and not c.ready:
            break
        if mine:
            feed(c.ack("drain", mine, "r", now[0]))
    assert durable_settled == set(range(n))
    assert durable_parked <= durable_settled


def test_retry_counts_are_persisted_and_a_rebuilt_core_carries_them_on():
    """A new leader's core (built from the checkpoint's and ``$Retried`` records' counts)
    delivers a retried event with the count it reached, and parks it on time."""
    s = GroupSettings(message_timeout=1.0, max_retry_count=2)
    core = GroupCore("s", "g", s)
    core.connect("a", 5, 0.0)
    core.events([ev(0), ev(1)], 0.0)
    effects = core.nack("a", [0], "retry", "", "r", 0.5)
    assert PersistRetries(((0, 1),)) in effects and delivered(effects) == [("a", 0, 1)]
    assert core.retries == {0: 1}
    core.ack("a", [10], "r2", 0.6)
    assert core.retries == {0: 1}
    rebuilt = GroupCore("s", "g", s, settled={10}, retries=dict(core.retries), now=5.0)
    rebuilt.connect("b", 5, 5.0)
    assert delivered(rebuilt.events([ev(0), ev(1)], 5.0)) == [("b", 0, 1)]
    assert delivered(rebuilt.tick(6.5)) == [("b", 0, 2)]
    assert Park in [type(e) for e in rebuilt.tick(8.0)]  # past max_retry_count
    assert rebuilt.retries == {}


def test_a_replay_stays_in_replaying_until_settled():
    """Replayed parked events are remembered (with the actor's tag, their parked version)
    until settled, so a checkpoint can carry an unfinished replay to a new leader."""
    core = GroupCore("s", "g", GroupSettings(), checkpoint=100)
    core.connect("a", 5, 0.0)
    effects = core.requeue([ev(3), ev(4)], 0.0, tags=[7, 8])
    assert delivered(effects) == [("a", 3, 0), ("a", 4, 0)]
    assert core.replaying == {30: 7, 40: 8}
    core.ack("a", [30], "r", 1.0)
    assert core.replaying == {40: 8}


def test_history_and_live_buffers_bound_reading_ahead_apart():
    """Catching up (history) reads ahead at most ``history_buffer_size``; at the end of the
    source (the actor says so with ``live``) at most ``live_buffer_size``."""
    core = GroupCore("s", "g", GroupSettings(history_buffer_size=3, live_buffer_size=8,
                                             read_batch_size=20))
    assert core.wants() == 3
    core.live = True
    assert core.wants() == 8


def test_a_replay_finished_by_a_new_leader_keeps_its_retry_counts():
    """``requeue`` with the counts a rebuild found: delivered with them, and kept (for the
    next checkpoint) until settled; a fresh replay starts at 0."""
    core = GroupCore("s", "g", GroupSettings(), checkpoint=100)
    core.connect("a", 5, 0.0)
    effects = core.requeue([ev(3), ev(4)], 0.0, tags=[7, 8], retries=[2, 0])
    assert delivered(effects) == [("a", 3, 2), ("a", 4, 0)]
    assert core.retries == {30: 2} and core.replaying == {30: 7, 40: 8}
    core.ack("a", [30], "r", 1.0)
    assert core.retries == {} and core.replaying == {40: 8}
