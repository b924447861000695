"""The esnode Python client (docs/client.md).

    from esnode.client import connect, new_event

    with connect("tcp://127.0.0.1:2113") as client:
        client.append("order-1", [new_event("OrderPlaced", {"total": 12})])
        for event in client.iter_stream("order-1"):
            print(event.version, event.event_type, event.data)

``connect_async`` gives the asyncio flavour with the same methods as coroutines. Both share one
protocol implementation (``esnode.client._core``).
"""

from typing import TYPE_CHECKING, Any

from esnode.client._calls import GroupEvent
from esnode.client._core import (
    ClientStats,
    DiscoveryFailed,
    NodeChanged,
    Reconnected,
    Resubscribed,
    Resubscribing,
    Retrying,
)
from esnode.client.errors import (
    BadRequest,
    ClientClosed,
    ConnectionLost,
    EsError,
    GroupExists,
    GroupNotFound,
    IdempotencyConflict,
    NoQuorum,
    NotLeader,
    NotReady,
    OperationTimeout,
    OutcomeUnknown,
    ProtocolError,
    StorageFull,
    StreamDeleted,
    StreamNotFound,
    TooLarge,
    Unavailable,
    WriteConnectionLost,
    WriteTimeout,
    WriteUnavailable,
    WrongExpectedVersion,
)
from esnode.client.model import ClusterInfo, GroupStatus, MemberInfo, Pong, new_event
from esnode.client.settings import (
    ConnectionSettings,
    InvalidConnectionString,
    parse_connection_string,
)
from esnode.client.sync import Client, PersistentSubscription, Subscription, connect
from esnode.core.filters import EventFilter
from esnode.core.messages import FROM_END, FROM_START
from esnode.core.persistent import GroupSettings
from esnode.core.types import (
    ALL_STREAM,
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AllSlice,
    AppendSuccess,
    DeleteSuccess,
    EventData,
    RecordedEvent,
    StreamMetadata,
    StreamSlice,
)

if TYPE_CHECKING:
    from esnode.client.aio import (
        AsyncClient,
        AsyncPersistentSubscription,
        AsyncSubscription,
        connect_async,
    )

_ASYNC_NAMES = frozenset(("AsyncClient", "AsyncPersistentSubscription", "AsyncSubscription",
                          "connect_async"))


def __getattr__(name: str) -> Any:
    """The asyncio flavour is imported when first asked for: a threaded client's process then
    carries neither asyncio nor its objects (every full garbage collection walks them)."""
    if name in _ASYNC_NAMES:
        from esnode.client import aio

        return getattr(aio, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALL_STREAM", "ANY", "FROM_END", "FROM_START", "NO_STREAM", "STREAM_EXISTS",
    "ClientStats", "ConnectionLost", "DiscoveryFailed", "NodeChanged", "Reconnected",
    "Resubscribed", "Resubscribing", "Retrying", "WriteConnectionLost", "WriteUnavailable",
    "AllSlice", "AsyncPersistentSubscription", "GroupEvent", "GroupExists", "GroupNotFound",
    "GroupSettings", "GroupStatus", "PersistentSubscription", "AppendSuccess", "AsyncClient", "AsyncSubscription", "BadRequest", "Client",
    "ClientClosed", "ClusterInfo", "ConnectionSettings", "DeleteSuccess", "EsError",
    "EventData", "EventFilter", "IdempotencyConflict", "InvalidConnectionString", "MemberInfo", "NoQuorum",
    "NotLeader", "NotReady", "OperationTimeout", "OutcomeUnknown", "Pong", "ProtocolError",
    "RecordedEvent", "StorageFull", "StreamDeleted", "StreamMetadata", "StreamNotFound",
    "StreamSlice", "Subscription", "TooLarge", "Unavailable", "WriteTimeout",
    "WrongExpectedVersion", "connect", "connect_async", "new_event", "parse_connection_string",
]
