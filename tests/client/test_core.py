"""The sans-I/O protocol core, driven by hand: no socket, no thread, no clock."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from esnode.client import _core as core
from esnode.client import new_event
from esnode.client.errors import (
    ClientClosed,
    ConnectionLost,
    EsError,
    NotLeader,
    NotReady,
    OperationTimeout,
    OutcomeUnknown,
    ProtocolError,
    Unavailable,
    WriteConnectionLost,
    WriteTimeout,
    WrongExpectedVersion,
)
from esnode.client.settings import ConnectionSettings
from esnode.core.types import (
    ERRORS_BY_CODE,
    AppendSuccess,
    BadRequest,
    RecordedEvent,
    StreamDeleted,
    StreamSlice,
)
from esnode.transport.codec import decode_request


def reply(corr, kind, body):
    return msgpack.packb([corr, kind, body], use_bin_type=True)


def wire_event(version=0, position=0, stream="s"):
    return [f"00000000-0000-0000-0000-{version:012d}", stream, version, "T", b"{}", b"", True,
            1_700_000_000_000_000, position]


def test_a_request_frame_is_what_the_node_decodes():
    pc = core.ProtocolCore()
    event = new_event("OrderPlaced", {"total": 1})
    corr, frame = pc.start(core.append("order-1", [event], 3), "h", 0.0, 5.0)
    got_corr, request = decode_request(frame)
    assert got_corr == corr
    assert (request.stream, request.expected_version, request.events) == ("order-1", 3, (event,))


def test_invalid_arguments_fail_before_anything_is_sent():
    with pytest.raises(BadRequest, match="max_count"):
        core.read_stream("s", 0, 0)
    with pytest.raises(BadRequest, match=r"\$all"):
        core.append("$all", [new_event("T")])
    with pytest.raises(BadRequest, match="at least one event"):
        core.append("s", [])


def test_ok_replies_decode_into_typed_results():
    pc = core.ProtocolCore()
    corr, _ = pc.start(core.read_stream("s"), "h", 0.0, 5.0)
    body = {"events": [wire_event(0, 10), wire_event(1, 11)], "next_version": 2,
            "last_version": 1, "is_end": True, "unknown_field": 1}
    handle, kind, result = pc.receive(reply(corr, "ok", body))
    assert (handle, kind) == ("h", core.OK)
    assert type(result) is StreamSlice and result.is_end and result.next_version == 2
    assert all(type(e) is RecordedEvent for e in result.events)
    assert result.events[1].position == 11
    corr, _ = pc.start(core.append("s", new_event("T")), "a", 0.0, 5.0)
    assert pc.receive(reply(corr, "ok", {"first_version": 0, "last_version": 0, "position": 3,
                                         "idempotent": True}))[2] == AppendSuccess(0, 0, 3, True)
    assert len(pc) == 0


@pytest.mark.parametrize("code", sorted(ERRORS_BY_CODE))
def test_every_error_code_maps_to_its_class(code):
    pc = core.ProtocolCore()
    corr, _ = pc.start(core.ping(), "h", 0.0, 5.0)
    _, kind, error = pc.receive(reply(corr, "error", {"code": code, "message": "boom"}))
    assert kind == core.ERROR and type(error) is ERRORS_BY_CODE[code] and str(error) == "boom"


def test_error_fields_become_attributes():
    pc = core.ProtocolCore()
    corr, _ = pc.start(core.append("s", new_event("T")), "h", 0.0, 5.0)
    _, _, error = pc.receive(reply(corr, "error", {
        "code": "wrong_expected_version", "message": "m", "stream": "s", "expected": 0,
        "current": 4}))
    assert isinstance(error, WrongExpectedVersion) and (error.expected, error.current) == (0, 4)
    corr, _ = pc.start(core.ping(), "h", 0.0, 5.0)
    _, _, error = pc.receive(reply(corr, "error", {"code": "not_leader", "message": "m",
                                                   "leader": ["10.0.0.2", 2113]}))
    assert isinstance(error, NotLeader) and error.leader == ("10.0.0.2", 2113)
    corr, _ = pc.start(core.ping(), "h", 0.0, 5.0)
    _, _, error = pc.receive(reply(corr, "error", {"code": "from_the_future", "message": "m"}))
    assert type(error) is EsError and error.code == "from_the_future"


def test_garbage_late_and_malformed_replies_never_raise():
    pc = core.ProtocolCore()
    assert pc.receive(b"\xc1 not msgpack") is None
    assert pc.receive(msgpack.packb([1, 2])) is None
    assert pc.receive(reply(99, "ok", {})) is None  # nobody waits for corr 99
    corr, _ = pc.start(core.read_all(), "h", 0.0, 5.0)
    _, kind, error = pc.receive(reply(corr, "ok", {"events": "nope"}))
    assert kind == core.ERROR and isinstance(error, ProtocolError)


def test_deadlines_fail_writes_as_outcome_unknown_and_reads_as_timeouts():
    pc = core.ProtocolCore("tcp://n:1")
    pc.start(core.append("s", new_event("T")), "w", 100.0, 1.0)
    pc.start(core.read_all(), "r", 100.0, 2.0)
    answered, _ = pc.start(core.ping(), "p", 100.0, 0.5)
    pc.receive(reply(answered, "ok", {"node": "n", "state": "Leader"}))
    assert pc.next_deadline() == 101.0
    assert pc.expire(100.9) == ([], None)
    [(handle, kind, error)], _ = pc.expire(101.0)
    assert handle == "w" and isinstance(error, WriteTimeout) and isinstance(error, OutcomeUnknown)
    assert kind == core.ERROR
    assert isinstance(error, TimeoutError) and "tcp://n:1" in str(error)
    [(handle, _, error)], _ = pc.expire(150.0)
    assert handle == "r" and isinstance(error, OperationTimeout)
    assert pc.next_deadline() is None and len(pc) == 0


def test_close_fails_everything_in_flight_and_hands_back_subscriptions():
    pc = core.ProtocolCore()
    pc.start(core.append("s", new_event("T")), "w", 0.0, None)
    pc.start(core.read_all(), "r", 0.0, None)
    pc.start(core.subscribe("s"), "sub", 0.0, None, inbox="inbox")
    done = pc.close("closed by the test")
    kinds = {handle: (kind, type(error)) for handle, kind, error in done}
    assert kinds == {"w": (core.ERROR, WriteTimeout), "r": (core.ERROR, ClientClosed),
                     "sub": (core.ERROR, ClientClosed), "inbox": (core.CLOSED, ConnectionLost)}


def test_a_lost_connection_fails_reads_as_retryable_and_writes_as_unknown():
    pc = core.ProtocolCore()
    pc.start(core.append("s", new_event("T")), "w", 0.0, None)
    pc.start(core.read_all(), "r", 0.0, None)
    pc.start(core.subscribe("s"), "sub", 0.0, None, inbox="inbox")
    kinds = {handle: (kind, type(error)) for handle, kind, error in pc.close("gone", lost=True)}
    assert kinds == {"w": (core.ERROR, WriteConnectionLost), "r": (core.ERROR, ConnectionLost),
                     "sub": (core.ERROR, ConnectionLost), "inbox": (core.LOST, ConnectionLost)}
    assert issubclass(WriteConnectionLost, OutcomeUnknown)


def test_the_node_closing_the_connection_fails_what_is_in_flight_as_lost():
    """The socket monitor's hint (a killed node closes its TCP connections at once)."""
    pc = core.ProtocolCore("tcp://127.0.0.1:1")
    assert pc.disconnected() == []  # nothing in flight: nothing to fail yet, but it is down
    assert pc.gone is not None
    pc.reconnected()
    assert pc.gone is None
    pc.start(core.append("s", new_event("T")), "w", 0.0, None)
    pc.start(core.subscribe("s"), "sub", 0.0, None, inbox="inbox")
    kinds = {handle: (kind, type(error)) for handle, kind, error in pc.disconnected()}
    assert kinds == {"w": (core.ERROR, WriteConnectionLost), "sub": (core.ERROR, ConnectionLost),
                     "inbox": (core.LOST, ConnectionLost)}
    assert len(pc) == 0
    pc.start(core.read_all(), "r", 0.0, None)  # started while it is down: the shell fails it
    assert [(h, type(e)) for h, _, e in pc.disconnected()] == [("r", ConnectionLost)]



