"""Connection strings and the settings they carry (docs/client.md, "Connection strings").

Accepted forms::

    tcp://host:port                       one node, as a ZeroMQ endpoint
    host:port                             the same, without the scheme
    esnode://host:port[,host:port...][?option=value&...]
                                          gossip seeds (the nodes' external endpoints):
                                          discover the cluster, pick a node by preference
    esnode+dns://name[:port][?option=value&...]
                                          the same, with the seeds = every A record of name
                                          (port = the nodes' external port)

``tcp://`` and ``host:port`` talk to exactly that node (``directConnection=true``); the
``esnode`` forms discover the cluster through ``cluster_info`` and follow the leader.

The port defaults to 2113. Option keys are case-insensitive (``nodePreference`` and
``nodepreference`` are the same key); durations are in milliseconds, as in Event Store's
connection strings. A bad string raises ``InvalidConnectionString`` naming the bad part.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields, replace
from urllib.parse import parse_qsl, quote, unquote

DEFAULT_PORT = 2113
DNS_PORT = 53
NODE_PREFERENCES = ("leader", "follower", "random")


class InvalidConnectionString(ValueError):
    """The connection string cannot be used; the message names the bad part."""


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Where to connect and how the client behaves. Durations are in seconds here (the
    connection string gives them in milliseconds)."""

    endpoints: tuple[tuple[str, int], ...] = (("127.0.0.1", DEFAULT_PORT),)
    """Gossip seeds; with ``dns`` the one (name, external port) to resolve; with ``direct``
    the one node to talk to."""
    node_preference: str = "leader"
    requires_leader: bool = False
    discovery_attempts: int = 10
    discovery_interval: float = 0.1
    gossip_timeout: float = 1.0
    operation_timeout: float = 5.0
    max_retries: int = 3
    retry_delay: float = 0.1
    keepalive_interval: float = 0.5
    """Silence (nothing received while requests or subscriptions are open) after which the
    client pings the node; 0 disables the heartbeat."""
    keepalive_timeout: float = 1.0
    """How long that ping may take before the node is taken for dead (re-discovery)."""
    subscription_patience: float = 60.0
    """How long a subscription keeps trying to come back (re-discovery, resubscribe, with
    backoff) after its node is lost, before it raises ``Unavailable``."""
    keep_reconnecting: bool = False
    """Subscriptions never give up (Event Store's ``KeepReconnecting``)."""
    direct: bool = False
    """Talk to exactly ``endpoints[0]``: no gossip, never move to another node."""
    dns: bool = False
    """``endpoints[0]`` is a DNS name whose A records are the seeds."""
    dns_server: tuple[str, int] | None = None
    """The name server to ask (default: the system's resolver configuration)."""
    server_key: bytes | None = None
    """The cluster's external CURVE public key (Z85): set, every connection is encrypted and
    only a server holding that key is talked to (docs/security.md)."""
    client_key_file: str = ""
    """A ``.key_secret`` file: the client's own CURVE key pair, for nodes that accept only
    listed client keys (default: a fresh key pair per client)."""
    user: str = ""
    """Set: the client logs in as this user on every (re)connection before anything else."""
    password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise InvalidConnectionString("no host given")
        if (self.dns or self.direct) and len(self.endpoints) != 1:
            raise InvalidConnectionString(
                ("esnode+dns:// takes one DNS name" if self.dns else "directConnection=true "
                 "takes one host") + f", not {len(self.endpoints)}")
        if self.dns_server is not None:
            try:
                ipaddress.ip_address(self.dns_server[0])
            except ValueError:
                raise InvalidConnectionString(f"dnsServer={self.dns_server[0]!r}: expected the "
                                              "IP address of a name server") from None
        if self.dns and self.direct:
            raise InvalidConnectionString("directConnection=true cannot be combined with DNS "
                                          "discovery (esnode+dns://)")
        if self.client_key_file and self.server_key is None:
            raise InvalidConnectionString("clientKeyFile needs serverKey (the node's key)")
        if self.node_preference not in NODE_PREFERENCES:
            raise InvalidConnectionString(
                f"nodePreference={self.node_preference!r}: expected one of "
                + ", ".join(NODE_PREFERENCES))
        for name, low, rule in _LIMITS:
            if getattr(self, name) < low or (rule == "positive" and getattr(self, name) == 0):
                raise InvalidConnectionString(f"{_KEY_OF[name]} must be {rule}")

    @property
    def patience(self) -> float:
        """Seconds a subscription keeps trying to come back (infinite: keep reconnecting)."""
        return float("inf") if self.keep_reconnecting else self.subscription_patience

    @property
    def zmq_endpoints(self) -> list[str]:
        return [zmq_endpoint(host, port) for host, port in self.endpoints]

    def with_options(self, **changes: object) -> ConnectionSettings:
        return replace(self, **changes)

    def to_uri(self) -> str:
        """The ``esnode://`` (or ``esnode+dns://``) form of these settings (options that
        differ from the defaults)."""
        hosts = ",".join(_host_text(h) + f":{p}" for h, p in self.endpoints)
        default = ConnectionSettings()
        opts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("endpoints", "dns", "user", "password") \
                    or value == getattr(default, f.name):
                continue
            kind = _OPTIONS[_KEY_OF[f.name].lower()][1]
            text = (str(value).lower() if kind is bool
                    else str(round(value * 1000)) if kind is float
                    else _host_text(value[0]) + f":{value[1]}" if kind is tuple
                    else _z85_hex(value) if kind is bytes
                    else str(value))
            opts.append(f"{_KEY_OF[f.name]}={text}")
        scheme = "esnode+dns" if self.dns else "esnode"
        if self.user:
            hosts = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}@{hosts}"
        return f"{scheme}://{hosts}" + ("?" + "&".join(opts) if opts else "")


