"""Event Store's command-line options for ``esnode run`` (``--mem-db --int-ip ... --gossip-seed
...``), mapped onto esnode's topology model (the table in docs/topology.md).

Without ``--config`` they describe a whole one-node-per-process topology: this node in full,
and the other members by the gossip endpoints that ``--gossip-seed`` (or ``--cluster-dns``
plus ``--cluster-gossip-port``) gives. A member started this way is named after its gossip
endpoint (``127.0.0.1:2113``), which is exactly what the other nodes' seeds say, so every node
knows every member's name before the first message. With ``--config`` they override the file's
values for the node started. Every problem is a ``GuideError``: one line, exit code 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from esnode.core.config import (
    ClusterSection,
    DiscoverySection,
    NodeSection,
    TimersSection,
    Topology,
    TopologyError,
    parse_topology,
)

DEFAULT_INT_TCP_PORT = 2114
DEFAULT_EXT_TCP_PORT = 2113
"""esnode's own defaults (its shipped topology's node1), not Event Store's 1112/1113: a
client command with no ``--connect`` looks at 127.0.0.1:2113."""


class GuideError(ValueError):
    """A bad or contradictory option: one line for the operator, exit code 2."""


@dataclass(frozen=True)
class Option:
    flag: str
    field: str
    kind: str  # "str", "port", "int", "bool", "flag", "seeds"
    help: str

    @property
    def envvar(self) -> str:
        return "ESNODE_" + self.flag.removeprefix("--").replace("-", "_").upper()


OPTIONS = (
    Option("--db", "db", "str", "Data directory of this node (topology: data_dir)."),
    Option("--mem-db", "mem_db", "flag", "Keep everything in memory; lost on stop (mem_db)."),
    Option("--log", "log", "str", "Also log to a file in this folder (log_dir)."),
    Option("--int-ip", "int_ip", "str", "Bind address of the internal (cluster) endpoint "
           "(internal_host)."),
    Option("--ext-ip", "ext_ip", "str", "Bind address of the external (client) endpoint "
           "(external_host)."),
    Option("--int-ip-advertise-as", "int_ip_advertise_as", "str",
           "How other nodes reach this node (internal_advertise_host)."),
    Option("--ext-ip-advertise-as", "ext_ip_advertise_as", "str",
           "How clients reach this node (external_advertise_host)."),
    Option("--int-tcp-port", "int_tcp_port", "port",
           f"Internal ZeroMQ port (internal_port; default {DEFAULT_INT_TCP_PORT})."),
    Option("--ext-tcp-port", "ext_tcp_port", "port",
           f"External ZeroMQ port, for clients (external_port; default "
           f"{DEFAULT_EXT_TCP_PORT})."),
    Option("--int-http-port", "int_http_port", "port",
           "Gossip port: the internal endpoint also listens here; gossip seeds and "
           "--cluster-gossip-port point at it (internal_gossip_port; default: "
           "--int-tcp-port)."),
    Option("--ext-http-port", "ext_http_port", "port",
           "Port of the HTTP API (external_http_port)."),
    Option("--metrics-port", "metrics_port", "port",
           "(esnode only) Prometheus metrics over HTTP on --ext-ip (metrics_port)."),
    Option("--cluster-size", "cluster_size", "int", "Number of nodes (cluster.size)."),
    Option("--discover-via-dns", "discover_via_dns", "bool",
           "true: find the other nodes through --cluster-dns; false: through --gossip-seed "
           "(default: true when --cluster-dns is given)."),
    Option("--gossip-seed", "gossip_seed", "seeds",
           "The other nodes' gossip endpoints, host:port,host:port (discovery.seeds)."),
    Option("--cluster-dns", "cluster_dns", "str",
           "A DNS name with one A record per node (discovery.dns)."),
    Option("--cluster-gossip-port", "cluster_gossip_port", "port",
           "The gossip port to use on each --cluster-dns address (discovery.gossip_port)."),
    Option("--dns-server", "dns_server", "str",
           "Name server (ip:port) to ask instead of the system's (discovery.dns_server)."),
    Option("--node-priority", "node_priority", "int",
           "Election preference among equally up-to-date nodes (priority)."),
    Option("--run-projections", "run_projections", "str",
           "Not supported: esnode has no projections (refused)."),
)
BY_FIELD = {o.field: o for o in OPTIONS}
OTHER_ENV = {"ESNODE_CONNECT", "ESNODE_RESTART"}
"""``ESNODE_*`` variables that are not node options but are still esnode's."""


