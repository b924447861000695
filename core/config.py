"""Topology: the cluster description in ``topology.toml``, loaded and validated.

Every key is documented in docs/topology.md. Validation fails with a ``TopologyError`` whose
message names the key and the problem, so an operator can fix the file without reading code.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints


class TopologyError(ValueError):
    """The topology file is invalid; the message names the key and the problem."""


@dataclass(frozen=True, slots=True)
class ClusterSection:
    name: str = "esnode"
    size: int = 1
    allow_even_size: bool = False
    max_truncation: int = 1_000_000
    """Most records a node drops on line from a diverged, uncommitted tail; more is refused
    (the node stays out of the cluster and says why) for an operator to look at."""


@dataclass(frozen=True, slots=True)
class DiscoverySection:
    """Gossip seeds (internal ``host:port`` of other nodes), or a DNS name resolved to every
    node's address plus ``gossip_port``. Empty: the internal endpoints of ``[[nodes]]``."""

    seeds: tuple[str, ...] = ()
    dns: str = ""
    gossip_port: int = 0
    dns_server: str = ""


@dataclass(frozen=True, slots=True)
class TimersSection:
    gossip_interval_ms: int = 200
    gossip_timeout_ms: int = 1000
    dead_member_ms: int = 2000
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    write_timeout_ms: int = 5000
    shutdown_timeout_ms: int = 5000


@dataclass(frozen=True, slots=True)
class SecuritySection:
    """CURVE keys (docs/security.md). ``key_dir``: the internal network's keys, ``NAME.key``
    for every member and ``NAME.key_secret`` for this node; ``external_key``: the base path
    of the client-facing key pair (``.key``, ``.key_secret``) all nodes share;
    ``client_key_dir``: if set, only the client keys (``*.key``) in it may connect."""

    key_dir: str = ""
    external_key: str = ""
    client_key_dir: str = ""
    demo_keys: bool = False
    """The keys are the shipped demo keys: world-readable secrets are accepted, loudly."""
    authentication: bool = False
    """Users and ACLs (docs/security.md, "Users and ACLs"): every client request needs a user
    allowed by the stream's ACL. Needs the admin password (there is no default)."""
    admin_password_file: str = ""
    """The first admin password (first line), unless ``ESNODE_ADMIN_PASSWORD`` is set."""
    allow_plaintext_passwords: bool = False
    """Accept ZeroMQ logins on an external network without CURVE (passwords in clear): for
    tests and development only."""

    @property
    def internal_secured(self) -> bool:
        return bool(self.key_dir)

    @property
    def external_secured(self) -> bool:
        return bool(self.external_key)


@dataclass(frozen=True, slots=True)
class NodeSection:
    name: str
    internal_host: str
    internal_port: int
    external_host: str
    external_port: int
    data_dir: str = ""
    mem_db: bool = False
    log_dir: str = ""
    internal_advertise_host: str = ""
    internal_advertise_port: int = 0
    external_advertise_host: str = ""
    external_advertise_port: int = 0
    priority: int = 0
    external_http_port: int = 0
    """The node's HTTP API (docs/http.md) on ``external_host``; 0 = no HTTP endpoint."""
    http_cert_file: str = ""
    http_key_file: str = ""
    """PEM certificate (chain) and key: the HTTP API speaks only HTTPS (docs/http.md, TLS)."""
    public_key: str = ""
    """This member's internal public key (Z85), instead of ``security.key_dir``/NAME.key."""
    internal_gossip_port: int = 0
    """A second port on ``internal_host`` where the internal endpoint also listens: Event
    Store's ``--int-http-port``, where gossip seeds and ``--cluster-gossip-port`` point."""
    metrics_port: int = 0
    """Prometheus metrics over HTTP on ``external_host`` (0: none); with the HTTP API they
    are also at its ``/metrics``."""

    @property
    def gossip_port(self) -> int:
        """Where other nodes' gossip seeds point: the gossip port if set, else the internal one."""
        return self.internal_gossip_port or self.internal_port

    @property
    def internal_bind(self) -> tuple[str, int]:
        return (self.internal_host, self.internal_port)

    @property
    def external_bind(self) -> tuple[str, int]:
        return (self.external_host, self.external_port)

    @property
    def external_http_bind(self) -> tuple[str, int] | None:
        return (self.external_host, self.external_http_port) if self.external_http_port else None

    @property
    def external_http_advertise(self) -> tuple[str, int] | None:
        """Where clients (and 307 redirects, and gossip) reach the node's HTTP API."""
        if not self.external_http_port:
            return None
        return (self.external_advertise_host or self.external_host, self.external_http_port)

    @property
    def http_scheme(self) -> str:
        return "https" if self.http_cert_file else "http"

    @property
    def internal_advertise(self) -> tuple[str, int]:
        return (self.internal_advertise_host or self.internal_host,
                self.internal_advertise_port or self.internal_port)

    @property
    def external_advertise(self) -> tuple[str, int]:
        return (self.external_advertise_host or self.external_host,
                self.external_advertise_port or self.external_port)


