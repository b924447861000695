"""Client gateway actor: routes decoded client requests.

Writes go to the storage actor in one batch per burst when this node leads (group commit
starts here), or are forwarded to the leader over the internal network and its answer relayed
back. Reads are served on this thread from the store (LMDB readers run beside the writer) and
never past the commit position (read from the status board at each read), as the stored
bytes when no rule needs to look inside the records (the codec splices them into the reply:
``EncodedEvents``); subscription traffic goes to the subscriptions actor.
"""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pykka
from esnode.actors.messages import (
    ClientBatch,
    ClusterInbound,
    PendingWrite,
    Shutdown,
    StatusChanged,
    StopAccepting,
    SubscriptionRequest,
    Tick,
    WriteBatch,
)
from esnode.actors.replies import reply_for
from esnode.actors.status import StatusBoard
from esnode.core import messages as m
from esnode.core.clock import Clock
from esnode.core.filters import read_all_filtered
from esnode.core.forwarding import ForwardAppend, ForwardDelete, ForwardReply
from esnode.core.states import VNodeState
from esnode.core.types import (
    METADATA_TYPE,
    AppendRequest,
    DeleteRequest,
    EsError,
    EventData,
    NoQuorum,
    NotLeader,
    NotReady,
    OutcomeUnknown,
    metadata_stream_of,
)
from esnode.storage.port import EventStore
from esnode.transport.port import Transport

log = logging.getLogger("esnode.gateway")

_SUBSCRIPTION_OPS = (m.Subscribe, m.Credit, m.Unsubscribe)

FORWARD_ID_SHIFT = 128 - 48
"""Forward ids start at a random 48-bit number (fits msgpack's integers with room to count)."""


def split_writes(envelopes: list[m.ClientEnvelope]) -> tuple[list[PendingWrite], list]:
    """Separate client writes (as storage requests) from everything else. On the leader the
    transport thread hands writes straight to the writer: one thread hop fewer on the append
    path (the writer refuses them itself if it is no longer the leader)."""
    writes, rest = [], []
    for env in envelopes:
        if type(env.request) in m.WRITE_REQUESTS:
            writes.append(PendingWrite(env.peer, env.corr, _write_request(env.request)))
        else:
            rest.append(env)
    return writes, rest


def _write_request(request) -> AppendRequest | DeleteRequest:
    cls = type(request)
    if cls is m.Append:
        return AppendRequest(request.stream, request.expected_version, request.events)
    if cls is m.Delete:
        return DeleteRequest(request.stream, request.expected_version, request.tombstone)
    return metadata_append(request)


def metadata_append(request: m.SetMetadata) -> AppendRequest:
    """Stream metadata is a ``$metadata`` JSON event in the stream's ``$$`` stream."""
    data = json.dumps(request.metadata, separators=(",", ":")).encode()
    event = EventData(str(uuid.uuid4()), METADATA_TYPE, data, b"", True)
    return AppendRequest(metadata_stream_of(request.stream), request.expected_version, (event,))


@dataclass(slots=True)
class _Forwarded:
    peer: bytes
    corr: int
    leader: str
    deadline: float