def test_subscription_pushes_go_to_the_inbox_until_dropped():
    pc = core.ProtocolCore()
    corr, _ = pc.start(core.subscribe("$all", "end", 10), "h", 0.0, 5.0, inbox="box")
    assert pc.receive(reply(corr, "ok", {"subscription": corr}))[1:] == (
        core.OK, core.Subscribed(corr))
    target, kind, events = pc.receive(reply(corr, "events", [wire_event(0, 5)]))
    assert (target, kind, events[0].position) == ("box", core.EVENTS, 5)
    assert pc.receive(reply(corr, "caught_up", {"position": 5}))[1:] == (core.CAUGHT_UP, 5)
    _, kind, error = pc.receive(reply(corr, "dropped", {"code": "not_ready", "message": "bye"}))
    assert kind == core.DROPPED and isinstance(error, NotReady)
    assert pc.receive(reply(corr, "events", [wire_event(1, 6)])) is None


def test_unsubscribe_stops_routing_and_ignores_its_reply():
    pc = core.ProtocolCore()
    corr, _ = pc.start(core.subscribe("s"), "h", 0.0, 5.0, inbox="box")
    pc.receive(reply(corr, "ok", {"subscription": corr}))
    frame = pc.unsubscribe(corr)
    unsub_corr, request = decode_request(frame)
    assert request.subscription == corr
    assert pc.unsubscribe(corr) is None
    assert pc.receive(reply(corr, "events", [wire_event()])) is None
    assert pc.receive(reply(unsub_corr, "ok", {})) is None
    assert len(pc) == 0


