"""Where a node finds its peers' internal endpoints for gossip: the topology itself, a list of
seeds, or every A record of a DNS name plus the gossip port (docs/topology.md)."""

from __future__ import annotations

import logging

import dns.exception
import dns.resolver
from esnode.core.config import NodeSection, Topology

log = logging.getLogger("esnode.discovery")

DNS_TIMEOUT_S = 2.0


def parse_endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def make_resolver(cls: type, server: tuple[str, int] | None, timeout: float):
    """A dnspython resolver (``cls``: the sync or the asyncio one) asking ``server`` (host,
    port), or the system's name servers when None; shared by nodes and clients."""
    if server is None:
        resolver = cls()
    else:
        resolver = cls(configure=False)
        resolver.nameservers, resolver.port = [server[0]], server[1]
    resolver.lifetime = resolver.timeout = timeout
    return resolver


def addresses(answer) -> list[str]:
    return sorted({record.address for record in answer})


def resolve_a(name: str, server: str = "", timeout: float = DNS_TIMEOUT_S) -> list[str]:
    """Every A record of ``name``, asking ``server`` ("ip:port") or the system's resolver.
    Raises ``dns.exception.DNSException`` or ``OSError``."""
    resolver = make_resolver(dns.resolver.Resolver,
                             parse_endpoint(server) if server else None, timeout)
    return addresses(resolver.resolve(name, "A"))


def gossip_seeds(topology: Topology, me: NodeSection) -> list[tuple[str, int]]:
    """The seeds of ``[discovery]`` (DNS answers or the seed list), without this node.
    Empty when discovery is by the topology's own endpoints, or DNS failed for now (the
    caller retries)."""
    d = topology.discovery
    own = {me.internal_advertise, me.internal_bind, (me.internal_host, me.gossip_port),
           (me.internal_advertise[0], me.gossip_port)}
    if d.dns:
        try:
            seeds = [(address, d.gossip_port) for address in resolve_a(d.dns, d.dns_server)]
        except (dns.exception.DNSException, OSError) as exc:
            log.warning("DNS discovery of %s failed (will retry): %s", d.dns, exc)
            return []
    else:
        seeds = [parse_endpoint(s) for s in d.seeds]
    return [s for s in seeds if s not in own]


def uses_seeds(topology: Topology) -> bool:
    return bool(topology.discovery.dns or topology.discovery.seeds)