# option key (as documented) -> (field name, type); durations are milliseconds on the wire
_OPTION_LIST = [
    ("nodePreference", "node_preference", str),
    ("requiresLeader", "requires_leader", bool),
    ("maxDiscoverAttempts", "discovery_attempts", int),
    ("discoveryInterval", "discovery_interval", float),
    ("gossipTimeout", "gossip_timeout", float),
    ("operationTimeout", "operation_timeout", float),
    ("maxRetries", "max_retries", int),
    ("retryDelay", "retry_delay", float),
    ("keepAliveInterval", "keepalive_interval", float),
    ("keepAliveTimeout", "keepalive_timeout", float),
    ("subscriptionPatience", "subscription_patience", float),
    ("keepReconnecting", "keep_reconnecting", bool),
    ("directConnection", "direct", bool),
    ("dnsServer", "dns_server", tuple),
    ("serverKey", "server_key", bytes),
    ("clientKeyFile", "client_key_file", "path"),
]
_OPTIONS = {key.lower(): (name, kind) for key, name, kind in _OPTION_LIST}
_OPTIONS["defaultdeadline"] = ("operation_timeout", float)  # Event Store's name for it
_KEY_OF = {name: key for key, name, _ in _OPTION_LIST}
_LIMITS = [("discovery_attempts", 1, "at least 1"), ("max_retries", 0, "0 or more"),
           ("discovery_interval", 0, "0 or more"), ("retry_delay", 0, "0 or more"),
           ("gossip_timeout", 0, "positive"), ("operation_timeout", 0, "positive"),
           ("keepalive_interval", 0, "0 or more"), ("keepalive_timeout", 0, "positive"),
           ("subscription_patience", 0, "0 or more")]

_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def zmq_endpoint(host: str, port: int) -> str:
    return f"tcp://{_host_text(host)}:{port}"


