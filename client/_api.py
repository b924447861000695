"""The operations of both client flavours, written once.

Each method builds its ``Call`` (``_core``) and hands it to ``_op``: the threaded client's
``_op`` returns the result, the asyncio client's returns an awaitable of it. So
``client.append(...)`` and ``await aclient.append(...)`` are the same code.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

from esnode.client import _core as core
from esnode.client._groups import GroupState
from esnode.client.model import ClusterInfo, GroupStatus, Pong
from esnode.client.settings import ConnectionSettings
from esnode.core.filters import EventFilter
from esnode.core.persistent import GroupSettings
from esnode.core.types import (
    ANY,
    AllSlice,
    AppendSuccess,
    DeleteSuccess,
    EventData,
    RecordedEvent,
    StreamMetadata,
    StreamSlice,
)


class Operations:
    settings: ConnectionSettings
    _cluster: core.ClusterState
    _opened: weakref.WeakSet

    @property
    def subscriptions(self) -> list[SubscriptionView]:
        """The subscriptions this client opened that have not ended yet."""
        return [s for s in list(self._opened) if not s.ended]

    def _track(self, subscription: SubscriptionView) -> SubscriptionView:
        self._opened.add(subscription)
        return subscription

    @property
    def endpoint(self) -> str | None:
        """The ZeroMQ endpoint of the node the client talks to now."""
        return self._cluster.endpoint

    @property
    def node(self) -> str | None:
        """The name of the node the client talks to now (None in a direct connection)."""
        return self._cluster.node

    @property
    def stats(self) -> core.ClientStats:
        """Counters: ``retries``, ``reconnections``, ``node_changes``, ``resubscriptions``,
        ``discovery_failures``, ``heartbeat_failures``."""
        return self._cluster.stats

    def on_event(self, callback: Callable[[core.Notice], Any]) -> Callable[[], None]:
        """Call ``callback(notice)`` on every ``Retrying``, ``Reconnected``, ``NodeChanged``,
        ``Resubscribed`` and ``DiscoveryFailed`` (in the thread or event loop where it
        happens; exceptions are logged and ignored). Returns a function that unregisters it."""
        return self._cluster.on_event(callback)

    def _op(self, call: core.Call, timeout: float | None, inbox: Any = None) -> Any:
        raise NotImplementedError

    @property
    def _rl(self) -> bool:
        return self.settings.requires_leader

    def append(self, stream: str, events: Iterable[EventData] | EventData,
               expected_version: int = ANY, *, timeout: float | None = None) -> AppendSuccess:
        """Append events (``EventData``, e.g. from ``new_event``) to a stream, atomically.
        ``expected_version``: ``ANY``, ``NO_STREAM``, ``STREAM_EXISTS`` or the stream's
        last version. A timeout raises ``WriteTimeout`` (outcome unknown: retry with the same
        events, which carry the same ids, is safe)."""
        return self._op(core.append(stream, events, expected_version, self._rl), timeout)

    def read_stream(self, stream: str, from_version: int = 0, max_count: int = 500,
                    backwards: bool = False, *, timeout: float | None = None) -> StreamSlice:
        """One page of a stream (``from_version=-1`` with ``backwards``: from the end).
        Raises ``StreamNotFound`` / ``StreamDeleted``."""
        return self._op(core.read_stream(stream, from_version, max_count, backwards, self._rl),
                        timeout)

    def read_all(self, from_position: int = 0, max_count: int = 1000, backwards: bool = False,
                 *, filter: EventFilter | None = None,
                 timeout: float | None = None) -> AllSlice:
        """One page of the global log ``$all`` (``from_position=-1`` with ``backwards``:
        from the end). With ``filter`` only matching events come back, and the page may be
        empty but not the end: continue from ``next_position``."""
        return self._op(core.read_all(from_position, max_count, backwards, self._rl, filter),
                        timeout)

    def delete(self, stream: str, expected_version: int = ANY, tombstone: bool = False,
               *, timeout: float | None = None) -> DeleteSuccess:
        """Soft-delete a stream (it can be written again), or tombstone it for good."""
        return self._op(core.delete(stream, expected_version, tombstone, self._rl), timeout)

    def get_metadata(self, stream: str, *, timeout: float | None = None) -> StreamMetadata:
        """The stream's metadata (``version`` -1 and empty when never set)."""
        return self._op(core.get_metadata(stream, self._rl), timeout)

    def set_metadata(self, stream: str, metadata: dict, expected_version: int = ANY,
                     *, timeout: float | None = None) -> AppendSuccess:
        """Replace a stream's metadata (``$maxCount``, ``$maxAge``, ``$tb`` and your keys);
        ``expected_version`` is that of the metadata stream."""
        return self._op(core.set_metadata(stream, metadata, expected_version, self._rl),
                        timeout)

    # --- persistent subscription groups (docs/subscriptions.md) ----------------------------
    def create_group(self, stream: str, group: str, settings: GroupSettings | None = None,
                     *, timeout: float | None = None, **options: Any) -> None:
        """Create a persistent subscription group on a stream or ``"$all"``: ``settings``
        (``GroupSettings``) or its fields as keywords, e.g. ``start_from="start"``,
        ``consumer_strategy="Pinned"``, ``max_retry_count=5``. ``GroupExists`` if it does."""
        if settings is None:
            settings = GroupSettings.from_wire(options)
        elif options:
            settings = GroupSettings.from_wire(options, settings)
        return self._op(core.create_group(stream, group, settings), timeout)

    def update_group(self, stream: str, group: str, *, timeout: float | None = None,
                     **changes: Any) -> None:
        """Change some of a group's settings (the others keep their values)."""
        return self._op(core.update_group(stream, group, changes), timeout)

    def delete_group(self, stream: str, group: str, *, timeout: float | None = None) -> None:
        """Delete a group; its consumers are dropped with ``GroupNotFound``."""
        return self._op(core.delete_group(stream, group), timeout)

    def list_groups(self, stream: str | None = None, *,
                    timeout: float | None = None) -> list[GroupStatus]:
        return self._op(core.list_groups(stream), timeout)

    def group_info(self, stream: str, group: str, *,
                   timeout: float | None = None) -> GroupStatus:
        return self._op(core.group_info(stream, group), timeout)

    def replay_parked(self, stream: str, group: str, max_count: int = 10_000, *,
                      timeout: float | None = None) -> int:
        """Put the group's parked events back in line (oldest first, each once); returns
        how many."""
        return self._op(core.replay_parked(stream, group, max_count), timeout)

    def cluster_info(self, *, timeout: float | None = None) -> ClusterInfo:
        """The answering node's view of the cluster: members, states, epochs, positions."""
        return self._op(core.cluster_info(), timeout)

    def ping(self, *, timeout: float | None = None) -> Pong:
        return self._op(core.ping(), timeout)


