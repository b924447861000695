"""ZeroMQ transport: one poller thread owns every socket of the node.

The thread polls the external ROUTER and a wake-up pipe. Incoming frames are decoded here (so
actors get typed messages) and handed over in batches: one ``tell`` per drained burst, not per
request, which keeps the append path to few thread hops. Replies from any thread go into a
deque and the pipe wakes the poller, which encodes and sends them.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import zmq

from esnode.core.cluster_messages import PeerDisconnected
from esnode.core.forwarding import claimed_sender
from esnode.core.messages import (
    Authenticate,
    ClientEnvelope,
    Credit,
    ErrorReply,
    RelayedReply,
    Reply,
)
from esnode.core.types import BadRequest, EsError, NotAuthenticated, TooBusy
from esnode.core.users import LoginThrottle, LoginThrottled
from esnode.transport.codec import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_FRAMES_PER_MESSAGE,
    DecodeError,
    decode_request,
    encode_reply,
)
from esnode.transport.internal_codec import InternalCodec
from esnode.transport.port import ClientHandler, NodeHandler, PeerGoneHandler
from esnode.transport.security import (
    HANDSHAKE_FAILURES,
    NodeSecurity,
    RefusalLog,
    ZapHandler,
    describe_handshake_failure,
    secure_dealer,
    secure_router,
)

log = logging.getLogger("esnode.transport")

MAX_BURST = 1024
"""Most requests decoded before handing a batch to the gateway."""

SEND_HWM = 100_000
"""Per-peer queued outgoing messages; subscriptions are bounded by credit well below it."""

ROUTER_EVENTS = (zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | HANDSHAKE_FAILURES) \
    & ~zmq.EVENT_HANDSHAKE_FAILED_AUTH
"""What a secured ROUTER's monitor reports: ZAP logs its own refusals (with the address); a
failed CURVE handshake is logged when its connection closes, naming the address accepted on
that descriptor."""

SEED_MESSAGES = ("Gossip",)
"""What a node sends to a seed whose name it does not know yet."""

MAX_IN_FLIGHT = 1024
"""Requests one client connection may have unanswered; more are refused with ``too_busy``
(never executed), which bounds what one client can queue inside the node."""

HANDSHAKE_MS = 5_000
"""A connection that has not completed its ZMTP (or CURVE) handshake by then is closed."""

HEARTBEAT_MS, HEARTBEAT_TIMEOUT_MS = 10_000, 30_000
"""ZMTP heartbeats on the external socket: a peer that answers no PING for 30 s is dropped."""

RECV_HWM = 2 * MAX_IN_FLIGHT
"""Messages libzmq queues per connection before it stops reading that connection's TCP
stream: past the in-flight bound a client's further requests wait in its own kernel buffers,
not in the node's memory."""

PEER_HWM = 10_000
"""Queued messages to one cluster peer before new ones are dropped (and retried above)."""


LOGIN_WORKERS = 2
"""Threads checking passwords (scrypt releases the GIL): the poller never runs scrypt."""

MAX_LOGINS_CHECKING = 64
"""Connections with a login waiting for or in a login thread, node-wide; a login beyond
that is answered ``too_busy`` at once."""


ANSWERS = (Reply, ErrorReply, RelayedReply)
"""The one final answer each request (but ``credit``) gets; events pushed are not answers."""


def recv_bounded(sock: zmq.Socket, max_frames: int, fds: list[int] | None = None
                 ) -> list[bytes]:
    """One message's frames, at most ``max_frames`` + 1 of them (the extra one says "too
    many"); the rest are received and dropped without keeping them. With ``fds``, appends
    the descriptor of the connection the body came from (-1 when there is no body)."""
    frames = [sock.recv(zmq.NOBLOCK)]
    fd = -1
    while sock.getsockopt(zmq.RCVMORE):
        frame = sock.recv(zmq.NOBLOCK, copy=False)
        if fd == -1 and fds is not None:
            fd = frame.get(zmq.SRCFD)
        if len(frames) <= max_frames:
            frames.append(frame.bytes)
    if fds is not None:
        fds.append(fd)
    return frames


