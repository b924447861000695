"""Real hosts for esnode: one Linux network namespace per node, segregated networks, cut links.

Layout (one ``Network`` per test module; root only)::

    root namespace (the test process = the client)
      esn<pid>c  198.18.<2s+1>.254/24 ─┐            (and "unreachable 198.18.<2s>.0/24",
                                       │             so nothing internal leaves by eth0)
    namespace esn-<pid>-switch         │
      bridge brext ── client ──────────┘
        ├── n1e ─┐  ├── n2e ─┐ ...
      bridge brint
        ├── n1i ─┐  ├── n2i ─┐ ...
                 │           │
    namespace esn-<pid>-node1           namespace esn-<pid>-node2   ...
      int0 198.18.<2s>.1/24  (cluster)    int0 198.18.<2s>.2/24
      ext0 198.18.<2s+1>.1/24 (clients)   ext0 198.18.<2s+1>.2/24

The two bridges live in a dedicated "switch" namespace, so the root namespace gains only the
client's veth and one route, and deleting the namespaces removes every veth and bridge. Slot
``s`` is 0 (198.18.0.0/24 internal, 198.18.1.0/24 external) unless another run on this machine
holds it (its client address is present in the root namespace): then the next free one, so
parallel runs never clash on names or addresses. Node namespaces have no default route and
the test process has no route to the internal subnet: nothing can leave for the outside.

Nodes are real ``esnode`` processes: ``ip netns exec esn-<pid>-nodeK python -m esnode.cli run
--config topology.toml --node nodeK`` (``ip netns exec`` execs, so the pid is the node's own
and SIGKILL/SIGSTOP reach it), every node binding 198.18.<2s>.K:2114 (internal) and
198.18.<2s+1>.K:2113 (external), LMDB data under the test's directory.

Faults (``heal()`` undoes them all):

- ``cut(a, b)``: the internal link between two nodes, both directions: a ``blackhole`` route
  to the other's internal address in each namespace (packets are dropped silently, like a
  dead switch port: TCP retransmits into the void). tc netem and tc actions (gact) are not
  in this kernel and no iptables/nft binary is installed, so per-pair cuts are routes.
- ``cut_one_way(frm, to)``: the blackhole route only in ``frm``'s namespace: packets from
  ``frm`` to ``to`` are dropped, ``to`` -> ``frm`` still flows. (Over TCP a one-way cut stalls
  the reverse direction too once the unacknowledged window fills; new connections from
  either side fail. ``tests/netns/test_hosts.py`` shows what each mechanism cuts with UDP.)
- ``isolate(node, networks=("internal",))``: the node's switch ports set down (the cable
  pulled); ``("internal", "external")`` also cuts it from clients.
- ``partition(majority, minority)``: ``cut`` every pair across the two groups.
- ``kill(node)``: SIGKILL (from the ``Cluster`` base).

Clean-up: ``HostsCluster.stop_all`` kills every node (SIGCONT + SIGKILL, reaped), then
``Network.destroy`` deletes every namespace (which deletes their veths and bridges), the root
veth and the route. Both run from the fixtures' finalizers and again from ``atexit``; at start
``sweep_stale()`` removes namespaces and links left by runs whose pid is gone.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from esnode.cli.supervision import alive
from tests.cluster.harness import Cluster, wait_until

INTERNAL_PORT = 2114
EXTERNAL_PORT = 2113
CLIENT_HOST = 254
LOCK_FILE = "/tmp/esn-netns.lock"
PROBE = Path(__file__).with_name("probe.py")
REPO = Path(__file__).resolve().parents[2]
NAME = re.compile(r"^esn-(\d+)(?:\.\d+)?-(?:node\d+|switch)$")
ROOT_LINK = re.compile(r"^esn(\d+)c\d*$")

_live: list = []  # every Network and HostsCluster of this process, for atexit


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be used here (not root, or ``ip netns`` fails)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result



def available() -> str | None:
    """None when network namespaces work here; else why not (the reason to skip)."""
    if os.geteuid() != 0:
        return "network-namespace tests need root"
    probe = f"esn-{os.getpid()}-probe"
    try:
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                           timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip netns is not usable: {exc}"
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=20)
    return None


def sweep_stale() -> list[str]:
    """Delete namespaces and root links of earlier runs whose process is gone; what went."""
    removed = []
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = NAME.match(name) or (re.match(r"^esn-(\d+)-probe$", name))
        if m and not alive(int(m.group(1))):
            _kill_pids_in(name)
            ip("netns", "del", name, check=False)
            removed.append(name)
    for line in ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        link = parts[1].strip().split("@")[0]
        m = ROOT_LINK.match(link)
        if m and not alive(int(m.group(1))):
            ip("link", "del", link, check=False)
            removed.append(link)
    for line in ip("-4", "route", "show", "type", "unreachable", check=False).stdout.splitlines():
        m = re.match(r"unreachable (198\.18\.\d+\.0/24) .*metric (\d+)", line)
        if m and int(m.group(2)) >= 1_000_000 and not alive(int(m.group(2)) - 1_000_000):
            ip("route", "del", "unreachable", m.group(1), "metric", m.group(2), check=False)
            removed.append(f"route {m.group(1)}")
    return removed


def _kill_pids_in(ns: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                          timeout=20).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGCONT)
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


class Network:
    """The namespaces, bridges and veths of ``size`` hosts; see the module docstring."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.names = [f"node{k}" for k in range(1, size + 1)]
        pid = os.getpid()
        index = sum(1 for n in _live if isinstance(n, Network) and not n.destroyed)
        self.tag = f"esn-{pid}" + (f".{index}" if index else "")
        self.switch = f"{self.tag}-switch"
        self.client_link = f"esn{pid}c" + (str(index) if index else "")
        self.namespaces = {n: f"{self.tag}-{n}" for n in self.names}
        self.slot: int | None = None
        self.routes: set[tuple[str, str]] = set()  # (node, address blackholed in its ns)
        self.down: set[str] = set()  # switch ports set down
        self.created: list[str] = []  # namespaces, in creation order
        self._route = ""
        self.destroyed = False
        _live.append(self)

    # --- addresses ---------------------------------------------------------------------
    def internal_ip(self, node: str) -> str:
        return f"198.18.{2 * self.slot}.{self.names.index(node) + 1}"

    def external_ip(self, node: str) -> str:
        return f"198.18.{2 * self.slot + 1}.{self.names.index(node) + 1}"

    @property
    def client_ip(self) -> str:
        return f"198.18.{2 * self.slot + 1}.{CLIENT_HOST}"

    @property
    def internal_subnet(self) -> str:
        return f"198.18.{2 * self.slot}.0/24"

    def ns(self, node: str) -> str:
        return self.namespaces[node]

    def port(self, node: str, network: str) -> str:
        """The switch-side veth of ``node`` on ``network`` ("internal" / "external")."""
        return f"n{self.names.index(node) + 1}{network[0]}"

    # --- building and destroying ---------------------------------------------------------
    def create(self) -> Network:
        try:
            with open(LOCK_FILE, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self.slot = self._free_slot()
                self._build()
        except BaseException:
            self.destroy()
            raise
        return self

    def _free_slot(self) -> int:
        used = set()
        for line in ip("-4", "-o", "addr", "show", check=False).stdout.splitlines():
            m = re.search(r"inet 198\.1([89])\.(\d+)\.\d+/", line)
            if m:
                used.add((int(m.group(2)) + (256 if m.group(1) == "9" else 0)) // 2)
        routes = ip("-4", "route", "show", check=False).stdout
        for m in re.finditer(r"198\.1([89])\.(\d+)\.0/24", routes):
            used.add((int(m.group(2)) + (256 if m.group(1) == "9" else 0)) // 2)
        for slot in range(128):  # 198.18.0.0/16 only: slot s -> 198.18.2s and 198.18.2s+1
            if slot not in used:
                return slot
        raise RuntimeError("no free 198.18.x slot for another network")

    def _add_ns(self, name: str) -> None:
        ip("netns", "add", name)
        self.created.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        sw = self.switch
        self._add_ns(sw)
        for bridge in ("brint", "brext"):
            ip("-n", sw, "link", "add", bridge, "type", "bridge", "stp_state", "0",
               "forward_delay", "0")
            ip("-n", sw, "link", "set", bridge, "up")
        # the client: an address on the external network only
        ip("link", "add", self.client_link, "type", "veth", "peer", "name", "client",
           "netns", sw)
        ip("-n", sw, "link", "set", "client", "master", "brext", "up")
        ip("addr", "add", f"{self.client_ip}/24", "dev", self.client_link)
        ip("link", "set", self.client_link, "up")
        # the internal subnet is unreachable from here (never out of the default route);
        # the metric carries our pid so a sweep can tell whose it is
        self._route = str(1_000_000 + os.getpid())
        ip("route", "add", "unreachable", self.internal_subnet, "metric", self._route)
        for k, node in enumerate(self.names, 1):
            ns = self.ns(node)
            self._add_ns(ns)
            for network, dev, bridge, address in (
                    ("internal", "int0", "brint", self.internal_ip(node)),
                    ("external", "ext0", "brext", self.external_ip(node))):
                port = self.port(node, network)
                ip("link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port,
                   "netns", sw)
                ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
                ip("-n", ns, "link", "set", dev, "up")
                ip("-n", sw, "link", "set", port, "master", bridge, "up")

    def destroy(self) -> None:
        """Every namespace (with its veths and bridges), the root veth and route; idempotent."""
        for name in reversed(self.created):
            _kill_pids_in(name)
            ip("netns", "del", name, check=False)
        self.created.clear()
        ip("link", "del", self.client_link, check=False)  # gone with the switch already
        if self._route and self.slot is not None:
            ip("route", "del", "unreachable", self.internal_subnet, "metric", self._route,
               check=False)
            self._route = ""
        self.routes.clear()
        self.down.clear()
        self.destroyed = True

    def leftovers(self) -> list[str]:
        """Anything of this network still present (for the clean-up test)."""
        out = []
        spaces = ip("netns", "list", check=False).stdout
        out += [n for n in [self.switch, *self.namespaces.values()] if re.search(
            rf"^{re.escape(n)}\b", spaces, re.M)]
        if ip("link", "show", self.client_link, check=False).returncode == 0:
            out.append(self.client_link)
        if self.slot is not None and self.internal_subnet in ip(
                "route", "show", "type", "unreachable", check=False).stdout:
            out.append(f"route {self.internal_subnet}")
        return out

    # --- faults --------------------------------------------------------------------------
    def cut_one_way(self, frm: str, to: str) -> None:
        """Drop every packet ``frm`` sends to ``to``'s internal address."""
        address = self.internal_ip(to)
        if (frm, address) not in self.routes:
            ip("-n", self.ns(frm), "route", "add", "blackhole", f"{address}/32")
            self.routes.add((frm, address))

    def cut(self, a: str, b: str) -> None:
        """Cut the internal link between ``a`` and ``b`` in both directions."""
        self.cut_one_way(a, b)
        self.cut_one_way(b, a)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every internal link between nodes of different groups."""
        groups = [list(g) for g in groups]
        for i, group in enumerate(groups):
            for other in groups[i + 1:]:
                for a in group:
                    for b in other:
                        self.cut(a, b)

    def isolate(self, node: str, networks: Iterable[str] = ("internal",)) -> None:
        """Pull ``node``'s cable(s): its switch port on each named network goes down."""
        for network in networks:
            assert network in ("internal", "external"), network
            port = self.port(node, network)
            ip("-n", self.switch, "link", "set", port, "down")
            self.down.add(port)

    def heal(self) -> None:
        for frm, address in sorted(self.routes):
            ip("-n", self.ns(frm), "route", "del", "blackhole", f"{address}/32", check=False)
        self.routes.clear()
        ports = sorted(self.down)
        for port in ports:
            ip("-n", self.switch, "link", "set", port, "up", check=False)
        self.down.clear()
        # The kernel turns a returning carrier on from its link-watch work (up to a second
        # later); until then packets are dropped. Wait for it on both ends.
        deadline = time.monotonic() + 5
        for port in ports:
            node = self.names[int(port[1:-1]) - 1]
            dev = "int0" if port.endswith("i") else "ext0"
            while time.monotonic() < deadline and not (
                    self._oper_up("-n", self.switch, port) and self._oper_up("-n", self.ns(node), dev)):
                time.sleep(0.02)
        if ports:
            # Neighbours that went unanswered while the cable was out would hold packets for
            # up to a second of ARP retries: forget them, so the next packet asks at once.
            for node in self.names:
                ip("-n", self.ns(node), "neigh", "flush", "all", check=False)

    @staticmethod
    def _oper_up(*where: str) -> bool:
        out = ip(*where[:2], "-br", "link", "show", "dev", where[2], check=False).stdout.split()
        return len(out) > 1 and out[1] == "UP"

    # --- running things inside a namespace -----------------------------------------------
    def exec(self, node: str, *argv: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns(node), *argv],
                              capture_output=True, text=True, timeout=timeout)

    def probe(self, node: str, *args: str, timeout: float = 10.0) -> dict:
        """Run ``probe.py`` inside ``node``'s namespace; its JSON answer."""
        import json

        r = self.exec(node, sys.executable, str(PROBE), *args, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"probe {args} in {node}: {r.stderr.strip()}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def udp_reaches(self, frm: str, to: str, network: str = "internal",
                    port: int = 9999) -> bool:
        """Does a datagram from ``frm`` reach ``to`` (on ``network``)? Checks one direction."""
        import json

        address = self.internal_ip(to) if network == "internal" else self.external_ip(to)
        listener = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(to), sys.executable, str(PROBE), "udp-listen",
             str(port), "1.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert listener.stdout.readline().strip() == "ready", listener.stderr.read()
            self.probe(frm, "udp-send", address, str(port), f"from {frm}")
            out, _ = listener.communicate(timeout=10)
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait()
        return json.loads(out.strip().splitlines()[-1])["received"] == f"from {frm}"

    def established(self, node: str) -> list[tuple[str, str]]:
        """``(local, peer)`` address:port of every established TCP connection in ``node``."""
        r = self.exec(node, "ss", "-tnH", "state", "established")
        out = []
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 4:
                out.append((parts[-2], parts[-1]))
        return out


class HostsCluster(Cluster):
    """The process-level ``Cluster`` (talking, leader finding, convergence) on a ``Network``:
    each node runs in its own namespace; the test process reaches only external addresses."""

    def __init__(self, network: Network, directory: Path, name: str = "hosts", **timers: int):
        self.net = network
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.size = network.size
        self.names = list(network.names)
        self.ports = {n: (INTERNAL_PORT, EXTERNAL_PORT) for n in self.names}
        self.timers = timers
        self.config = self.dir / "topology.toml"
        self.config.write_text(self.topology_text(name))
        self.procs: dict[str, subprocess.Popen] = {}
        self.paused: set[str] = set()
        self._raws = {}
        self._clients = []
        _live.append(self)

    def topology_text(self, name: str = "hosts") -> str:
        """The base topology with each node's own addresses instead of 127.0.0.1."""
        head, *blocks = super().topology_text(name).split("[[nodes]]")
        for i, node in enumerate(self.names):
            blocks[i] = blocks[i].replace(
                'internal_host = "127.0.0.1"', f'internal_host = "{self.net.internal_ip(node)}"'
            ).replace('external_host = "127.0.0.1"',
                      f'external_host = "{self.net.external_ip(node)}"')
        return "[[nodes]]".join([head, *blocks])

    def external(self, name: str) -> str:
        return f"tcp://{self.net.external_ip(name)}:{EXTERNAL_PORT}"

    def internal(self, name: str) -> str:
        return f"tcp://{self.net.internal_ip(name)}:{INTERNAL_PORT}"

    def launcher(self, name: str) -> tuple[list[str], str]:
        return ["ip", "netns", "exec", self.net.ns(name)], f" in {self.net.ns(name)}"

    # --- faults, delegated -----------------------------------------------------------------
    def cut(self, a: str, b: str) -> None:
        self.net.cut(a, b)

    def cut_one_way(self, frm: str, to: str) -> None:
        self.net.cut_one_way(frm, to)

    def partition(self, majority: Iterable[str], minority: Iterable[str]) -> None:
        self.net.partition(majority, minority)

    def isolate(self, node: str, networks: Iterable[str] = ("internal",)) -> None:
        self.net.isolate(node, networks)

    def heal(self) -> None:
        self.net.heal()

    def state(self, name: str) -> str | None:
        info = self.info(name, timeout=0.5)
        return info["state"] if info else None

    def state_lines(self, name: str) -> list[str]:
        """The node's logged state changes (``state ...`` lines) since its last start."""
        text = self.stderr_path(name).read_text(errors="replace")
        return [line.split(" state ", 1)[1] for line in text.split("=== start")[-1].splitlines()
                if " state " in line]

    def wait_state(self, name: str, predicate, timeout: float, what: str) -> str:
        return wait_until(lambda: (s := self.state(name)) is not None and predicate(s) and s,
                          timeout, f"{name} {what}", self)


def destroy_all() -> None:
    """Kill every node and remove every network this process made (atexit, and finalizers)."""
    for obj in list(_live):
        if isinstance(obj, HostsCluster):
            try:
                obj.stop_all(graceful=False)
            except Exception:
                pass
    for obj in list(_live):
        if isinstance(obj, Network) and not obj.destroyed:
            obj.destroy()


atexit.register(destroy_all)
