"""Helpers for client tests against several nodes — the fake cluster now, the real 3-node
cluster later: connection strings with seeds, options tuned for fast failover in tests, a
real DNS server on loopback, and a recorder of the client's notices."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from esnode.client import connect

FAST_FAILOVER = {"gossipTimeout": 200, "discoveryInterval": 20, "maxDiscoverAttempts": 5,
                 "operationTimeout": 1000, "maxRetries": 3, "retryDelay": 20,
                 "keepAliveInterval": 100, "keepAliveTimeout": 300}
"""Connection-string options that make a client notice a dead node and move on quickly."""


def host_port(endpoint: str | tuple[str, int]) -> str:
    if isinstance(endpoint, tuple):
        return f"{endpoint[0]}:{endpoint[1]}"
    return endpoint.removeprefix("tcp://")


def options_text(options: dict) -> str:
    return "&".join(f"{key}={value}" for key, value in options.items())


def seeds(endpoints: Iterable[str | tuple[str, int]], **options: object) -> str:
    """``esnode://h1:p1,h2:p2,...?FAST_FAILOVER options (overridable)``."""
    return ("esnode://" + ",".join(host_port(e) for e in endpoints) + "?"
            + options_text({**FAST_FAILOVER, **options}))


def dns_seeds(name: str, port: int, dns_server: tuple[str, int], **options: object) -> str:
    return (f"esnode+dns://{name}:{port}?dnsServer={dns_server[0]}:{dns_server[1]}&"
            + options_text({**FAST_FAILOVER, **options}))


@contextmanager
def cluster_client(endpoints: Iterable[str | tuple[str, int]], **options: object):
    """A threaded client whose seeds are ``endpoints`` (e.g. a 3-node cluster's external
    endpoints), with fast-failover options; closed on exit."""
    with connect(seeds(endpoints, **options)) as client:
        yield client


class Notices:
    """Records a client's notices (``client.on_event``) for assertions."""

    def __init__(self) -> None:
        self.items: list = []
        self._lock = threading.Lock()

    def __call__(self, notice: object) -> None:
        with self._lock:
            self.items.append(notice)

    def of(self, kind: type) -> list:
        with self._lock:
            return [n for n in self.items if type(n) is kind]


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _FixedResolver(BaseResolver):
    """Answers A queries for the names it knows with fixed addresses; NXDOMAIN otherwise."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = {name.rstrip(".").lower(): addresses
                        for name, addresses in records.items()}

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name not in self.records:
            reply.header.rcode = 3  # NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            for address in self.records[name]:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=5))
        return reply


@contextmanager
def dns_server(records: dict[str, list[str]]) -> Iterator[tuple[str, int]]:
    """A real DNS server (dnslib, UDP) on 127.0.0.1 and a free port answering ``records``;
    yields its (host, port) and stops it on exit."""
    port = free_udp_port()
    server = DNSServer(_FixedResolver(records), port=port, address="127.0.0.1",
                       logger=DNSLogger(logf=lambda *_: None))
    server.start_thread()
    try:
        yield ("127.0.0.1", port)
    finally:
        server.stop()
        server.server.server_close()