@dataclass(frozen=True)
class GuideOptions:
    """The options as given (None: not given), already parsed and checked one by one."""

    db: str | None = None
    mem_db: bool | None = None
    log: str | None = None
    int_ip: str | None = None
    ext_ip: str | None = None
    int_ip_advertise_as: str | None = None
    ext_ip_advertise_as: str | None = None
    int_tcp_port: int | None = None
    ext_tcp_port: int | None = None
    int_http_port: int | None = None
    ext_http_port: int | None = None
    metrics_port: int | None = None
    cluster_size: int | None = None
    discover_via_dns: bool | None = None
    gossip_seed: tuple[tuple[str, int], ...] | None = None
    cluster_dns: str | None = None
    cluster_gossip_port: int | None = None
    dns_server: str | None = None
    node_priority: int | None = None
    run_projections: str | None = None

    @property
    def given(self) -> list[str]:
        return [BY_FIELD[f.name].flag for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None]


# --- parsing one option ----------------------------------------------------------------------
def _port(flag: str, text: str) -> int:
    value = _int(flag, text)
    if not 1 <= value <= 65535:
        raise GuideError(f"{flag} {text}: a port is between 1 and 65535")
    return value


def _int(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise GuideError(f"{flag} {text!r}: expected a whole number") from None


def _bool(flag: str, text: str) -> bool:
    key = text.strip().lower()
    if key in ("true", "1", "yes", "on"):
        return True
    if key in ("false", "0", "no", "off"):
        return False
    raise GuideError(f"{flag} {text!r}: expected true or false")


def endpoint(flag: str, text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host:
        raise GuideError(f"{flag} {text!r}: expected host:port")
    return host, _port(flag, port)


def _seeds(flag: str, text: str) -> tuple[tuple[str, int], ...]:
    items = [item for item in text.split(",") if item.strip()]
    if not items:
        raise GuideError(f"{flag}: expected host:port[,host:port...]")
    return tuple(endpoint(flag, item) for item in items)


PARSERS: dict[str, Callable[[str, str], object]] = {
    "str": lambda flag, text: text, "port": _port, "int": _int, "bool": _bool,
    "flag": _bool, "seeds": _seeds,
}


def parse_options(values: dict[str, str | bool | None]) -> GuideOptions:
    """``values``: field -> the raw text typer collected (from the command line or the
    ``ESNODE_*`` variable), None when absent."""
    parsed = {}
    for name, raw in values.items():
        if raw is None or raw is False and BY_FIELD[name].kind == "flag":
            continue
        option = BY_FIELD[name]
        parsed[name] = True if raw is True else PARSERS[option.kind](option.flag, str(raw))
    options = GuideOptions(**parsed)
    check_contradictions(options)
    return options


def unknown_arguments(args: list[str]) -> str | None:
    """One line about the first argument typer did not know, with the nearest option."""
    if not args:
        return None
    word = args[0].split("=", 1)[0]
    known = [o.flag for o in OPTIONS] + ["--config", "--node", "--restart", "--no-restart"]
    near = difflib.get_close_matches(word, known, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    what = "option" if word.startswith("-") else "argument"
    return f"unknown {what} {word!r}{hint}; see esnode run --help"


def unknown_environment(environ: dict[str, str] | None = None) -> str | None:
    """An ``ESNODE_*`` variable that is not an option but nearly spells one is a typo: say so.
    Others (a test suite's own ``ESNODE_SIM_SEED``...) are not ours to judge."""
    environ = os.environ if environ is None else environ
    known = {o.envvar for o in OPTIONS} | OTHER_ENV
    for key in sorted(environ):
        if key.startswith("ESNODE_") and key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.85)
            if near:
                return f"unknown environment variable {key} (did you mean {near[0]}?)"
    return None


def check_contradictions(o: GuideOptions) -> None:
    if o.run_projections is not None:
        raise GuideError(f"--run-projections {o.run_projections}: esnode has no projections; "
                         "leave the option out")
    if o.db is not None and o.mem_db:
        raise GuideError("--db and --mem-db contradict each other: give one")
    if o.gossip_seed is not None and o.cluster_dns is not None:
        raise GuideError("--gossip-seed and --cluster-dns contradict each other: give one")
    if o.discover_via_dns is False and o.cluster_dns is not None:
        raise GuideError("--discover-via-dns=false contradicts --cluster-dns")
    if o.discover_via_dns and o.cluster_dns is None:
        raise GuideError("--discover-via-dns=true needs --cluster-dns NAME")
    if o.discover_via_dns and o.gossip_seed is not None:
        raise GuideError("--discover-via-dns=true contradicts --gossip-seed (give "
                         "--discover-via-dns=false, or --cluster-dns instead)")
    if o.cluster_gossip_port is not None and o.cluster_dns is None:
        raise GuideError("--cluster-gossip-port only goes with --cluster-dns")
    if o.dns_server is not None and o.cluster_dns is None:
        raise GuideError("--dns-server only goes with --cluster-dns")
    if o.cluster_size is not None and o.cluster_size < 1:
        raise GuideError(f"--cluster-size {o.cluster_size}: must be at least 1")


# --- a whole topology from the options (no --config) ---------------------------------------
def node_name(host: str, port: int) -> str:
    """A member started from command lines is named after its gossip endpoint."""
    return f"{host}:{port}"


def _ip(flag: str, host: str) -> str:
    """Seeds name members by address, so a host name becomes the address it resolves to."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
    except OSError as exc:
        raise GuideError(f"{flag}: cannot resolve {host!r}: {exc}") from None


def self_section(o: GuideOptions, cwd: Path) -> NodeSection:
    """This node's topology entry (validated like a file's)."""
    int_ip = o.int_ip or "127.0.0.1"
    advertise = o.int_ip_advertise_as or int_ip
    if advertise in ("0.0.0.0", "::"):
        raise GuideError(f"--int-ip {int_ip}: other nodes cannot reach a wildcard address; "
                         "add --int-ip-advertise-as IP")
    internal = o.int_tcp_port or DEFAULT_INT_TCP_PORT
    gossip = o.int_http_port or internal
    name = node_name(_ip("--int-ip-advertise-as", advertise), gossip)
    entry: dict = {"name": name, "internal_host": int_ip, "internal_port": internal,
                   "external_host": o.ext_ip or "127.0.0.1",
                   "external_port": o.ext_tcp_port or DEFAULT_EXT_TCP_PORT,
                   "priority": o.node_priority or 0}
    if o.int_http_port and o.int_http_port != internal:
        entry["internal_gossip_port"] = o.int_http_port
    if o.ext_http_port:
        entry["external_http_port"] = o.ext_http_port
    if o.metrics_port:
        entry["metrics_port"] = o.metrics_port
    if o.int_ip_advertise_as:
        entry["internal_advertise_host"] = o.int_ip_advertise_as
    if o.ext_ip_advertise_as:
        entry["external_advertise_host"] = o.ext_ip_advertise_as
    if o.mem_db:
        entry["mem_db"] = True
    else:
        entry["data_dir"] = str(cwd / (o.db or f"data/{name.replace(':', '-')}"))
    if o.log:
        entry["log_dir"] = str(cwd / o.log)
    try:
        return parse_topology({"nodes": [entry]}).nodes[0]
    except TopologyError as exc:
        raise GuideError(str(exc).replace("nodes[0].", "")) from None


def peer_section(name: str, host: str, port: int) -> NodeSection:
    """Another member, known by its gossip endpoint only; its external endpoint comes with
    its gossip."""
    return NodeSection(name=name, internal_host=host, internal_port=port,
                       external_host="", external_port=0)


def guide_topology(o: GuideOptions, cwd: Path,
                   resolve: Callable[[], list[str]] | None = None) -> Topology:
    """The topology these options describe. ``resolve``: the addresses of ``--cluster-dns``
    (the caller waits until DNS names every member)."""
    me = self_section(o, cwd)
    size = o.cluster_size or 1
    if o.gossip_seed is not None:
        seeds = [(_ip("--gossip-seed", h), p) for h, p in o.gossip_seed]
    elif o.cluster_dns is not None:
        port = o.cluster_gossip_port or me.gossip_port
        seeds = [(address, port) for address in (resolve() if resolve else [])]
    else:
        seeds = []
    peers: dict[str, NodeSection] = {}
    for host, port in seeds:
        name = node_name(host, port)
        if name != me.name:
            peers.setdefault(name, peer_section(name, host, port))
    source = "--cluster-dns" if o.cluster_dns is not None else "--gossip-seed"
    if size > 1 and not peers:
        raise GuideError(f"--cluster-size {size}: the other nodes are missing; give "
                         "--gossip-seed host:port,... or --cluster-dns NAME")
    if len(peers) + 1 != size:
        raise GuideError(f"--cluster-size {size} but {source} names {len(peers)} other "
                         f"node(s) ({', '.join(peers) or 'none'}) besides this one "
                         f"({me.name}); give every other node's gossip endpoint")
    return parse_cluster(me, list(peers.values()), size)


def parse_cluster(me: NodeSection, peers: list[NodeSection], size: int) -> Topology:
    if size % 2 == 0:
        raise GuideError(f"--cluster-size {size} is even; an even cluster tolerates no more "
                         "failures than the odd one below it")
    return Topology(ClusterSection(size=size), DiscoverySection(), TimersSection(),
                    (me, *peers), source="command line")


# --- overriding a topology file (with --config) --------------------------------------------
NODE_KEYS = {"log": "log_dir", "int_ip": "internal_host", "ext_ip": "external_host",
             "int_ip_advertise_as": "internal_advertise_host",
             "ext_ip_advertise_as": "external_advertise_host", "int_tcp_port": "internal_port",
             "ext_tcp_port": "external_port", "int_http_port": "internal_gossip_port",
             "ext_http_port": "external_http_port", "metrics_port": "metrics_port",
             "node_priority": "priority"}
DISCOVERY_KEYS = {"cluster_dns": "dns", "cluster_gossip_port": "gossip_port",
                  "dns_server": "dns_server"}


def override(raw: dict, node: str | None, o: GuideOptions, cwd: Path) -> dict:
    """The topology file's content with the options applied: node options to ``node`` (which
    must be named when the file has several), cluster options to ``[cluster]`` and
    ``[discovery]``. Validation is the file's own, afterwards."""
    raw = {key: (dict(value) if isinstance(value, dict) else value)
           for key, value in raw.items()}
    node_fields = [f for f in (*NODE_KEYS, "db", "mem_db") if getattr(o, f) is not None]
    if node_fields:
        entries = raw.get("nodes") if isinstance(raw.get("nodes"), list) else []
        if node is None and len(entries) != 1:
            flags = ", ".join(BY_FIELD[f].flag for f in node_fields)
            raise GuideError(f"{flags} apply to one node: add --node NAME")
        index = next((i for i, e in enumerate(entries)
                      if isinstance(e, dict) and (node is None or e.get("name") == node)), None)
        if index is None:
            raise GuideError(f"--node {node}: no such node in the topology")
        entry = dict(entries[index])
        for f, key in NODE_KEYS.items():
            value = getattr(o, f)
            if value is not None:
                entry[key] = str(cwd / value) if f == "log" else value
        if o.db is not None:
            entry.pop("mem_db", None)
            entry["data_dir"] = str(cwd / o.db)
        if o.mem_db:
            entry.pop("data_dir", None)
            entry["mem_db"] = True
        raw["nodes"] = [*entries[:index], entry, *entries[index + 1:]]
    if o.cluster_size is not None:
        raw.setdefault("cluster", {})["size"] = o.cluster_size
    discovery = raw.setdefault("discovery", {}) if (
        o.gossip_seed is not None or o.cluster_dns is not None or o.dns_server) else None
    if discovery is not None:
        if o.gossip_seed is not None:
            discovery.pop("dns", None)
            discovery["seeds"] = [f"{h}:{p}" for h, p in o.gossip_seed]
        if o.cluster_dns is not None:
            discovery.pop("seeds", None)
        for f, key in DISCOVERY_KEYS.items():
            if getattr(o, f) is not None:
                discovery[key] = getattr(o, f)
    if o.discover_via_dns is False and raw.get("discovery", {}).get("dns"):
        raise GuideError("--discover-via-dns=false contradicts the topology's discovery.dns")
    return raw
