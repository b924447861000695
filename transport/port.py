"""The transport port: how actors receive client requests and send replies.

Production uses ``ZmqTransport``; tests swap in an in-process double. Actors only see typed
messages (``core.messages``); encoding lives in the transport.
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
    def start(self, on_client: ClientHandler, on_peer_gone: PeerGoneHandler) -> None:
        """Bind and begin delivering requests; returns once bound (raises if it cannot)."""

    def send_client(self, replies: Iterable[tuple[bytes, int, Any]]) -> None:
        """Queue ``(peer, corr, server_message)`` replies; thread-safe, never blocks."""

    def pause_receiving(self) -> None:
        """Stop reading client requests (the first step of a graceful shutdown)."""

    def stop(self) -> None:
        """Flush queued replies, close every socket and join the transport thread."""

    @property
    def external_endpoint(self) -> str:
        """The bound external endpoint, e.g. ``tcp://127.0.0.1:2113``."""
