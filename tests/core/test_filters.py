"""Server-side ``$all`` filters: matching rules, wire form, bad input, and the filtered read
that scans page by page (checked against filtering everything by hand)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esnode.core.filters import EventFilter, read_all_filtered
from esnode.core.types import AllSlice, BadRequest, RecordedEvent


def event(position: int, stream: str = "order-1", event_type: str = "Placed") -> RecordedEvent:
    return RecordedEvent(f"id-{position}", stream, 0, event_type, b"{}", b"", True, 0, position)


@pytest.mark.parametrize(("f", "stream", "event_type", "expected"), [
    (EventFilter(), "order-1", "Placed", True),
    (EventFilter(), "order-1", "$metadata", False),  # system events excluded by default
    (EventFilter(include_system=True), "$$order-1", "$metadata", True),
    (EventFilter(stream_prefixes=("order-", "cart-")), "cart-9", "X", True),
    (EventFilter(stream_prefixes=("order-",)), "orders", "X", False),
    (EventFilter(stream_regex=r"^order-\d+$"), "order-12", "X", True),
    (EventFilter(stream_regex=r"^order-\d+$"), "order-x", "X", False),
    (EventFilter(type_prefixes=("Order",)), "s", "OrderPlaced", True),
    (EventFilter(type_regex="Placed|Shipped"), "s", "OrderShipped", True),
    (EventFilter(stream_prefixes=("order-",), type_prefixes=("Paid",)), "order-1", "Placed",
     False),
])
def test_matching(f, stream, event_type, expected):
    assert f.matches(event(0, stream, event_type)) is expected


def test_wire_round_trip_and_bad_input():
    f = EventFilter(("a-",), "b", ("C",), "D$", True)
    assert EventFilter.from_wire(f.to_wire()) == f and EventFilter.from_wire(None) is None
    assert EventFilter.from_wire({"stream_prefixes": "a-"}).stream_prefixes == ("a-",)
    for bad, message in [({"stream_regex": "("}, "not a valid regular expression"),
                         ({"colour": 1}, "unknown filter field"),
                         ({"type_prefixes": [""]}, "non-empty strings"),
                         ({"stream_regex": "x" * 300}, "at most 256"),
                         ("order-", "must be a map")]:
        with pytest.raises(BadRequest, match=message):
            EventFilter.from_wire(bad)


def paged(log: list[RecordedEvent]):
    """An unfiltered ``read_all`` over ``log`` (forwards), as the store pages it."""
    def read_all(start: int, count: int) -> AllSlice:
        page = [e for e in log if e.position >= start][:count]
        nxt = page[-1].position + 1 if page else start
        return AllSlice(page, nxt, not [e for e in log if e.position >= nxt])
    return read_all


@given(types=st.lists(st.sampled_from(["A", "B", "$x"]), max_size=300),
       max_count=st.integers(1, 50), max_scan=st.integers(1, 400))
def test_a_filtered_read_continued_to_the_end_returns_exactly_the_matches(types, max_count,
                                                                         max_scan):
    log = [event(i, "s", t) for i, t in enumerate(types)]
    f = EventFilter(type_prefixes=("A",))
    got, position, pages = [], 0, 0
    while True:
        page = read_all_filtered(paged(log), position, max_count, False, f, max_scan)
        assert len(page.events) <= max_count
        got += page.events
        pages += 1
        assert pages <= len(log) + 2, "no progress"
        if page.is_end:
            break
        assert page.next_position > position
        position = page.next_position
    assert got == [e for e in log if f.matches(e)]
