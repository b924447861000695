"""DNS discovery's one I/O step (``_core.Resolve``), for both flavours, with dnspython: every
A record of a name, from a given name server (``dnsServer=host:port``) or the system's.

dnspython is imported on the first lookup, not with the client: it is half of the objects the
client library would otherwise add to a process (~11,000), which every full collection of the
garbage collector walks (docs/performance.md), and most clients connect by seeds."""

from __future__ import annotations

from typing import Any

from esnode.client._core import Resolve
from esnode.client.errors import Unavailable


def _resolver(cls: type, effect: Resolve) -> Any:
    from esnode.transport.discovery import make_resolver

    return make_resolver(cls, effect.server, effect.timeout)


def _failure(effect: Resolve, exc: Exception) -> Unavailable:
    where = f" at {effect.server[0]}:{effect.server[1]}" if effect.server else ""
    return Unavailable(f"DNS lookup of {effect.name!r}{where} failed: "
                       f"{type(exc).__name__}: {exc}")


def resolve(effect: Resolve) -> list[str]:
    import dns.exception
    import dns.resolver

    from esnode.transport.discovery import addresses

    try:
        return addresses(_resolver(dns.resolver.Resolver, effect).resolve(effect.name, "A"))
    except (dns.exception.DNSException, OSError) as exc:
        raise _failure(effect, exc) from None


async def resolve_async(effect: Resolve) -> list[str]:
    import dns.asyncresolver
    import dns.exception

    from esnode.transport.discovery import addresses

    try:
        answer = await _resolver(dns.asyncresolver.Resolver, effect).resolve(effect.name, "A")
    except (dns.exception.DNSException, OSError) as exc:
        raise _failure(effect, exc) from None
    return addresses(answer)