def test_a_failed_subscribe_leaves_no_route():
    pc = core.ProtocolCore()
    corr, _ = pc.start(core.subscribe("s"), "h", 0.0, 5.0, inbox="box")
    assert pc.receive(reply(corr, "error", {"code": "bad_request", "message": "no"}))[1] == \
        core.ERROR
    assert pc.receive(reply(corr, "events", [wire_event()])) is None


# --- the consumer side -------------------------------------------------------------------------
def events(n, start=0):
    return [RecordedEvent._make(wire_event(i, i)) for i in range(start, start + n)]


def test_caught_up_is_reported_in_order_with_the_events():
    seen = []
    state = core.SubscriptionState(1, 10, on_caught_up=seen.append)
    state.feed(core.EVENTS, events(2))
    state.feed(core.CAUGHT_UP, 1)
    state.feed(core.EVENTS, events(1, 2))
    assert state.next_event().version == 0
    assert state.next_event().version == 1 and not state.caught_up and seen == []
    assert state.next_event().version == 2 and state.caught_up and seen == [1]
    assert state.next_event() is None


def test_a_drop_is_raised_after_the_events_before_it():
    state = core.SubscriptionState(1, 10)
    state.feed(core.EVENTS, events(1))
    state.feed(core.DROPPED, StreamDeleted("s"))
    assert state.next_event().version == 0
    with pytest.raises(StreamDeleted):
        state.next_event()
    with pytest.raises(StreamDeleted):
        state.next_event()


@pytest.mark.parametrize(("kind", "payload"), [(core.LOST, ConnectionLost("gone")),
                                               (core.DROPPED, NotReady("shutting down"))])
def test_a_lost_or_retryable_drop_asks_to_resume_after_the_events_before_it(kind, payload):
    state = core.SubscriptionState(1, 10)
    state.feed(core.EVENTS, events(2))
    state.feed(kind, payload)
    assert [state.next_event().version for _ in range(2)] == [0, 1]
    assert state.next_event() is core.RESUME and state.lost_reason is payload
    state.restart(core.Subscribed(7, -1), 3)
    assert (state.id, state.generation, state.lost_reason, state.ended) == (7, 3, None, False)
    assert state.resubscriptions == 1 and state.from_ == "start"


@pytest.mark.parametrize(("from_", "confirmed", "expected"), [
    ("end", 41, 41), ("end", -1, "start"), ("start", -1, "start"), (5, 5, 5), ("end", None, "end")])
def test_the_confirmation_resolves_where_the_subscription_starts(from_, confirmed, expected):
    """A subscription from "end" that delivered nothing resumes from where the node said it
    started, not from a new "end" that may lie past events written during the failover."""
    state = core.SubscriptionState(1, 10, stream="s", from_=from_)
    state.confirmed(core.Subscribed(1, confirmed, "run-1"))
    assert state.from_ == expected and core.resume_from(state) == expected