@dataclass(frozen=True, slots=True)
class Topology:
    cluster: ClusterSection
    discovery: DiscoverySection
    timers: TimersSection
    nodes: tuple[NodeSection, ...]
    source: str = field(default="", compare=False)
    security: SecuritySection = SecuritySection()

    def node(self, name: str) -> NodeSection:
        for node in self.nodes:
            if node.name == name:
                return node
        names = ", ".join(n.name for n in self.nodes)
        raise TopologyError(f"nodes: no node named {name!r} (known: {names})")

    @property
    def majority(self) -> int:
        return self.cluster.size // 2 + 1


def _section(cls: type, raw: Any, where: str) -> Any:
    """Build a section dataclass from a TOML table: unknown keys, missing keys and wrong types
    are errors that name ``where.key``."""
    if not isinstance(raw, dict):
        raise TopologyError(f"{where}: must be a table")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise TopologyError(f"{where}.{key}: unknown key (known: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TopologyError(f"{where}.{name}: missing (required)")
            continue
        value, hint = raw[name], hints[name]
        if hint == tuple[str, ...]:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TopologyError(f"{where}.{name}: must be a list of strings")
            value = tuple(value)
        elif hint is int and (type(value) is not int):
            raise TopologyError(f"{where}.{name}: must be an integer, got {value!r}")
        elif hint is bool and type(value) is not bool:
            raise TopologyError(f"{where}.{name}: must be true or false, got {value!r}")
        elif hint is str and not isinstance(value, str):
            raise TopologyError(f"{where}.{name}: must be a string, got {value!r}")
        values[name] = value
    return cls(**values)


def _check_port(value: int, where: str) -> None:
    if not 1 <= value <= 65535:
        raise TopologyError(f"{where}: port {value} is not between 1 and 65535")


def parse_topology(raw: dict, source: str = "") -> Topology:
    known = {"cluster", "discovery", "timers", "nodes", "security"}
    for key in raw:
        if key not in known:
            raise TopologyError(f"{key}: unknown section (known: {', '.join(sorted(known))})")
    cluster = _section(ClusterSection, raw.get("cluster", {}), "cluster")
    discovery = _section(DiscoverySection, raw.get("discovery", {}), "discovery")
    timers = _section(TimersSection, raw.get("timers", {}), "timers")
    security = _section(SecuritySection, raw.get("security", {}), "security")
    raw_nodes = raw.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise TopologyError("nodes: missing; describe each node in a [[nodes]] table")
    nodes = tuple(_section(NodeSection, n, f"nodes[{i}]") for i, n in enumerate(raw_nodes))

    if cluster.max_truncation < 0:
        raise TopologyError(f"cluster.max_truncation: must be 0 or more, got "
                            f"{cluster.max_truncation}")
    if cluster.size < 1:
        raise TopologyError(f"cluster.size: must be at least 1, got {cluster.size}")
    if cluster.size % 2 == 0 and not cluster.allow_even_size:
        raise TopologyError(
            f"cluster.size: {cluster.size} is even; an even cluster tolerates no more failures "
            "than the odd one below it. Use an odd size, or set allow_even_size = true")
    if len(nodes) != cluster.size:
        raise TopologyError(f"cluster.size: is {cluster.size} but {len(nodes)} [[nodes]] are "
                            "described; describe every member")
    for name, value in dataclasses.asdict(timers).items():
        if value <= 0:
            raise TopologyError(f"timers.{name}: must be positive, got {value}")
    if discovery.dns and not discovery.gossip_port:
        raise TopologyError("discovery.gossip_port: required when discovery.dns is set")
    seen_names: set[str] = set()
    seen_binds: dict[tuple[str, int], str] = {}
    for i, node in enumerate(nodes):
        where = f"nodes[{i}]"
        if not node.name:
            raise TopologyError(f"{where}.name: must not be empty")
        if node.name in seen_names:
            raise TopologyError(f"{where}.name: duplicate node name {node.name!r}")
        seen_names.add(node.name)
        if node.mem_db == bool(node.data_dir):
            raise TopologyError(f"{where}: set exactly one of data_dir or mem_db = true")
        for key in ("internal_port", "external_port", "internal_gossip_port",
                    "external_http_port", "metrics_port"):
            if key in ("internal_port", "external_port") or getattr(node, key):
                _check_port(getattr(node, key), f"{where}.{key}")
        if node.internal_gossip_port and node.internal_host == node.external_host and \
                node.internal_gossip_port in (node.external_port, node.external_http_port):
            raise TopologyError(f"{where}.internal_gossip_port: same address as an external "
                                "port; the internal and external networks need separate "
                                "endpoints")
        if bool(node.http_cert_file) != bool(node.http_key_file):
            raise TopologyError(f"{where}: set both http_cert_file and http_key_file (TLS on "
                                "the HTTP API), or neither")
        if node.http_cert_file and not node.external_http_port:
            raise TopologyError(f"{where}.http_cert_file: the node has no HTTP API (set "
                                "external_http_port)")
        if node.internal_port == node.external_port and node.internal_host == node.external_host:
            raise TopologyError(f"{where}.external_port: same address as internal_port; the "
                                "internal and external networks need separate endpoints")
        # Nodes on separate machines may bind the same host:port (0.0.0.0:2114); what must
        # be unique is where each endpoint is reached: the advertised addresses.
        endpoints = [("internal_port", node.internal_advertise),
                     ("external_port", node.external_advertise)]
        if node.external_http_port:
            endpoints.append(("external_http_port", node.external_http_advertise))
            if node.external_http_bind in (node.external_bind, node.internal_bind):
                raise TopologyError(f"{where}.external_http_port: same address as another "
                                    "endpoint of this node")
        for key, bind in endpoints:
            if bind in seen_binds:
                raise TopologyError(f"{where}.{key}: duplicate port {bind[0]}:{bind[1]}, "
                                    f"already used by {seen_binds[bind]}")
            seen_binds[bind] = f"{where}.{key}"
    for i, node in enumerate(nodes):
        if node.public_key and not security.key_dir:
            raise TopologyError(f"nodes[{i}].public_key: needs security.key_dir (where this "
                                "node's secret key is)")
        if node.public_key and len(node.public_key) != 40:
            raise TopologyError(f"nodes[{i}].public_key: a CURVE public key is 40 Z85 "
                                f"characters, got {len(node.public_key)}")
    return Topology(cluster, discovery, timers, nodes, source, security)


def _toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{source}: not valid TOML ({exc})") from None
    except RecursionError:  # tomllib recurses per nesting level (found by fuzzing)
        raise TopologyError(f"{source}: nested too deeply to be a topology") from None


def loads_topology(text: str, source: str = "") -> Topology:
    """Parse and validate topology TOML text; every problem is a ``TopologyError``."""
    return parse_topology(_toml(text, source), source)


def read_topology_file(path: str | Path) -> dict:
    """The file's TOML as a plain dict (not validated yet): command-line options edit it
    before ``load_topology`` validates it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TopologyError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(f"{path}: cannot read ({exc})") from None
    return _toml(text, str(path))


def load_topology(path: str | Path, raw: dict | None = None) -> Topology:
    """Load and validate a topology file (or ``raw``, its edited content). Relative
    ``data_dir``/``log_dir``, certificate and key paths are resolved against the file's
    folder, so a topology works from any working directory."""
    path = Path(path)
    if raw is None:
        raw = read_topology_file(path)
    topology = parse_topology(raw, str(path))
    base = path.resolve().parent
    paths = ("data_dir", "log_dir", "http_cert_file", "http_key_file")
    nodes = tuple(
        dataclasses.replace(n, **{key: str(base / getattr(n, key)) if getattr(n, key) else ""
                                  for key in paths})
        for n in topology.nodes
    )
    sec = topology.security
    security = dataclasses.replace(sec, **{
        key: str(base / getattr(sec, key))
        for key in ("key_dir", "external_key", "client_key_dir", "admin_password_file")
        if getattr(sec, key)})
    return dataclasses.replace(topology, nodes=nodes, security=security)
