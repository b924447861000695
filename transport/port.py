"""The transport port: how actors receive client requests and cluster messages, and send
replies and cluster messages.

Production uses ``ZmqTransport``; tests swap in an in-process double
(``tests/support/inproc.py``: ``InProcTransport`` on an ``InProcNetwork`` or
``FaultyNetwork``). Actors only see typed messages (``core.messages``,
``core.cluster_messages``); encoding lives in the transport.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from esnode.core.messages import ClientEnvelope

ClientHandler = Callable[[list[ClientEnvelope]], None]
"""Receives a batch of decoded client requests (called on the transport's thread)."""

NodeHandler = Callable[[list[tuple[str, Any]]], None]
"""Receives a batch of ``(sender_node_name, cluster_message)`` from the internal network."""

PeerGoneHandler = Callable[[bytes], None]
"""Told when a client peer can no longer be reached (its subscriptions can be dropped)."""


class Transport(Protocol):
    def start(self, on_client: ClientHandler, on_peer_gone: PeerGoneHandler,
              on_node: NodeHandler | None = None) -> None:
        """Bind and begin delivering requests (and, with ``on_node``, cluster messages) on
        the transport's own thread; returns once bound (raises if it cannot)."""

    def send_client(self, replies: Iterable[tuple[bytes, int, Any]]) -> None:
        """Queue ``(peer, corr, server_message)`` replies; thread-safe, never blocks."""

    def send_node(self, messages: Iterable[tuple[str, Any]]) -> None:
        """Queue ``(peer_node_name, cluster_message)``; thread-safe, never blocks. A message
        to an unreachable peer is dropped: cluster protocols carry their own acks and
        retries."""

    def pause_receiving(self) -> None:
        """Stop reading client requests (the first step of a graceful shutdown)."""

    def stop(self) -> None:
        """Flush queued replies, close every socket and join the transport thread."""

    @property
    def external_endpoint(self) -> str:
        """The bound external endpoint, e.g. ``tcp://127.0.0.1:2113``."""
