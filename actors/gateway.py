"""Client gateway actor: routes decoded client requests.

Writes go to the storage actor in one batch per burst (group commit starts here); reads are
served on this thread from the store (LMDB readers run beside the writer) and never past the
commit position; subscription traffic goes to the subscriptions actor.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable

import pykka

from esnode.actors.messages import (
    ClientBatch,
    Committed,
    PendingWrite,
    Shutdown,
    StopAccepting,
    SubscriptionRequest,
    WriteBatch,
)
from esnode.actors.replies import reply_for
from esnode.core import messages as m
from esnode.core.clock import Clock
from esnode.core.types import (
    METADATA_TYPE,
    AppendRequest,
    DeleteRequest,
    EsError,
    EventData,
    NotReady,
    metadata_stream_of,
)
from esnode.storage.port import EventStore
from esnode.transport.port import Transport

log = logging.getLogger("esnode.gateway")

_SUBSCRIPTION_OPS = (m.Subscribe, m.Credit, m.Unsubscribe)


def metadata_append(request: m.SetMetadata) -> AppendRequest:
    """Stream metadata is a ``$metadata`` JSON event in the stream's ``$$`` stream."""
    data = json.dumps(request.metadata, separators=(",", ":")).encode()
    event = EventData(str(uuid.uuid4()), METADATA_TYPE, data, b"", True)
    return AppendRequest(metadata_stream_of(request.stream), request.expected_version, (event,))


class GatewayActor(pykka.ThreadingActor):
    def __init__(self, store: EventStore, transport: Transport, clock: Clock,
                 storage: pykka.ActorRef, subscriptions: pykka.ActorRef,
                 cluster_info: Callable[[], dict],
                 on_failure: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self._store = store
        self._transport = transport
        self._clock = clock
        self._storage = storage
        self._subscriptions = subscriptions
        self._cluster_info = cluster_info
        self._on_fatal = on_failure
        self._committed = store.writer_position
        self._accepting = True

    def on_receive(self, message: object) -> None:
        cls = type(message)
        if cls is ClientBatch:
            self._route(message.envelopes)
        elif cls is Committed:
            self._committed = max(self._committed, message.position)
        elif cls is StopAccepting:
            self._accepting = False
        elif cls is Shutdown:
            pass  # a barrier: everything received before it has been routed
        else:
            log.error("gateway got an unknown message %r", message)

    def _route(self, envelopes: list[m.ClientEnvelope]) -> None:
        writes: list[PendingWrite] = []
        replies = []
        for env in envelopes:
            request = env.request
            cls = type(request)
            if not self._accepting and cls is not m.Ping:
                replies.append((env.peer, env.corr, m.ErrorReply(
                    NotReady("the node is shutting down"))))
            elif cls is m.Append:
                writes.append(PendingWrite(env.peer, env.corr, AppendRequest(
                    request.stream, request.expected_version, request.events)))
            elif cls is m.Delete:
                writes.append(PendingWrite(env.peer, env.corr, DeleteRequest(
                    request.stream, request.expected_version, request.tombstone)))
            elif cls is m.SetMetadata:
                writes.append(PendingWrite(env.peer, env.corr, metadata_append(request)))
            elif cls in _SUBSCRIPTION_OPS:
                self._subscriptions.tell(SubscriptionRequest(env))
            else:
                replies.append((env.peer, env.corr, self._answer(request)))
        if writes:
            self._storage.tell(WriteBatch(writes))
        if replies:
            self._transport.send_client(replies)

    def _answer(self, request: object) -> m.Reply | m.ErrorReply:
        cls = type(request)
        try:
            if cls is m.ReadStream:
                return reply_for(self._store.read_stream(
                    request.stream, request.from_version, request.max_count, request.backwards,
                    up_to_position=self._committed, now_us=self._clock.now_us()))
            if cls is m.ReadAll:
                return reply_for(self._store.read_all(
                    request.from_position, request.max_count, request.backwards,
                    up_to_position=self._committed))
            if cls is m.GetMetadata:
                return reply_for(self._store.get_metadata(request.stream))
            if cls is m.ClusterInfo:
                return m.Reply(self._cluster_info())
            if cls is m.Ping:
                info = self._cluster_info()
                return m.Reply({"node": info["node"], "state": info["state"]})
        except EsError as exc:
            return m.ErrorReply(exc)
        raise TypeError(f"gateway cannot answer {cls.__name__}")

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        log.critical("gateway actor crashed: %s: %s", exception_type.__name__, exception_value)
        if self._on_fatal is not None:
            self._on_fatal(f"gateway actor crashed: {exception_value}")