def test_close_ends_the_subscription():
    state = core.SubscriptionState(1, 10)
    state.feed(core.CLOSED, None)
    assert state.next_event() is core.END and state.credit_due() == 0


@given(window=st.integers(1, 50), script=st.lists(st.tuples(st.integers(0, 60),
                                                              st.integers(0, 60)), max_size=30))
def test_credit_never_lets_more_than_the_window_be_outstanding(window, script):
    """Model the node: it sends at most the credit it holds. Whatever the consumer does, what
    is in flight plus what is buffered never exceeds the window, and a consumer that keeps
    reading is never starved."""
    state = core.SubscriptionState(1, window)
    node_credit, buffered, version = window, 0, 0
    for send, consume in script:
        n = min(send, node_credit)
        node_credit -= n
        state.feed(core.EVENTS, events(n, version))
        version += n
        buffered += n
        for _ in range(consume):
            event, credit = state.take()
            if event is None:
                break
            buffered -= 1
            node_credit += credit
        assert node_credit + buffered <= window
    while (event_credit := state.take())[0] is not None:
        buffered -= 1
        node_credit += event_credit[1]
    assert buffered == 0 and node_credit >= window - window // 2 - 1 and node_credit > 0


# --- flows -------------------------------------------------------------------------------------
def run(flow, answers):
    """Drive a flow: ``answers`` maps an effect type to a callable returning (or raising)."""
    effects, value, error = [], None, None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value, effects
        effects.append(effect)
        value = error = None
        try:
            value = answers[type(effect)](effect)
        except EsError as exc:
            error = exc


# (the flows: discovery, retries and resumption are tested in test_failover_logic.py)


@pytest.mark.parametrize(("limit", "pages", "expected"), [
    (None, [(3, False), (3, False), (0, True)], [3, 3, 0]),
    (4, [(3, False), (1, False)], [3, 1]),
])
def test_paging_stops_at_the_end_or_the_limit(limit, pages, expected):
    delivered, sizes = 0, []
    for n, is_end in pages:
        sizes.append(core.page_size(3, delivered, limit))
        page = StreamSlice("s", events(n, delivered), delivered + n, 99, is_end)
        delivered += n
        if core.next_page(page, delivered, limit) is None:
            break
    assert sizes == [3, 3, 3][:len(sizes)] if limit is None else sizes == [3, 1]
    assert delivered == sum(expected)


def test_a_checkpoint_push_moves_the_resume_point_of_a_filtered_subscription():
    pc = core.ProtocolCore()
    corr, _ = pc.start(core.subscribe("$all", "end", 10), "h", 0.0, 5.0, inbox="box")
    pc.receive(reply(corr, "ok", {"subscription": corr, "from": 3}))
    assert pc.receive(reply(corr, "checkpoint", {"position": 50})) == ("box", core.CHECKPOINT, 50)
    assert pc.receive(reply(corr, "checkpoint", {"position": "x"})) is None
    seen = []
    state = core.SubscriptionState(corr, 10, stream="$all", from_=3, on_checkpoint=seen.append)
    state.feed(core.EVENTS, [RecordedEvent._make(wire_event(0, 20))])
    state.feed(core.CHECKPOINT, 50)
    assert state.next_event().position == 20 and core.resume_from(state) == 20
    assert state.next_event() is None and seen == [50] and core.resume_from(state) == 50


def test_a_group_consumer_drops_events_of_a_lost_connection_and_acks_only_its_own():
    state = core.GroupState(core.Subscribed(4), 10, "s", "g", 1)
    ev = [core.GroupEvent(RecordedEvent._make(wire_event(i, 10 + i)), 0) for i in range(3)]
    state.feed(core.GROUP_EVENTS, ev)
    assert state.next_event() == ev[0]
    state.feed(core.LOST, ConnectionLost("gone"))  # ev[1], ev[2] came on the dead connection
    assert state.next_event() is core.RESUME
    assert state.settle([ev[0]]) == (10,)  # handed out before: sent (it may fail)
    state.restart(core.Subscribed(9), 2)
    assert state.settle([ev[0], 11, ev[2].event]) == () and state.reconnections == 1
    state.feed(core.GROUP_EVENTS, [ev[1]])
    assert state.next_event() == ev[1] and state.settle([11]) == (11,)
    with pytest.raises(TypeError, match="cannot ack"):
        core.positions_of(["x"])