class SubscriptionView:
    """What both subscription flavours show of their ``SubscriptionState``."""

    _state: core.SubscriptionState
    _closing = False

    @property
    def id(self) -> int:
        return self._state.id

    @property
    def caught_up(self) -> bool:
        """True once the history (everything before the subscription went live) was
        delivered."""
        return self._state.caught_up

    @property
    def caught_up_position(self) -> int | None:
        """The ``$all`` commit position at which the node said the history was delivered
        (None until then); after a resubscription, the latest one."""
        return self._state.caught_up_position

    @property
    def resubscriptions(self) -> int:
        """How often the subscription was made again after a loss. Each time it catches up
        anew, so ``on_caught_up`` runs again: compare this count to tell."""
        return self._state.resubscriptions

    @property
    def checkpoint(self) -> int | None:
        """Where to resume from (exclusive), to save with your own state: a stream version,
        or an ``$all`` position (a filtered subscription's checkpoints count, so it moves
        even when nothing matches); pass it as ``from_`` later. None: nothing handed out yet
        (resume from where you began)."""
        resume = core.resume_from(self._state)
        return resume if type(resume) is int else None

    @property
    def ended(self) -> bool:
        """True once the subscription was closed (or closing) or dropped for good."""
        return self._closing or self._state.ended

    @property
    def last_event(self) -> RecordedEvent | None:
        """The last event handed out. To resume after it, use ``checkpoint`` (its
        ``.version`` for a stream, its ``.position`` for ``$all``)."""
        return self._state.last_event


class GroupView:
    """What both flavours of a group consumer show of their ``GroupState``."""

    _state: GroupState
    _closing = False

    @property
    def id(self) -> int:
        return self._state.id

    @property
    def reconnections(self) -> int:
        """How often the consumer connected to the group again after a loss."""
        return self._state.reconnections

    @property
    def ended(self) -> bool:
        return self._closing or self._state.ended
