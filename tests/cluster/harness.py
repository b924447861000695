"""A cluster of real ``esnode`` node processes on 127.0.0.1, for process-level tests.

Each node is its own OS process, started with ``python -m esnode.cli run --config <topology>
--node NAME`` (a fresh interpreter, never a fork of the test process), so a test can SIGKILL,
SIGSTOP/SIGCONT and restart any one of them. The topology is written to the test's tmp_path
with free ports and one LMDB data directory per node; each node's stderr goes to
``<dir>/<name>.stderr`` (appended across restarts, one marker line per start) so a failing test
can print it.

Talking to nodes: ``raw(name)`` is a bare DEALER speaking protocol v1 (no retries, exact
outcomes, used by the history recorders); ``client(name)`` is the client library connected
directly to that node; ``cluster_client()`` is the client library with every node as a seed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import msgpack
import zmq

from esnode.transport.codec import encode_request
from esnode.transport.ports import free_port
from tests.conftest import free_port, wait_for

DEFAULT_STOP_TIMEOUT = 10.0
CLIENT_OPS_TIMEOUT = 1.0
REPO = Path(__file__).resolve().parents[2]


class NoReply(TimeoutError):
    """The node did not answer in time."""


class Raw:
    """One DEALER to one node's external endpoint, speaking protocol v1 by hand.

    ``call`` returns ``(kind, body)``; replies to earlier, abandoned requests are skipped by
    correlation id. After a timeout the socket is replaced, so a request queued for a dead
    node can never be delivered later by ZeroMQ's silent reconnect (its outcome stays
    whatever the caller recorded: unknown)."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self._ctx = zmq.Context.instance()
        self._corr = 0
        self._sock = self._socket()

    def _socket(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(self.endpoint)
        return sock

    def reset(self) -> None:
        self._sock.close(linger=0)
        self._sock = self._socket()

    def send_raw(self, *frames: bytes) -> None:
        self._sock.send_multipart(list(frames))

    def recv_raw(self, timeout: float) -> list:
        if not self._sock.poll(int(timeout * 1000)):
            raise NoReply(f"no reply from {self.endpoint} within {timeout}s")
        return msgpack.unpackb(self._sock.recv(), raw=False)

    def call(self, op: str, args: dict | None = None, timeout: float = 2.0,
             abort: threading.Event | None = None) -> tuple[str, dict]:
        """Send one request and wait for its reply; ``NoReply`` after ``timeout`` (or as soon
        as ``abort`` is set)."""
        self._corr += 1
        corr = self._corr
        deadline = time.monotonic() + timeout
        try:
            # IMMEDIATE: a send to a peer that is not connected (yet) would block: poll it.
            if not self._sock.poll(int(timeout * 1000), zmq.POLLOUT):
                raise NoReply(f"{self.endpoint} is not connected")
            self._sock.send(encode_request(op, corr, args or {}), zmq.NOBLOCK)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or (abort is not None and abort.is_set()):
                    raise NoReply(f"no reply to {op} from {self.endpoint} within {timeout}s")
                if not self._sock.poll(int(min(left, 0.1) * 1000)):
                    continue
                reply = msgpack.unpackb(self._sock.recv(), raw=False)
                if reply[0] == corr:
                    return reply[1], reply[2]
        except (NoReply, zmq.Again):
            self.reset()
            raise NoReply(f"no reply to {op} from {self.endpoint} within {timeout}s") from None

    def send(self, op: str, args: dict) -> int:
        """Pipeline a request without waiting (the socket must be connected); its corr."""
        self._corr += 1
        self._sock.send(encode_request(op, self._corr, args))
        return self._corr

    def collect(self, corrs: Iterable[int], timeout: float) -> dict[int, tuple[str, dict]]:
        """Replies to pipelined requests that arrive within ``timeout``: corr -> (kind, body)."""
        wanted, got = set(corrs), {}
        deadline = time.monotonic() + timeout
        while wanted - got.keys():
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(int(left * 1000)):
                break
            corr, kind, body = msgpack.unpackb(self._sock.recv(), raw=False)
            if corr in wanted:
                got[corr] = (kind, body)
        return got

    def close(self) -> None:
        self._sock.close(linger=0)


def free_port_on(host: str) -> int:
    return free_port(host)


def common_free_port(hosts: Iterable[str], tries: int = 20) -> int:
    """A TCP port free on every one of ``hosts`` (e.g. 127.0.0.2, 127.0.0.3, 127.0.0.4)."""
    hosts = list(hosts)
    for _ in range(tries):
        port = free_port_on(hosts[0])
        try:
            for host in hosts[1:]:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


def new_event(eid: str | None = None, event_type: str = "Tested", data: bytes = b"{}") -> list:
    return [eid or str(uuid.uuid4()), event_type, data, b"", True]


class Cluster:
    """``size`` nodes on 127.0.0.1 with free ports; ``timers`` go into ``[timers]`` (none: the
    server's defaults).

    ``hosts``: each node's external (client) address instead of 127.0.0.1 (e.g. 127.0.0.2-4,
    for DNS discovery); ``external_port``: one external port shared by every node (only with a
    distinct host per node). Internal endpoints stay on 127.0.0.1."""

    hosts: dict[str, str] = {}
    """node -> its external address, where it is not 127.0.0.1."""

    def __init__(self, directory: Path, size: int = 3, name: str = "test",
                 hosts: Iterable[str] | None = None, external_port: int | None = None,
                 **timers: int):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.names = [f"node{i + 1}" for i in range(size)]
        if hosts is not None:
            self.hosts = dict(zip(self.names, hosts, strict=True))
        if external_port is not None and len(set(self.hosts.values())) != size:
            raise ValueError("a shared external port needs a distinct host per node")
        self.ports = {n: (free_port(), external_port or free_port_on(self.host(n)))
                      for n in self.names}  # (internal, external)
        self.timers = timers
        self.config = self.dir / "topology.toml"
        self.config.write_text(self.topology_text(name))
        self.procs: dict[str, subprocess.Popen] = {}
        self.paused: set[str] = set()
        self._raws: dict[str, Raw] = {}
        self._clients: list = []

    @classmethod
    def adopt(cls, config: Path) -> Cluster:
        """A handle on the nodes of an existing topology file whose processes someone else
        runs (``esnode run`` as supervisor): talking to them works, process control does not."""
        from esnode.core.config import load_topology

        topology = load_topology(config)
        self = cls.__new__(cls)
        self.dir, self.config, self.size = Path(config).parent, Path(config), len(topology.nodes)
        self.names = [n.name for n in topology.nodes]
        self.ports = {n.name: (n.internal_advertise[1], n.external_advertise[1])
                      for n in topology.nodes}
        self.timers = {}
        self.procs, self.paused, self._raws, self._clients = {}, set(), {}, []
        return self

    # --- topology ------------------------------------------------------------------------
    def topology_text(self, name: str = "test") -> str:
        lines = ["[cluster]", f'name = "{name}"', f"size = {self.size}", ""]
        if self.timers:
            lines.append("[timers]")
            lines += [f"{key} = {value}" for key, value in self.timers.items()]
            lines.append("")
        for n in self.names:
            internal, external = self.ports[n]
            lines += ["[[nodes]]", f'name = "{n}"', f'data_dir = "data/{n}"',
                      'internal_host = "127.0.0.1"', f"internal_port = {internal}",
                      f'external_host = "{self.host(n)}"', f"external_port = {external}", ""]
        return "\n".join(lines)

    def host(self, name: str) -> str:
        """``name``'s external address."""
        return self.hosts.get(name, "127.0.0.1")

    def endpoint(self, name: str) -> str:
        """``host:port`` of ``name``'s external endpoint."""
        return self.external(name).removeprefix("tcp://")

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint(n) for n in self.names]

    def external(self, name: str) -> str:
        return f"tcp://{self.host(name)}:{self.ports[name][1]}"

    def internal(self, name: str) -> str:
        return f"tcp://127.0.0.1:{self.ports[name][0]}"

    def stderr_path(self, name: str) -> Path:
        return self.dir / f"{name}.stderr"

    @property
    def write_timeout(self) -> float:
        return self.timers.get("write_timeout_ms", 5000) / 1000

    @property
    def election_timeout(self) -> float:
        return self.timers.get("election_timeout_ms", 1000) / 1000

    # --- processes -----------------------------------------------------------------------
    def start(self, *names: str) -> None:
        """Start the named nodes (all when none is named); returns at once."""
        for name in names or self.names:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                raise RuntimeError(f"{name} is already running (pid {proc.pid})")
            prefix, where = self.launcher(name)
            with open(self.stderr_path(name), "ab") as err:
                err.write(f"=== start {name}{where} at {time.strftime('%H:%M:%S')} ===\n"
                          .encode())
                err.flush()
                self.procs[name] = subprocess.Popen(
                    [*prefix, sys.executable, "-m", "esnode.cli", *self.arguments(name)],
                    cwd=self.dir, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            self.paused.discard(name)

    def arguments(self, name: str) -> list[str]:
        """``esnode``'s arguments that start ``name``: its node of the topology file."""
        return ["run", "--config", str(self.config), "--node", name]

    def launcher(self, name: str) -> tuple[list[str], str]:
        """What ``name``'s command line starts with, and where it runs (for the stderr
        marker): nothing here; a namespace on other hosts."""
        return [], ""

    def running(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def kill(self, name: str) -> None:
        """SIGKILL (kill -9) and reap."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.paused.discard(name)
        self._drop_raw(name)

    def pause(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)
        self.paused.discard(name)

    def stop(self, name: str, timeout: float = DEFAULT_STOP_TIMEOUT) -> int:
        """Graceful stop (SIGTERM); SIGKILL if it takes longer than ``timeout``."""
        proc = self.procs[name]
        if name in self.paused:
            self.resume(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._drop_raw(name)
        return proc.returncode

    def stop_all(self, graceful: bool = True) -> None:
        """Every process this cluster started ends, whatever state it is in."""
        for client in self._clients:
            try:
                client.close()
            except Exception:
                pass
        self._clients.clear()
        for raw in self._raws.values():
            raw.close()
        self._raws.clear()
        for name, proc in self.procs.items():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + (5 if graceful else 0)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.paused.clear()

    def logs(self, tail: int = 150) -> str:
        out = []
        for name in self.names:
            path = self.stderr_path(name)
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()
                out.append(f"----- {name} stderr (last {min(tail, len(lines))} of "
                           f"{len(lines)} lines) -----")
                out += lines[-tail:]
        return "\n".join(out)

    # --- talking to nodes ----------------------------------------------------------------
    def raw(self, name: str) -> Raw:
        """A cached raw connection to ``name`` (for the test's own thread only)."""
        if name not in self._raws:
            self._raws[name] = Raw(self.external(name))
        return self._raws[name]

    def _drop_raw(self, name: str) -> None:
        raw = self._raws.pop(name, None)
        if raw is not None:
            raw.close()

    def client(self, name: str, **options):
        """The client library connected directly to ``name`` (closed by ``stop_all``)."""
        from esnode.client import connect

        c = connect(self.external(name), **options)
        self._clients.append(c)
        return c

    def cluster_client(self, names: Iterable[str] | None = None, credentials: str = "",
                       **options):
        """The client library with ``names`` (default all) as gossip seeds, fast failover;
        logged in with ``credentials`` (``user:password``) when given."""
        from esnode.client import connect
        from tests.client.cluster_support import seeds

        uri = seeds([self.external(n) for n in (names or self.names)], **options)
        if credentials:
            uri = uri.replace("esnode://", f"esnode://{credentials}@", 1)
        c = connect(uri)
        self._clients.append(c)
        return c

    def info(self, name: str, timeout: float = CLIENT_OPS_TIMEOUT) -> dict | None:
        """``cluster_info`` from ``name``, or None if it does not answer in time."""
        proc = self.procs.get(name)  # None: a process this harness did not start
        if name in self.paused or (proc is not None and proc.poll() is not None):
            return None
        try:
            kind, body = self.raw(name).call("cluster_info", timeout=timeout)
        except NoReply:
            return None
        return body if kind == "ok" else None

    def leader(self, among: Iterable[str] | None = None, settled: bool = False) -> str | None:
        """The one node (among the answering ones) that says it is the Leader and that every
        other answering node names as leader; None while that is not so. ``settled``: also
        every one of them answers and shows every one of them alive in its member list (what
        a client's gossip discovery needs)."""
        asked = list(among or self.running())
        infos = {n: self.info(n) for n in asked}
        infos = {n: i for n, i in infos.items() if i is not None}
        leaders = [n for n, i in infos.items() if i["state"] == "Leader"]
        if len(leaders) != 1:
            return None
        if any(i["leader"] != leaders[0] for i in infos.values()):
            return None
        if settled and (len(infos) != len(asked) or not all(
                set(asked) <= {m["name"] for m in i["members"] if m["alive"]}
                and {m["name"]: m["state"] for m in i["members"]}.get(leaders[0]) == "Leader"
                for i in infos.values())):
            return None
        return leaders[0]

    def wait_for_leader(self, timeout: float = 15.0, among: Iterable[str] | None = None,
                        exclude: Iterable[str] = (), settled: bool = False) -> str:
        among = list(among) if among is not None else None
        excluded = set(exclude)

        def found() -> str | None:
            names = among if among is not None else [n for n in self.running()
                                                     if n not in self.paused]
            return self.leader([n for n in names if n not in excluded], settled)

        return wait_until(found, timeout, f"one leader agreed on by every answering node"
                          f" (among {among or 'all running'}, excluding {sorted(excluded)})",
                          self)

    def append(self, name: str, stream: str, events: list, expected_version: int = -2,
               timeout: float | None = None) -> tuple[str, dict]:
        """One append through ``name`` with the raw protocol: ``(kind, body)``."""
        return self.raw(name).call("append", {"stream": stream, "events": events,
                                              "expected_version": expected_version},
                                   timeout=timeout or self.write_timeout + 2)

    def read_all(self, name: str, timeout: float = 5.0) -> list[list]:
        """Every event of ``$all`` that ``name`` serves (up to its commit position)."""
        events: list[list] = []
        position = 0
        raw = self.raw(name)
        while True:
            kind, body = raw.call("read_all", {"from_position": position, "max_count": 5000},
                                  timeout=timeout)
            assert kind == "ok", (name, body)
            events += body["events"]
            if body["is_end"] or not body["events"]:
                return events
            position = body["next_position"]

    def read_stream(self, name: str, stream: str) -> list[list]:
        kind, body = self.raw(name).call("read_stream", {"stream": stream, "max_count": 10000})
        if kind == "error" and body["code"] == "stream_not_found":
            return []
        assert kind == "ok", (name, body)
        return body["events"]

    def wait_converged(self, names: Iterable[str], timeout: float = 20.0,
                       at_least: int = 0) -> dict[str, list[list]]:
        """Wait until every named node serves the same ``$all`` (with at least ``at_least``
        events); returns each node's ``$all``."""
        names = list(names)
        last: dict[str, list] = {}

        def same() -> bool:
            for n in names:
                try:
                    last[n] = self.read_all(n, timeout=2.0)
                except NoReply:
                    return False
            keys = {n: [(e[8], e[0]) for e in log] for n, log in last.items()}
            first = keys[names[0]]
            return len(first) >= at_least and all(k == first for k in keys.values())

        wait_until(same, timeout, f"identical $all on {names} (at least {at_least} events; "
                   f"now {({n: len(v) for n, v in last.items()})})", self)
        return dict(last)


def wait_until(condition: Callable[[], object], timeout: float, what: str,
               cluster: Cluster | None = None, interval: float = 0.05) -> object:
    """``wait_for`` that, with a cluster, also says which nodes were up when it gave up."""
    try:
        return wait_for(condition, timeout, interval, what)
    except AssertionError as exc:
        if cluster is None:
            raise
        raise AssertionError(f"{exc} (running: {cluster.running()}, paused: "
                             f"{sorted(cluster.paused)}; see the node logs below)") from None
