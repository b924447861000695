"""A FAKE node for client tests: one ROUTER socket in a thread answering protocol v1
(docs/protocol.md) from an in-memory dict. It is not the server — it exists to drive the
client through situations a real node does not produce on demand (silence, scripted errors)
and to test the client before the real node could run.

It decodes requests with the node's own codec (``transport/codec.py``), so a malformed request
from the client is answered ``bad_request`` exactly as the node would.

Knobs (set from the test thread):
- ``silent``: ops that are never answered (to test timeouts);
- ``unanswered``: ops that are carried out but never answered (an unknown outcome);
- ``errors``: op -> list of ``EsError``s, answered (one per request) before normal service;
- ``requests``: every decoded request, in arrival order; ``message_sizes``: how many
  requests each message carried.

``FakeCluster`` runs several fake nodes that share one store (as if replicated) and one cluster
view: it names the leader (``elect``), and ``kill`` stops a node for good (its port closes:
to a client it is a dead node). Followers answer writes with ``not_leader`` naming the
leader's external endpoint; every node answers ``cluster_info`` with the whole view.
Appends are idempotent by event id, as on the real node, so a retry of an append whose outcome
was unknown is answered ``idempotent``.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable

import zmq

from esnode.core import messages as m
from esnode.core.types import (
    ALL_STREAM,
    ANY,
    NotLeader,
    NO_STREAM,
    STREAM_EXISTS,
    AllSlice,
    AppendSuccess,
    EsError,
    RecordedEvent,
    StreamDeleted,
    StreamNotFound,
    StreamSlice,
    WrongExpectedVersion,
)
from esnode.transport.codec import DecodeError, decode_request, encode_reply


_WRITES = {"append", "delete", "set_metadata"}


class FakeNode:
    def __init__(self, name: str = "fake", host: str = "127.0.0.1", port: int | None = None,
                 shared: FakeNode | None = None, cluster: FakeCluster | None = None) -> None:
        self.name = name
        self.cluster = cluster
        self.silent: set[str] = set()
        self.unanswered: set[str] = set()
        self.errors: dict[str, list[EsError]] = defaultdict(list)
        self.requests: list[object] = []
        self.message_sizes: list[int] = []  # requests per message received, in order
        # the store: shared with ``shared`` (the nodes of a FakeCluster replicate perfectly)
        self.log: list[RecordedEvent] = shared.log if shared else []
        self.streams: dict[str, list[RecordedEvent]] = shared.streams if shared \
            else defaultdict(list)
        self.tombstoned: set[str] = shared.tombstoned if shared else set()
        self.metadata: dict[str, tuple[int, dict]] = shared.metadata if shared else {}
        self.subs: dict[tuple[bytes, int], dict] = {}
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if port is None:
            port = self._sock.bind_to_random_port(f"tcp://{host}")
        else:
            self._sock.bind(f"tcp://{host}:{port}")
        self.external = (host, port)
        self.endpoint = f"tcp://{host}:{port}"
        self.closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fake-node-{name}", daemon=True)
        self._thread.start()

    @property
    def state(self) -> str:
        return self.cluster.state_of(self) if self.cluster else "Leader"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        self._thread.join()
        self._sock.close(linger=0)
        self._ctx.term()

    # --- the loop (the socket belongs to this thread from here on) ---------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(20):
                continue
            peer, *frames = self._sock.recv_multipart()
            self.message_sizes.append(len(frames))
            for frame in frames:  # each frame is one request (docs/protocol.md)
                self._serve(peer, frame)

    def _serve(self, peer: bytes, frame: bytes) -> None:
        try:
            corr, request = decode_request(frame)
        except DecodeError as exc:
            if exc.corr is not None:
                self._send(peer, exc.corr, m.ErrorReply(exc))
            return
        self.requests.append(request)
        op = _OPS[type(request)]
        if op in self.silent:
            return
        if self.errors.get(op):
            self._send(peer, corr, m.ErrorReply(self.errors[op].pop(0)))
            return
        if self.cluster and op in _WRITES and self.state != "Leader":
            leader = self.cluster.leader_node()
            self._send(peer, corr, m.ErrorReply(NotLeader(leader.external if leader
                                                          else None)))
            return
        if op in self.unanswered:
            peer = b""  # carried out, but the reply goes nowhere
        try:
            self._handle(peer, corr, request)
        except EsError as exc:
            self._send(peer, corr, m.ErrorReply(exc))

    def _send(self, peer: bytes, corr: int, message: object) -> None:
        if peer:
            self._sock.send_multipart([peer, encode_reply(corr, message)])

    def _handle(self, peer: bytes, corr: int, req: object) -> None:
        cls = type(req)
        if cls is m.Append:
            result = self._append(req.stream, req.expected_version, req.events)
            self._send(peer, corr, m.Reply({
                "first_version": result.first_version, "last_version": result.last_version,
                "position": result.position, "idempotent": result.idempotent}))
            self._pump_all()
        elif cls is m.ReadStream:
            page = self._read_stream(req.stream, req.from_version, req.max_count, req.backwards)
            self._send(peer, corr, m.Reply({"events": page.events, "next_version":
                                            page.next_version, "last_version": page.last_version,
                                            "is_end": page.is_end}))
        elif cls is m.ReadAll:
            page = self._read_all(req.from_position, req.max_count, req.backwards)
            self._send(peer, corr, m.Reply({"events": page.events, "next_position":
                                            page.next_position, "is_end": page.is_end}))
        elif cls is m.Delete:
            self._check(req.stream, req.expected_version)
            if req.tombstone:
                self.tombstoned.add(req.stream)
            else:
                self.streams.pop(req.stream, None)
            self._send(peer, corr, m.Reply({"position": len(self.log) - 1}))
            self._pump_all()
        elif cls is m.GetMetadata:
            version, meta = self.metadata.get(req.stream, (-1, {}))
            self._send(peer, corr, m.Reply({"stream": req.stream, "version": version,
                                            "metadata": meta}))
        elif cls is m.SetMetadata:
            version, _ = self.metadata.get(req.stream, (-1, {}))
            if req.expected_version not in (ANY, version):
                raise WrongExpectedVersion("$$" + req.stream, req.expected_version, version)
            self.metadata[req.stream] = (version + 1, req.metadata)
            self._send(peer, corr, m.Reply({"first_version": version + 1, "last_version":
                                            version + 1, "position": len(self.log) - 1,
                                            "idempotent": False}))
        elif cls is m.Subscribe:
            start = {m.FROM_START: 0, m.FROM_END: None}.get(req.from_, req.from_)
            if start is None:
                start = len(self.log) if req.stream == ALL_STREAM \
                    else len(self.streams.get(req.stream, []))
            else:
                start = start + 1 if req.from_ != m.FROM_START else 0
            self.subs[(peer, corr)] = {"stream": req.stream, "next": start,
                                       "credit": req.credit, "caught_up": False}
            self._send(peer, corr, m.Reply({"subscription": corr}))
            self._pump(peer, corr)
        elif cls is m.Credit:
            sub = self.subs.get((peer, req.subscription))
            if sub is not None:
                sub["credit"] += req.n
                self._pump(peer, req.subscription)
        elif cls is m.Unsubscribe:
            self.subs.pop((peer, req.subscription), None)
            self._send(peer, corr, m.Reply({}))
        elif cls is m.ClusterInfo:
            self._send(peer, corr, m.Reply(self.cluster.view(self) if self.cluster
                                           else self.cluster_info()))
        elif cls is m.Ping:
            self._send(peer, corr, m.Reply({"node": self.name, "state": self.state}))

    def cluster_info(self) -> dict:
        host, port = self.endpoint[6:].rsplit(":", 1)
        return {"cluster": "fake", "node": "fake", "state": "Leader", "leader": "fake",
                "members": [{"name": "fake", "state": "Leader", "alive": True,
                             "external": [host, int(port)], "epoch": 1,
                             "writer_position": len(self.log) - 1,
                             "commit_position": len(self.log) - 1, "priority": 0,
                             "future_field": "ignored by clients"}]}

    # --- a tiny store -------------------------------------------------------------------------
    def _check(self, stream: str, expected: int) -> None:
        if stream in self.tombstoned:
            raise StreamDeleted(stream)
        current = len(self.streams[stream]) - 1 if stream in self.streams else NO_STREAM
        if expected == ANY or expected == current or (expected == STREAM_EXISTS
                                                      and current >= 0):
            return
        raise WrongExpectedVersion(stream, expected, current)

    def _append(self, stream: str, expected: int, events: tuple) -> AppendSuccess:
        events_of = self.streams[stream]
        known = [e for e in events_of if e.event_id == events[0].event_id]
        if known:  # a retry of a batch already written (the fake checks the first id only)
            first = known[0].version
            last = events_of[first + len(events) - 1]
            return AppendSuccess(first, last.version, last.position, True)
        self._check(stream, expected)
        first = len(events_of)
        for ev in events:
            rec = RecordedEvent(ev.event_id, stream, len(events_of), ev.event_type, ev.data,
                                ev.metadata, ev.is_json, int(time.time() * 1e6), len(self.log))
            events_of.append(rec)
            self.log.append(rec)
        return AppendSuccess(first, len(events_of) - 1, len(self.log) - 1)

    def _read_stream(self, stream: str, start: int, count: int, backwards: bool) -> StreamSlice:
        if stream in self.tombstoned:
            raise StreamDeleted(stream)
        if stream not in self.streams:
            raise StreamNotFound(stream)
        events = self.streams[stream]
        last = len(events) - 1
        if backwards:
            start = last if start == -1 else min(start, last)
            page = events[max(0, start - count + 1):start + 1][::-1]
            nxt = start - len(page)
            return StreamSlice(stream, page, nxt, last, nxt < 0)
        page = events[start:start + count]
        nxt = start + len(page)
        return StreamSlice(stream, page, nxt, last, nxt > last)

    def _read_all(self, start: int, count: int, backwards: bool) -> AllSlice:
        if backwards:
            end = len(self.log) if start == -1 else start
            page = self.log[max(0, end - count):end][::-1]
            nxt = end - len(page)
            return AllSlice(page, nxt, nxt <= 0)
        page = self.log[start:start + count]
        nxt = start + len(page)
        return AllSlice(page, nxt, nxt >= len(self.log))

    def _pump_all(self) -> None:
        for key in list(self.subs):
            self._pump(*key)

    def _pump(self, peer: bytes, corr: int) -> None:
        sub = self.subs[(peer, corr)]
        source = self.log if sub["stream"] == ALL_STREAM else self.streams.get(sub["stream"], [])
        if sub["stream"] in self.tombstoned:
            del self.subs[(peer, corr)]
            self._send(peer, corr, m.SubscriptionDropped(StreamDeleted(sub["stream"])))
            return
        batch = source[sub["next"]:sub["next"] + sub["credit"]]
        if batch:
            sub["next"] += len(batch)
            sub["credit"] -= len(batch)
            self._send(peer, corr, m.EventsPushed(batch))
        if not sub["caught_up"] and sub["next"] >= len(source):
            sub["caught_up"] = True
            self._send(peer, corr, m.CaughtUp(len(self.log) - 1))


_OPS = {m.Append: "append", m.ReadStream: "read_stream", m.ReadAll: "read_all",
        m.Delete: "delete", m.GetMetadata: "get_metadata", m.SetMetadata: "set_metadata",
        m.Subscribe: "subscribe", m.Credit: "credit", m.Unsubscribe: "unsubscribe",
        m.ClusterInfo: "cluster_info", m.Ping: "ping"}


class FakeCluster:
    """``size`` fake nodes sharing one store and one view (``nodes[leader]`` leads). Close it
    (it is a context manager) to stop every node still running."""

    def __init__(self, size: int = 3, leader: int | None = 0, host: str = "127.0.0.1",
                 hosts: Iterable[str] | None = None, port: int | None = None) -> None:
        self.leader = leader
        self.nodes: list[FakeNode] = []
        try:
            for i, h in enumerate(list(hosts) if hosts else [host] * size):
                self.nodes.append(FakeNode(f"node{i + 1}", h, port,
                                           self.nodes[0] if self.nodes else None, self))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> FakeCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def state_of(self, node: FakeNode) -> str:
        return "Leader" if self.leader is not None and self.nodes[self.leader] is node \
            else "Follower"

    def leader_node(self) -> FakeNode | None:
        return None if self.leader is None else self.nodes[self.leader]

    def elect(self, index: int | None) -> None:
        self.leader = index

    def kill(self, index: int) -> None:
        """The node dies: its port closes, it answers nothing from now on."""
        self.nodes[index].close()

    def view(self, asking: FakeNode) -> dict:
        leader = self.leader_node()
        return {"cluster": "fake", "node": asking.name, "state": asking.state,
                "leader": leader.name if leader else None,
                "members": [{"name": n.name, "state": n.state, "alive": not n.closed,
                             "external": list(n.external), "epoch": 1,
                             "writer_position": len(n.log) - 1,
                             "commit_position": len(n.log) - 1, "priority": 0}
                            for n in self.nodes]}