def peer_address(fd: int) -> str:
    """``host:port`` of the TCP peer on a descriptor libzmq just accepted (for log lines)."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:  # already closed: monitor events (v1) do not carry the address
        return f"a peer whose connection closed before its address was read (fd {fd})"


def close_all(sockets: Iterable[zmq.Socket], monitors: Iterable[zmq.Socket]) -> None:
    """Close ``sockets`` and their ``monitors``, each monitor stopped first: a socket closed
    while its monitor runs is never reaped by a shared context, whose later connections then
    silently stop (seen in long test runs as nodes that never answer)."""
    for sock in sockets:
        if not sock.closed:
            sock.disable_monitor()  # a no-op for a socket without one
    for sock in [*monitors, *sockets]:
        sock.close(linger=0)


class Waker:
    """A self-pipe that lets any thread wake a zmq poller; at most one byte is pending."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._pending = False

    def wake(self) -> None:
        if not self._pending and self._write_fd >= 0:
            self._pending = True
            try:
                os.write(self._write_fd, b"w")
            except BlockingIOError:
                pass

    def clear(self) -> None:
        try:
            os.read(self.read_fd, 4096)
        except BlockingIOError:
            pass
        self._pending = False

    def close(self) -> None:
        """Close the pipe; later wakes (a late reply after a stop) do nothing, and never
        write into whatever file reuses the descriptor's number."""
        write_fd, self._write_fd = self._write_fd, -1
        os.close(self.read_fd)
        os.close(write_fd)


@dataclass(slots=True)
class PendingLogin:
    """A login of one connection being checked off the poller thread, and what that
    connection sent meanwhile (held back, in order, until the login is decided)."""

    fd: int
    queued: collections.deque = field(default_factory=collections.deque)
    closed: bool = False
    """Its connection closed (or its descriptor was reused): no session comes of it."""