class GatewayActor(pykka.ThreadingActor):
    def __init__(self, store: EventStore, transport: Transport, clock: Clock,
                 storage: pykka.ActorRef, subscriptions: pykka.ActorRef,
                 board: StatusBoard, cluster_info: Callable[[], dict], node_name: str,
                 forward_timeout: float = 5.0,
                 on_failure: Callable[[str], None] | None = None,
                 admin: Callable[[m.Admin], dict] | None = None) -> None:
        super().__init__()
        self._store = store
        self._transport = transport
        self._clock = clock
        self._storage = storage
        self._subscriptions = subscriptions
        self._board = board
        self._cluster_info = cluster_info
        self._name = node_name
        self._forward_timeout = forward_timeout
        self._on_fatal = on_failure
        self._admin = admin
        self._accepting = True
        self._forwarded: dict[int, _Forwarded] = {}
        # Forward ids start at a random base: after a restart, the leader's late answer to a
        # write forwarded by the previous process must not match a new write's id (it would
        # acknowledge the new write with the other's outcome).
        self._forward_ids = itertools.count(uuid.uuid4().int >> FORWARD_ID_SHIFT)

    def on_receive(self, message: object) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            log.error("gateway got an unknown message %r", message)
            return
        handler(self, message)

    def _on_client_batch(self, message: ClientBatch) -> None:
        self._route(message.envelopes)

    @property
    def _committed(self) -> int:
        """Reads never go past this: the writer publishes it on the board before it answers
        the write that committed it (read-your-writes), so no message needs to carry it."""
        return self._board.readable_position

    def _on_cluster_inbound(self, message: ClusterInbound) -> None:
        self._relay(message.messages)

    def _on_tick(self, message: Tick) -> None:
        self._expire_forwards()

    def _on_status_changed(self, message: StatusChanged) -> None:
        self._fail_forwards(lambda f: f.leader != message.leader)

    def _on_stop_accepting(self, message: StopAccepting) -> None:
        self._accepting = False

    def _on_shutdown(self, message: Shutdown) -> None:
        pass  # a barrier: everything received before it has been routed

    def _route(self, envelopes: list[m.ClientEnvelope]) -> None:
        writes: list[PendingWrite] = []
        replies = []
        board = self._board
        for env in envelopes:
            request = env.request
            cls = type(request)
            if not self._accepting and cls is not m.Ping:
                replies.append((env.peer, env.corr, m.ErrorReply(
                    NotReady("the node is shutting down"))))
            elif cls in _SUBSCRIPTION_OPS:
                self._subscriptions.tell(SubscriptionRequest(env))
            elif getattr(request, "requires_leader", False) and not board.is_leader:
                replies.append((env.peer, env.corr, m.ErrorReply(self._not_leader())))
            elif cls in m.WRITE_REQUESTS:
                write = _write_request(request)
                if board.is_leader:
                    writes.append(PendingWrite(env.peer, env.corr, write))
                else:
                    error = self._forward(env, write)
                    if error is not None:
                        replies.append((env.peer, env.corr, m.ErrorReply(error)))
            else:
                replies.append((env.peer, env.corr, self._answer(request)))
        if writes:
            self._storage.tell(WriteBatch(writes))
        if replies:
            self._transport.send_client(replies)

    # --- forwarding writes to the leader ------------------------------------------------
    def _not_leader(self) -> EsError:
        board = self._board
        if board.leader and board.leader != self._name:
            return NotLeader(board.leader_external, f"this node is not the leader; the "
                             f"leader is {board.leader}")
        return NotLeader(None, "this node is not the leader and no leader is known")

    def _forward(self, env: m.ClientEnvelope, write) -> EsError | None:
        board = self._board
        leader = board.leader
        if board.state is VNodeState.PreLeader:
            return NotReady("this node is becoming the leader; retry shortly")
        if not leader or leader == self._name:
            return NoQuorum("no leader: an election is in progress or a majority of the "
                            "cluster cannot be reached; the write was not made")
        forward_id = next(self._forward_ids)
        self._forwarded[forward_id] = _Forwarded(
            env.peer, env.corr, leader, self._clock.monotonic() + self._forward_timeout)
        user = env.principal.name if env.principal is not None else None
        if type(write) is AppendRequest:
            message = ForwardAppend(self._name, forward_id, write.stream,
                                    write.expected_version, write.events, user)
        else:
            message = ForwardDelete(self._name, forward_id, write.stream,
                                    write.expected_version, write.tombstone, user)
        self._transport.send_node([(leader, message)])
        return None

    def _relay(self, messages: list) -> None:
        replies = []
        for sender, message in messages:
            if type(message) is not ForwardReply:
                continue
            f = self._forwarded.get(message.forward_id)
            if f is None or f.leader != sender:
                continue  # late (already failed as outcome unknown) or not ours
            del self._forwarded[message.forward_id]
            replies.append((f.peer, f.corr, m.RelayedReply(message.kind, message.body)))
        if replies:
            self._transport.send_client(replies)

    def _fail_forwards(self, which: Callable[[_Forwarded], bool], why: str = "") -> None:
        failed = [(k, f) for k, f in self._forwarded.items() if which(f)]
        if not failed:
            return
        error = OutcomeUnknown(why or "the leader changed while the write was forwarded to "
                               "it; it may or may not have been made: retry with the same "
                               "event ids")
        for k, _ in failed:
            del self._forwarded[k]
        self._transport.send_client([(f.peer, f.corr, m.ErrorReply(error)) for _, f in failed])

    def _expire_forwards(self) -> None:
        now = self._clock.monotonic()
        self._fail_forwards(lambda f: f.deadline <= now,
                            f"no answer from the leader within {self._forward_timeout:g}s; "
                            "the write may or may not have been made: retry with the same "
                            "event ids")

    def _answer(self, request: object) -> m.Reply | m.ErrorReply:
        answer = self._answers.get(type(request))
        if answer is None:
            raise TypeError(f"gateway cannot answer {type(request).__name__}")
        try:
            return answer(self, request)
        except EsError as exc:
            return m.ErrorReply(exc)

    def _read_stream(self, request: m.ReadStream) -> m.Reply | m.ErrorReply:
        return reply_for(self._store.read_stream(
            request.stream, request.from_version, request.max_count, request.backwards,
            up_to_position=self._committed, now_us=self._clock.now_us(), encoded=True))

    def _read_all(self, request: m.ReadAll) -> m.Reply | m.ErrorReply:
        if request.filter is not None:
            return reply_for(read_all_filtered(
                lambda start, n: self._store.read_all(
                    start, n, request.backwards, up_to_position=self._committed),
                request.from_position, request.max_count, request.backwards, request.filter))
        return reply_for(self._store.read_all(
            request.from_position, request.max_count, request.backwards,
            up_to_position=self._committed, encoded=True))

    def _get_metadata(self, request: m.GetMetadata) -> m.Reply | m.ErrorReply:
        return reply_for(self._store.get_metadata(request.stream,
                                                  up_to_position=self._committed))

    def _cluster_info_reply(self, request: m.ClusterInfo) -> m.Reply:
        return m.Reply(self._cluster_info())

    def _ping(self, request: m.Ping) -> m.Reply:
        info = self._cluster_info()
        return m.Reply({"node": info["node"], "state": info["state"],
                        "incarnation": self._board.incarnation})

    def _admin_reply(self, request: m.Admin) -> m.Reply:
        if self._admin is None:
            raise NotReady("this node takes no admin requests")
        return m.Reply(self._admin(request))

    # The messages this actor handles, and the requests it answers itself (Event Store's
    # ``IHandle<T>``): one table each, not an if/elif chain.
    _handlers = {
        ClientBatch: _on_client_batch,
        ClusterInbound: _on_cluster_inbound,
        Tick: _on_tick,
        StatusChanged: _on_status_changed,
        StopAccepting: _on_stop_accepting,
        Shutdown: _on_shutdown,
    }
    _answers = {
        m.ReadStream: _read_stream,
        m.ReadAll: _read_all,
        m.GetMetadata: _get_metadata,
        m.ClusterInfo: _cluster_info_reply,
        m.Ping: _ping,
        m.Admin: _admin_reply,
    }

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        log.critical("gateway actor crashed: %s: %s", exception_type.__name__, exception_value)
        if self._on_fatal is not None:
            self._on_fatal(f"gateway actor crashed: {exception_value}")
