"""Server-side filters for ``$all`` reads and subscriptions (as KurrentDB's): a stream name
prefix or regex, an event type prefix or regex; system events (types starting with ``$``)
excluded unless asked for. A projector picks a category on the node instead of pulling every
event to the client.

A filter is validated on construction (``BadRequest``), so nothing malformed reaches a read.
Regexes are limited in length and compiled once; they run with Python's ``re.search``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from esnode.core.types import AllSlice, BadRequest, RecordedEvent

MAX_PREFIXES = 64
MAX_PATTERN = 256
DEFAULT_CHECKPOINT_INTERVAL = 1000
"""Records a filtered subscription scans between two checkpoint notices."""
MAX_SCAN = 10_000
"""Most records one filtered read looks at (its reply says where to continue)."""


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or len(value) > MAX_PREFIXES or not all(
            type(v) is str and v for v in value):
        raise BadRequest(f"{what} must be a list of at most {MAX_PREFIXES} non-empty strings")
    return tuple(value)


def _regex(value: Any, what: str) -> re.Pattern | None:
    if value is None:
        return None
    if type(value) is not str or not value or len(value) > MAX_PATTERN:
        raise BadRequest(f"{what} must be a non-empty string of at most {MAX_PATTERN} "
                         "characters")
    try:
        return re.compile(value)
    except re.error as exc:
        raise BadRequest(f"{what} {value!r} is not a valid regular expression: {exc}") from None


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which ``$all`` events to deliver. Prefixes match any one of them; a regex matches
    anywhere (``re.search``); stream and type conditions must both hold when both are
    given. System events (event types starting with ``$``) pass only with
    ``include_system``."""

    stream_prefixes: tuple[str, ...] = ()
    stream_regex: str | None = None
    type_prefixes: tuple[str, ...] = ()
    type_regex: str | None = None
    include_system: bool = False
    _stream_re: re.Pattern | None = field(default=None, repr=False, compare=False)
    _type_re: re.Pattern | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "stream_prefixes", _strings(self.stream_prefixes, "stream_prefixes"))
        set_(self, "type_prefixes", _strings(self.type_prefixes, "type_prefixes"))
        set_(self, "_stream_re", _regex(self.stream_regex, "stream_regex"))
        set_(self, "_type_re", _regex(self.type_regex, "type_regex"))
        if type(self.include_system) is not bool:
            raise BadRequest("include_system must be a boolean")

    def matches(self, event: RecordedEvent) -> bool:
        event_type, stream = event.event_type, event.stream
        if not self.include_system and event_type.startswith("$"):
            return False
        if self.stream_prefixes and not stream.startswith(self.stream_prefixes):
            return False
        if self._stream_re is not None and self._stream_re.search(stream) is None:
            return False
        if self.type_prefixes and not event_type.startswith(self.type_prefixes):
            return False
        return self._type_re is None or self._type_re.search(event_type) is not None

    def to_wire(self) -> dict:
        body: dict = {}
        if self.stream_prefixes:
            body["stream_prefixes"] = list(self.stream_prefixes)
        if self.stream_regex is not None:
            body["stream_regex"] = self.stream_regex
        if self.type_prefixes:
            body["type_prefixes"] = list(self.type_prefixes)
        if self.type_regex is not None:
            body["type_regex"] = self.type_regex
        if self.include_system:
            body["include_system"] = True
        return body

    @classmethod
    def from_wire(cls, body: Any) -> EventFilter | None:
        if body is None:
            return None
        if type(body) is not dict:
            raise BadRequest("filter must be a map")
        unknown = set(body) - {"stream_prefixes", "stream_regex", "type_prefixes",
                               "type_regex", "include_system"}
        if unknown:
            raise BadRequest(f"unknown filter field(s): {', '.join(sorted(map(str, unknown)))}")
        return cls(body.get("stream_prefixes", ()), body.get("stream_regex"),
                   body.get("type_prefixes", ()), body.get("type_regex"),
                   body.get("include_system", False))


def read_all_filtered(read_all: Callable[[int, int], AllSlice], from_position: int,
                      max_count: int, backwards: bool, event_filter: EventFilter,
                      max_scan: int = MAX_SCAN) -> AllSlice:
    """Up to ``max_count`` matching events from ``from_position``, looking at no more than
    ``max_scan`` records; ``next_position`` is where the scan stopped (continue from there
    even when no event matched). ``read_all(start, count)`` reads one unfiltered page."""
    out: list[RecordedEvent] = []
    position, scanned = from_position, 0
    while True:
        page = read_all(position, min(max(max_count, 100), max_scan - scanned))
        for event in page.events:
            if event_filter.matches(event):
                out.append(event)
                if len(out) == max_count:
                    # forwards next_position is inclusive, backwards exclusive
                    after = event.position if backwards else event.position + 1
                    return AllSlice(out, after, page.is_end and event is page.events[-1])
        scanned += abs(page.next_position - position)
        stalled = page.next_position == position
        position = page.next_position
        if page.is_end or stalled or scanned >= max_scan:
            return AllSlice(out, position, page.is_end or stalled)