class ZmqTransport:
    """External ROUTER for clients; optionally an internal ROUTER (cluster traffic in) and one
    DEALER per peer node (cluster traffic out, identified by this node's name)."""

    def __init__(self, external_bind: tuple[str, int],
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 context: zmq.Context | None = None,
                 internal_bind: tuple[str, int] | None = None,
                 node_name: str = "",
                 peers: dict[str, tuple[str, int]] | None = None,
                 internal_codec: InternalCodec | None = None,
                 members: Iterable[str] = (),
                 seeds: Iterable[tuple[str, int]] = (),
                 security: NodeSecurity | None = None,
                 seed_hints: dict[tuple[str, int], str] | None = None,
                 internal_also: Iterable[int] = ()) -> None:
        self._bind = external_bind
        self._internal_also = tuple(internal_also)
        self._max_message_size = max_message_size
        self._ctx = context or zmq.Context.instance()
        self._security = security or NodeSecurity()
        self.refusals = RefusalLog(log)
        """Every refusal (handshakes, bad frames, impersonation), counted; logged sparingly."""
        # One context (and ZAP handler) per secured network: a key allowed on one network
        # means nothing on the other.
        self._int_ctx = zmq.Context() if self._security.internal else self._ctx
        self._ext_ctx = zmq.Context() if self._security.external else self._ctx
        self._zap: list[ZapHandler] = []
        self._monitors: dict[zmq.Socket, str] = {}
        """Monitor socket -> the network ("internal", "external") of the ROUTER it watches."""
        self._peer_monitors: dict[zmq.Socket, str] = {}
        """Monitor socket -> the peer whose DEALER it watches for closed connections."""
        self._probe_monitors: dict[zmq.Socket, zmq.Socket] = {}
        """Monitor socket -> the seed probe (DEALER) it watches."""
        self._seed_members: dict[zmq.Socket, str] = {}
        self._probes: dict[zmq.Socket, str] = {}
        self._seed_hints = dict(seed_hints or {})
        """Which member the topology puts at a seed endpoint: probed with that key alone."""
        self._accepted: dict[zmq.Socket, dict[int, str]] = {}
        self._failed: dict[zmq.Socket, str] = {}
        self._internal_bind = internal_bind
        self._node_name = node_name
        self._peers = dict(peers or {})
        self._members = set(members) | set(self._peers)
        self._members.discard(node_name)
        self._new_seeds: collections.deque = collections.deque(seeds)
        self._internal_codec = internal_codec
        self._node_outbox: collections.deque = collections.deque()
        self._send_lock = threading.Lock()
        self._direct: dict[str, zmq.Socket] = {}
        """The topology's peers' DEALERs, once made, for ``send_node`` (under _send_lock)."""
        self._outbox: collections.deque = collections.deque()
        self._waker = Waker()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._endpoint = ""
        self._paused = False
        self._dealers: dict[str, zmq.Socket] = {}
        self._router_peers: set[str] = set()
        self._in_flight: dict[bytes, int] = {}
        """Unanswered requests per client connection (poller thread only)."""
        self._login: Any = None
        """``authenticate(user, password) -> Principal`` when ZeroMQ logins are on."""
        self._login_refusal = ""
        self._sessions: dict[bytes, tuple[int, Any]] = {}
        """Routing id -> (descriptor of its connection, principal): who is logged in where."""
        self._throttle = LoginThrottle()
        self._checking: dict[bytes, PendingLogin] = {}
        """Routing id -> its login being checked (poller thread only)."""
        self._decided: collections.deque = collections.deque()
        """(envelope, principal or error) of checked logins, from the workers to the poller."""
        self._login_pool: ThreadPoolExecutor | None = None

    def enable_logins(self, authenticate: Any, plaintext_ok: bool = False,
                      throttle: LoginThrottle | None = None) -> None:
        """Accept ``authenticate`` requests (before ``start``), checked on worker threads
        behind ``throttle`` (failed logins per address). A password is accepted only over
        CURVE (encrypted), unless ``plaintext_ok`` (tests and development only)."""
        self._login = authenticate
        self._throttle = throttle or self._throttle
        self._login_pool = ThreadPoolExecutor(LOGIN_WORKERS, thread_name_prefix="login")
        if self._security.external is None and not plaintext_ok:
            self._login_refusal = (
                "not authenticated: this node accepts passwords only over CURVE (set the "
                "external key), or with [security] allow_plaintext_passwords = true")

    @property
    def external_endpoint(self) -> str:
        return self._endpoint

    def start(self, on_client: ClientHandler, on_peer_gone: PeerGoneHandler,
              on_node: NodeHandler | None = None) -> None:
        self._on_client, self._on_peer_gone, self._on_node = on_client, on_peer_gone, on_node
        self._thread = threading.Thread(target=self._run, name="transport", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def send_client(self, replies: Iterable[tuple[bytes, int, Any]]) -> None:
        self._outbox.extend(replies)
        self._waker.wake()

    def add_seeds(self, endpoints: Iterable[tuple[str, int]]) -> None:
        """Gossip seeds (internal endpoints of nodes whose names are not known yet, e.g. from
        DNS); thread-safe. Already known endpoints are ignored."""
        self._new_seeds.extend(endpoints)
        self._waker.wake()

    def pause_receiving(self) -> None:
        """Stop reading client requests (shutdown): what was read gets answered, what was not
        stays unread and its clients time out, knowing it never ran."""
        self._paused = True
        self._waker.wake()

    def send_node(self, messages: Iterable[tuple[str, Any]]) -> None:
        """Send ``(peer_name, cluster_message)``; thread-safe. Messages to an unreachable
        peer are dropped: cluster protocols carry their own acks and retries.

        A message to a member of the topology goes out on the caller's thread, on that
        peer's DEALER (no other thread uses it but under ``_send_lock``, and the poller never
        polls it), so a replica's shipment or ack does not wake the poller thread; the rest
        is queued for the poller. Either way each peer gets its messages in order: nothing
        is sent directly while anything is queued (the poller drains the queue under the
        same lock)."""
        codec = self._internal_codec
        with self._send_lock:
            direct, outbox = self._direct, self._node_outbox
            if not direct or outbox or codec is None:
                outbox.extend(messages)
                queued = bool(outbox)
            else:
                queued = False
                for name, message in messages:
                    dealer = direct.get(name)
                    if dealer is None or queued:
                        outbox.append((name, message))
                        queued = True
                    else:
                        self._send_to(dealer, codec.encode(message))
        if queued:
            self._waker.wake()

    @staticmethod
    def _send_to(dealer: zmq.Socket, frame: bytes) -> None:
        try:
            dealer.send(frame, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            if exc.errno not in (zmq.EAGAIN, zmq.EHOSTUNREACH):
                raise
            # peer down or too far behind: the protocol above retries

    def stop(self) -> None:
        self._stopping.set()
        self._waker.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._login_pool is not None:
            self._login_pool.shutdown(wait=True, cancel_futures=True)
        self._waker.close()
        self.refusals.flush()
        for zap in self._zap:
            zap.stop()
        for ctx in {self._int_ctx, self._ext_ctx} - {self._ctx}:
            ctx.term()

    # --- the poller thread ---------------------------------------------------------------
    def _router(self, bind: tuple[str, int], which: str) -> zmq.Socket:
        net = self._security.internal if which == "internal" else self._security.external
        sock = (self._int_ctx if which == "internal" else self._ext_ctx).socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        if net is not None:
            secure_router(sock, net)
            self._monitors[sock.get_monitor_socket(ROUTER_EVENTS)] = which
        elif which == "external" and self._login is not None:
            # Sessions are cleared when their connection is accepted or closed (by descriptor).
            self._monitors[sock.get_monitor_socket(ROUTER_EVENTS)] = which
        if which == "internal":
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted peer takes its name back
        # External: no handover (libzmq's default), so a client that sets its ROUTING_ID to a
        # connected client's is ignored, never given that connection's replies or session.
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message_size)
        sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
        if which == "external":
            sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        sock.setsockopt(zmq.RCVHWM, RECV_HWM)
        host, port = bind
        try:
            sock.bind(f"tcp://{host}:{port}")
        except zmq.ZMQError as exc:
            sock.close()
            raise OSError(f"cannot bind the {which} endpoint {host}:{port}: {exc}") from None
        return sock

    @staticmethod
    def _bind_also(sock: zmq.Socket, bind: tuple[str, int]) -> None:
        try:
            sock.bind(f"tcp://{bind[0]}:{bind[1]}")
        except zmq.ZMQError as exc:
            raise OSError(f"cannot bind the internal (gossip) endpoint {bind[0]}:{bind[1]}: "
                          f"{exc}") from None

    def _dealer(self, host: str, port: int, member: str = "") -> zmq.Socket:
        """A DEALER to a peer's internal endpoint; when secured, a CURVE client that accepts
        only the server holding ``member``'s key (so the peer is who we think it is)."""
        sock = self._int_ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        net = self._security.internal
        if net is not None:
            secure_dealer(sock, net, self._security.member_keys[member])
        sock.setsockopt(zmq.ROUTING_ID, self._node_name.encode())
        sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue for a peer that is not connected
        sock.setsockopt(zmq.SNDHWM, PEER_HWM)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.connect(f"tcp://{host}:{port}")
        return sock

    def _run(self) -> None:
        sockets: list[zmq.Socket] = []
        try:
            s = self._security
            for ctx, net, label in ((self._int_ctx, s.internal, "internal"),
                                    (self._ext_ctx, s.external, "external")):
                if net is not None:
                    self._zap.append(ZapHandler(ctx, net, self.refusals, label).start())
            sock = self._router(self._bind, "external")
            sockets.append(sock)
            self._endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            internal = None
            if self._internal_bind is not None:
                internal = self._router(self._internal_bind, "internal")
                sockets.append(internal)
                for port in self._internal_also:  # the gossip port: same socket, same rules
                    self._bind_also(internal, (self._internal_bind[0], port))
                self.internal_endpoint = internal.getsockopt_string(zmq.LAST_ENDPOINT)
            self._dealers = {name: self._dealer(*addr, member=name)
                             for name, addr in self._peers.items()}
            sockets.extend(self._dealers.values())
            for name, dealer in self._dealers.items():
                self._watch(name, dealer)
            sockets.extend(m for m in self._monitors if m not in sockets)
            with self._send_lock:
                self._direct = dict(self._dealers)
        except BaseException as exc:  # reported to start()'s caller
            close_all(sockets, self._monitors)
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._internal = internal
        self._seed_dealers: dict[zmq.Socket, tuple[str, int]] = {}
        poller = self._poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        if internal is not None:
            poller.register(internal, zmq.POLLIN)
        poller.register(self._waker.read_fd, zmq.POLLIN)
        for monitor in [*self._monitors, *self._peer_monitors]:
            poller.register(monitor, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                if self._paused and sock in poller:
                    poller.unregister(sock)
                if self._new_seeds:
                    self._connect_seeds()
                events = dict(poller.poll())
                if sock in events:
                    self._receive(sock)
                if internal is not None and internal in events:
                    self._receive_internal(internal)
                for dealer in [d for d in self._seed_dealers if d in events]:
                    if dealer in self._seed_dealers:  # not closed as a surplus probe
                        self._receive_seed(dealer)
                for monitor in [m for m in self._monitors if m in events]:
                    self._monitor_event(monitor)
                for monitor in [m for m in self._probe_monitors if m in events]:
                    self._probe_event(monitor)
                for monitor in [m for m in self._peer_monitors if m in events]:
                    self._peer_event(monitor)
                if self._waker.read_fd in events:
                    self._waker.clear()
                if self._decided:
                    self._hand_over(self._logins_decided())
                self._flush(sock)
                self._flush_nodes()
            self._flush(sock)
            self._flush_nodes()
        except Exception:
            log.exception("transport thread failed")
            raise
        finally:
            with self._send_lock:
                self._direct = {}
            close_all([*sockets, *self._seed_dealers],
                      [*self._monitors, *self._probe_monitors, *self._peer_monitors])

    def _receive(self, sock: zmq.Socket) -> None:
        batch: list[ClientEnvelope] = []
        errors: list[tuple[bytes, int, Any]] = []
        max_size = self._max_message_size
        in_flight = self._in_flight
        fds: list[int] | None = [] if self._login is not None else None
        batch_fds: list[int] = []
        while len(batch) + len(errors) < MAX_BURST:
            try:
                # (a longer message is refused whole, its frames discarded unread)
                frames = recv_bounded(sock, 1 + MAX_FRAMES_PER_MESSAGE, fds)
            except zmq.Again:
                break
            peer = frames[0]  # the routing id, then the requests
            if len(frames) > 1 + MAX_FRAMES_PER_MESSAGE:
                self._refuse_frame(peer, errors, DecodeError(
                    f"a message carries at most {MAX_FRAMES_PER_MESSAGE} requests (a frame "
                    "each), got more"))
                continue
            for body in frames[1:]:  # each frame is one request
                try:
                    corr, request = decode_request(body, max_size)
                except DecodeError as exc:
                    self._refuse_frame(peer, errors, exc)
                    continue
                if type(request) is not Credit:  # every other request gets exactly one answer
                    n = in_flight.get(peer, 0)
                    if n >= MAX_IN_FLIGHT:  # counted (and logged, sparingly) when answered
                        errors.append((peer, corr, ErrorReply(TooBusy(
                            f"this connection already has {n} requests in flight (the limit); "
                            "read their answers before sending more"))))
                        continue
                    in_flight[peer] = n + 1
                batch.append(ClientEnvelope(peer, corr, request))
                if fds is not None:
                    batch_fds.append(fds[-1])
        if fds is not None:
            batch = self._logged_in(batch, batch_fds, errors)
        elif any(type(e.request) is Authenticate for e in batch):
            errors.extend((e.peer, e.corr, ErrorReply(BadRequest(
                "authentication is not enabled on this node"))) for e in batch
                if type(e.request) is Authenticate)
            batch = [e for e in batch if type(e.request) is not Authenticate]
        if errors:
            self._outbox.extend(errors)
        self._hand_over(batch)

    def _refuse_frame(self, peer: bytes, errors: list[tuple[bytes, int, Any]],
                      exc: DecodeError) -> None:
        self.refusals.refuse(f"client:{peer.hex()}", "bad_request",
                             "client %s request %d: bad_request: %s", peer.hex(),
                             exc.corr or 0, exc)
        errors.append((peer, exc.corr or 0, ErrorReply(exc)))

    def _hand_over(self, batch: list[ClientEnvelope]) -> None:
        """Give decoded (and, with logins, attributed) requests to the node."""
        if batch:
            try:
                self._on_client(batch)
            except Exception as exc:  # a bug behind us must not silence the node
                self._handler_failed("client", exc)
                self._outbox.extend((e.peer, e.corr, ErrorReply(BadRequest(
                    f"the node failed to take this request ({type(exc).__name__})")))
                    for e in batch)

    def _logged_in(self, batch: list[ClientEnvelope], fds: list[int],
                   answers: list[tuple[bytes, int, Any]]) -> list[ClientEnvelope]:
        """Starts checking the logins of ``batch`` (on the login threads, behind the failed
        login throttle of the client's address) and gives each other request the principal
        its connection logged in as; a request arriving on a connection whose login is being
        checked waits for the verdict. The external monitor is drained first: a message read
        here was queued after its connection's ACCEPTED event, so a session of an earlier
        connection on the same descriptor is gone before the message is looked at."""
        for monitor, which in list(self._monitors.items()):
            if which == "external":
                self._monitor_event(monitor)
        passed: list[ClientEnvelope] = []
        for env, fd in zip(batch, fds):
            self._attribute(env, fd, passed, answers)
        return passed

    def _attribute(self, env: ClientEnvelope, fd: int, passed: list[ClientEnvelope],
                   answers: list[tuple[bytes, int, Any]]) -> None:
        """One request of a connection (on ``fd``), in the order it sent them: held back
        behind a login being checked, started as a login, or passed on with its principal."""
        pending = self._checking.get(env.peer)
        if pending is not None:
            pending.queued.append((env, fd))
            return
        if type(env.request) is not Authenticate:
            session = self._sessions.get(env.peer)
            principal = session[1] if session is not None and session[0] == fd else None
            passed.append(env if principal is None else ClientEnvelope(
                env.peer, env.corr, env.request, principal))
            return
        self._sessions.pop(env.peer, None)  # a failed login leaves the connection anonymous
        try:
            if self._login_refusal:
                raise NotAuthenticated(self._login_refusal)
            if len(self._checking) >= MAX_LOGINS_CHECKING:
                raise TooBusy(f"{len(self._checking)} logins are being checked (the limit); "
                              "retry later")
        except EsError as exc:
            answers.append((env.peer, env.corr, ErrorReply(exc)))
            return
        self._checking[env.peer] = PendingLogin(fd)
        future = self._login_pool.submit(self._throttle.authenticate, self._login,
                                         self._client_host(fd),
                                         env.request.user, env.request.password)
        future.add_done_callback(lambda done: self._login_checked(env, done))

    def _login_checked(self, env: ClientEnvelope, done: Future) -> None:
        """On a worker thread: post the verdict to the poller thread."""
        try:
            verdict = done.result()
        except BaseException as exc:  # noqa: BLE001 - an error answer, whatever it was
            verdict = exc
        self._decided.append((env, verdict))
        self._waker.wake()

    def _logins_decided(self) -> list[ClientEnvelope]:
        """On the poller thread: answer each checked login, open its session (unless its
        connection closed meanwhile), then attribute what its connection sent meanwhile."""
        passed: list[ClientEnvelope] = []
        answers: list[tuple[bytes, int, Any]] = []
        while self._decided:
            env, verdict = self._decided.popleft()
            pending = self._checking.pop(env.peer)
            if isinstance(verdict, BaseException):
                if not isinstance(verdict, EsError):
                    self._handler_failed("login", verdict)
                    verdict = NotAuthenticated(f"not authenticated: the node failed to check "
                                               f"the password ({type(verdict).__name__})")
                answers.append((env.peer, env.corr, ErrorReply(verdict)))
            elif pending.closed:
                answers.append((env.peer, env.corr, ErrorReply(NotAuthenticated(
                    "not authenticated: the connection closed during the login"))))
            else:
                self._sessions[env.peer] = (pending.fd, verdict)
                answers.append((env.peer, env.corr, Reply({"user": verdict.name})))
            for queued, fd in pending.queued:
                self._attribute(queued, fd, passed, answers)
        self._outbox.extend(answers)
        return passed

    def _client_host(self, fd: int) -> str:
        """The address (without port) of the client connection on ``fd``: what the failed
        login throttle counts by."""
        for monitor, which in self._monitors.items():
            address = self._accepted.get(monitor, {}).get(fd) if which == "external" else None
            if address is not None and not address.startswith("a peer"):
                return address.rpartition(":")[0] or address
        return "an unknown address"

    def _forget_connection(self, fd: int) -> None:
        """A connection on ``fd`` opened or closed: no session survives it, none of a login
        being checked on it is opened."""
        for peer in [p for p, (f, _) in self._sessions.items() if f == fd]:
            del self._sessions[peer]
        for pending in self._checking.values():
            if pending.fd == fd:
                pending.closed = True

    def _flush(self, sock: zmq.Socket) -> None:
        """Send what the outbox holds, one message per client connection with each reply or
        push as one frame, in the order queued (``MAX_FRAMES_PER_MESSAGE`` frames at most): a send
        costs a wake-up of ZeroMQ's I/O thread, a frame costs a copy (docs/protocol.md)."""
        outbox = self._outbox
        in_flight = self._in_flight
        messages: dict[bytes, list[bytes]] = {}
        while outbox:
            peer, corr, message = outbox.popleft()
            if type(message) in ANSWERS:
                n = in_flight.get(peer, 0)
                if n > 1:
                    in_flight[peer] = n - 1
                else:
                    in_flight.pop(peer, None)
            if type(message) is ErrorReply and not isinstance(message.error, DecodeError):
                self.refusals.refuse(f"client:{peer.hex()}", "login_throttled"
                                     if type(message.error) is LoginThrottled
                                     else message.error.code,
                                     "client %s request %d: %s: %s", peer.hex(), corr,
                                     message.error.code, message.error, level=logging.INFO)
            frames = messages.get(peer)
            if frames is None:
                messages[peer] = [peer, encode_reply(corr, message)]
            else:
                frames.append(encode_reply(corr, message))
                if len(frames) > MAX_FRAMES_PER_MESSAGE:
                    self._send_client(sock, messages.pop(peer))
        for frames in messages.values():
            self._send_client(sock, frames)

    def _send_client(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                # The client vanished or stopped reading: drop the replies, keep serving.
                peer = frames[0]
                self._in_flight.pop(peer, None)
                self._sessions.pop(peer, None)
                self._on_peer_gone(peer)
            else:
                raise

    def _receive_internal(self, sock: zmq.Socket) -> None:
        batch: list[tuple[str, Any]] = []
        pinned = self._security.internal is not None
        for _ in range(MAX_BURST):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=not pinned)
            except zmq.Again:
                break
            if pinned:
                # ZAP named the member whose key completed the handshake (User-Id): the name
                # the peer claims (its routing id) must be that member's.
                user = frames[-1].get("User-Id")
                if user != frames[0].bytes.decode(errors="replace"):
                    self.refusals.refuse(
                        f"internal:{user}", "impersonation", "internal network: refused a "
                        "message from %s claiming to be %r: its key is member %r's",
                        frames[-1].get("Peer-Address"),
                        frames[0].bytes.decode(errors="replace"), user)
                    continue
                frames = [f.bytes for f in frames]
            peer = frames[0]
            sender = peer.decode(errors="replace")
            try:
                if len(frames) != 2 or self._internal_codec is None:
                    raise BadRequest("a cluster message is exactly one frame")
                message = self._internal_codec.decode(frames[1])
                if sender not in self._members:
                    raise BadRequest(f"unknown cluster member {sender!r}")
                self._router_peers.add(sender)
                batch.append((sender, message))
            except BadRequest as exc:
                # Refuse clearly (in the client protocol's error shape, which is what a
                # misdirected client understands) and carry on.
                self.refusals.refuse(f"internal:{sender}", "bad_cluster_message",
                                     "refused a message on the internal endpoint from %r: %s",
                                     sender, exc)
                try:
                    sock.send_multipart((peer, encode_reply(0, ErrorReply(exc))), zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
        if batch and self._on_node is not None:
            try:
                self._on_node(batch)
            except Exception as exc:  # cluster protocols retry what is lost here
                self._handler_failed("cluster", exc)

    def _handler_failed(self, what: str, exc: Exception) -> None:
        """A handler raised on the poller thread: log it (the first with its traceback, the
        rest counted) and keep serving; the thread dying would leave the node deaf."""
        if not self.refusals.by_reason.get("handler_failed"):
            log.error("the %s handler failed; the transport carries on", what, exc_info=exc)
        self.refusals.refuse(f"handler:{what}", "handler_failed",
                             "the %s handler failed: %r", what, exc, level=logging.ERROR)

    def _watch(self, name: str, dealer: zmq.Socket) -> zmq.Socket:
        """Monitor the DEALER to peer ``name``: its closed connections become hints."""
        monitor = dealer.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._peer_monitors[monitor] = name
        return monitor

    def _peer_event(self, monitor: zmq.Socket) -> None:
        """The TCP connection to a peer closed (a killed process closes its connections at
        once): tell the cluster core, which decides whether that is worth an election."""
        from zmq.utils.monitor import recv_monitor_message

        name, hints = self._peer_monitors[monitor], []
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            if event["event"] == zmq.EVENT_DISCONNECTED:
                hints.append((name, PeerDisconnected(name)))
        if hints and self._on_node is not None:
            log.info("connection to %s closed", name)
            try:
                self._on_node(hints[-1:])
            except Exception as exc:
                self._handler_failed("cluster", exc)

    def _probe_event(self, monitor: zmq.Socket) -> None:
        """A seed probe completed its CURVE handshake: the member whose key it used is there."""
        from zmq.utils.monitor import recv_monitor_message

        while monitor in self._probe_monitors:  # closed by _located once the member is found
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            dealer = self._probe_monitors[monitor]
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED and dealer in self._probes:
                self._located(self._probes[dealer], dealer)

    def _monitor_event(self, monitor: zmq.Socket) -> None:
        """A secured ROUTER's monitor spoke: a failed CURVE handshake (a plaintext peer, or one
        that does not hold the key it expects us to have) is logged, sparingly, with the
        address accepted on that descriptor."""
        from zmq.utils.monitor import recv_monitor_message

        which = self._monitors[monitor]
        accepted = self._accepted.setdefault(monitor, {})
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind, value = event["event"], event["value"]
            if which == "external" and kind in (zmq.EVENT_ACCEPTED, zmq.EVENT_DISCONNECTED):
                self._forget_connection(value)
            if kind == zmq.EVENT_ACCEPTED:
                accepted[value] = peer_address(value)
            elif kind & HANDSHAKE_FAILURES:
                self._failed[monitor] = describe_handshake_failure(kind, value)
            elif kind == zmq.EVENT_DISCONNECTED:
                peer = accepted.pop(value, None)
                why = self._failed.pop(monitor, None)
                if why is not None:
                    host = (peer or "").rpartition(":")[0] or peer
                    self.refusals.refuse(f"{which}:{host}", "handshake",
                                         "%s network: refused %s at the handshake: %s", which,
                                         peer or "a peer", why)

    # --- gossip seeds: endpoints whose node names we learn from their first message --------
    def _connect_seeds(self) -> None:
        known = set(self._seed_dealers.values()) | set(self._peers.values())
        while self._new_seeds:
            endpoint = tuple(self._new_seeds.popleft())
            if endpoint in known or endpoint == self._internal_bind:
                continue
            known.add(endpoint)
            if self._security.internal is None:
                probes = {"": self._dealer(*endpoint)}
            else:
                # Who is there is unknown, and CURVE needs the server's key up front: one
                # connection per member not located yet; only the right one completes.
                hint = self._seed_hints.get(endpoint)
                probes = {m: self._dealer(*endpoint, member=m)
                          for m in ([hint] if hint in self._members else
                                    sorted(self._members - set(self._dealers)))}
            for member, dealer in probes.items():
                self._seed_dealers[dealer] = endpoint
                self._seed_members[dealer] = member
                self._poller.register(dealer, zmq.POLLIN)
                if member:
                    monitor = dealer.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
                    self._probe_monitors[monitor] = dealer
                    self._probes[dealer] = member
                    self._poller.register(monitor, zmq.POLLIN)
            log.info("gossip seed %s:%d", *endpoint)

    def _located(self, member: str, dealer: zmq.Socket) -> None:
        """A probe's CURVE handshake with ``member``'s key completed: that member is there."""
        if member not in self._dealers and dealer in self._seed_dealers:
            self._dealers[member] = dealer
            self._peers[member] = self._seed_dealers[dealer]
            log.info("cluster member %s is at %s:%d (its key answered)", member,
                     *self._peers[member])
            self._drop_probes(self._peers[member], member, dealer)

    def _drop_probes(self, endpoint: tuple[str, int], member: str, keep: zmq.Socket) -> None:
        """``member`` was found at ``endpoint``: the other keys' connections there, and other
        connections expecting that member, are surplus."""
        for dealer, where in list(self._seed_dealers.items()):
            if dealer is not keep and (where == endpoint or
                                       self._seed_members.get(dealer) == member):
                self._poller.unregister(dealer)
                del self._seed_dealers[dealer]
                self._seed_members.pop(dealer, None)
                self._probes.pop(dealer, None)
                for monitor in [m for m, d in self._probe_monitors.items() if d is dealer]:
                    self._poller.unregister(monitor)
                    del self._probe_monitors[monitor]
                    monitor.close(linger=0)
                dealer.disable_monitor()
                dealer.close(linger=0)

    def _receive_seed(self, dealer: zmq.Socket) -> None:
        """A node answered on a seed connection (through its ROUTER): the message names its
        sender, which tells us who is at that endpoint."""
        batch: list[tuple[str, Any]] = []
        for _ in range(MAX_BURST):
            try:
                frame = dealer.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                message = self._internal_codec.decode(frame)
            except BadRequest as exc:
                self.refusals.refuse(f"seed:{self._seed_dealers[dealer]}", "bad_cluster_message",
                                     "bad message from seed %s:%d: %s",
                                     *self._seed_dealers[dealer], exc)
                continue
            sender = claimed_sender(message)
            if sender not in self._members:
                continue
            expected = self._seed_members.get(dealer)
            if expected and sender != expected:
                self.refusals.refuse(
                    f"seed:{expected}", "impersonation", "internal network: refused a message "
                    "from %s:%d claiming to be %r: the connection is authenticated as %r",
                    *self._seed_dealers[dealer], sender, expected)
                continue
            if sender not in self._dealers:
                self._dealers[sender] = dealer
                self._peers[sender] = self._seed_dealers[dealer]
                log.info("cluster member %s is at %s:%d", sender, *self._peers[sender])
                if expected:
                    self._drop_probes(self._peers[sender], sender, dealer)
                else:  # a secured probe's one monitor is already taken by its handshake
                    self._poller.register(self._watch(sender, dealer), zmq.POLLIN)
            batch.append((sender, message))
        if batch and self._on_node is not None:
            self._on_node(batch)

    def _flush_nodes(self) -> None:
        if self._node_outbox:
            with self._send_lock:  # no direct send (send_node) overtakes what is queued
                self._drain_nodes()

    def _drain_nodes(self) -> None:
        outbox = self._node_outbox
        codec = self._internal_codec
        while outbox:
            name, message = outbox.popleft()
            if codec is None:
                continue
            frame = codec.encode(message)
            dealer = self._dealers.get(name)
            try:
                if dealer is not None:
                    dealer.send(frame, zmq.NOBLOCK)
                elif name in self._router_peers:
                    # It reached us through our ROUTER: answer on that connection.
                    self._internal.send_multipart((name.encode(), frame), zmq.NOBLOCK)
                elif type(message).__name__ in SEED_MESSAGES:
                    # Unknown address yet: introduce ourselves to every unidentified seed.
                    named = set(map(id, self._dealers.values()))
                    for seed in self._seed_dealers:
                        if id(seed) not in named:
                            seed.send(frame, zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                if exc.errno not in (zmq.EAGAIN, zmq.EHOSTUNREACH):
                    raise
                # peer down or too far behind: the protocol above retries