def _parse_host_port(text: str, whole: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    if not text:
        raise InvalidConnectionString(f"empty host in {whole!r}")
    if text.startswith("["):  # [ipv6]:port
        end = text.find("]")
        if end < 0:
            raise InvalidConnectionString(f"unclosed '[' in host {text!r} of {whole!r}")
        host, rest = text[1:end], text[end + 1:]
        if not host or not all(c in "0123456789abcdefABCDEF:." for c in host):
            raise InvalidConnectionString(f"bad IPv6 address {host!r} in {whole!r}")
        if rest and not rest.startswith(":"):
            raise InvalidConnectionString(f"unexpected {rest!r} after {text[:end + 1]!r} "
                                          f"in {whole!r}")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = None
        if not _HOSTNAME.match(host):
            raise InvalidConnectionString(f"bad host {host!r} in {whole!r}")
    if port_text is None:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise InvalidConnectionString(f"bad port {port_text!r} for host {host!r} in {whole!r} "
                                      "(expected 1-65535)")
    return host, int(port_text)


_HEX = set("0123456789abcdefABCDEF")
_Z85 = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def _z85_hex(key: bytes) -> str:
    from zmq.utils import z85

    return z85.decode(key).hex()


def _parse_key(key: str, value: str) -> bytes:
    """A CURVE public key: 64 hex digits (URL-safe; what ``esnode keys show`` prints as hex)
    or 40 Z85 characters (percent-encode ``&``, ``+``, ``#``, ``%`` and ``?`` in a URL)."""
    from zmq.utils import z85

    if len(value) == 64 and set(value) <= _HEX:
        return z85.encode(bytes.fromhex(value))
    if len(value) == 40 and set(value) <= _Z85:
        return value.encode()
    raise InvalidConnectionString(f"option {key}: expected a CURVE public key (64 hex digits "
                                  "or 40 Z85 characters; see esnode keys show)")


def _parse_option(key: str, value: str, whole: str) -> tuple[str, object]:
    entry = _OPTIONS.get(key.lower())
    if entry is None:
        known = ", ".join(k for k, _, _ in _OPTION_LIST)
        raise InvalidConnectionString(f"unknown option {key!r} in {whole!r} (known: {known})")
    name, kind = entry
    if kind is bool:
        if value.lower() not in ("true", "false"):
            raise InvalidConnectionString(f"option {key}={value!r}: expected true or false")
        return name, value.lower() == "true"
    if kind is str:
        return name, value.lower()
    if kind is bytes:
        return name, _parse_key(key, value)
    if kind == "path":
        if not value:
            raise InvalidConnectionString(f"option {key}: expected a file path")
        return name, value
    if kind is tuple:
        if not value:
            raise InvalidConnectionString(f"option {key}: expected host[:port] of a name server")
        return name, _parse_host_port(value, whole, DNS_PORT)
    try:
        number = int(value)
    except ValueError:
        unit = " (milliseconds)" if kind is float else ""
        raise InvalidConnectionString(
            f"option {key}={value!r}: expected a whole number{unit}") from None
    return name, (number / 1000 if kind is float else number)


def parse_connection_string(text: str, **overrides: object) -> ConnectionSettings:
    """Parse any accepted form into ``ConnectionSettings``; ``overrides`` (field names, e.g.
    ``operation_timeout=2.0``) are applied on top."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidConnectionString("empty connection string")
    whole = text = text.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    scheme = scheme.lower()
    options: dict[str, object] = {}
    if scheme == "tcp":
        if "?" in rest or "," in rest or "/" in rest:
            raise InvalidConnectionString(
                f"{whole!r}: a tcp:// endpoint names one host:port; use esnode://host:port,"
                "host:port?option=value for several hosts or options")
        endpoints = (_parse_host_port(rest, whole),)
        options["direct"] = True
    elif scheme in ("esnode", "esnode+dns"):
        hosts, _, query = rest.partition("?")
        hosts = hosts.rstrip("/")
        credentials, at, hosts = hosts.rpartition("@")
        if at:
            user, colon, password = credentials.partition(":")
            if not user or not colon:
                raise InvalidConnectionString(f"{scheme}://USER:PASSWORD@...: expected a user "
                                              "and a password before '@'")
            options["user"], options["password"] = unquote(user), unquote(password)
        if scheme == "esnode+dns":
            if "," in hosts:
                raise InvalidConnectionString(f"{whole!r}: esnode+dns:// takes one DNS name "
                                              "(it resolves to every node)")
            options["dns"] = True
        endpoints = tuple(_parse_host_port(h.strip(), whole) for h in hosts.split(","))
        if len(set(endpoints)) != len(endpoints):
            raise InvalidConnectionString(f"a host is given twice in {whole!r}")
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            raise InvalidConnectionString(f"bad option syntax {query!r} in {whole!r} "
                                          "(expected option=value&option=value)") from None
        for key, value in pairs:
            name, parsed = _parse_option(key, value, whole)
            if name in options:
                raise InvalidConnectionString(f"option {key!r} is given twice in {whole!r}")
            options[name] = parsed
    else:
        raise InvalidConnectionString(f"unknown scheme {scheme + '://'!r} in {whole!r} "
                                      "(expected tcp://, esnode:// or esnode+dns://)")
    options.update(overrides)
    try:
        return ConnectionSettings(endpoints=endpoints, **options)
    except InvalidConnectionString as exc:
        raise InvalidConnectionString(f"{exc} in {whole!r}") from None


def settings_from(target: str | ConnectionSettings, **overrides: object) -> ConnectionSettings:
    if isinstance(target, ConnectionSettings):
        return replace(target, **overrides) if overrides else target
    return parse_connection_string(target, **overrides)


__all__ = ["ConnectionSettings", "InvalidConnectionString", "parse_connection_string",
           "settings_from", "zmq_endpoint", "DEFAULT_PORT", "DNS_PORT"]
