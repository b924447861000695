"""A real 3-node cluster for client tests: one OS process per node (``python -m esnode.cli run
--config topology.toml --node NAME``), LMDB data under a temporary folder, free ports.

``RealCluster`` writes the topology, starts, kills (SIGKILL), stops (SIGTERM) and restarts
nodes, finds the leader (asking every live node over a direct connection), and on ``close()``
ends every process it started, whatever happened. Each node's stderr goes to
``<root>/<name>.stderr``; ``report()`` returns their tails, which the fixture prints at teardown
so that a failing test shows them (pytest shows a passing test's output only with ``-s``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from esnode.client import connect
from esnode.client.errors import EsError
from tests.conftest import free_port, wait_for



def free_port_on(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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


class RealCluster:
    """Three (or ``size``) nodes as separate processes on loopback.

    ``hosts``: each node's external (client) bind address, default 127.0.0.1 for all;
    ``external_port``: one external port shared by every node (only with distinct hosts),
    default a free port per node. Internal endpoints are 127.0.0.1 with distinct free ports.
    ``timers``: the topology's ``[timers]`` (default: none, i.e. the server's defaults, as in
    the shipped topology.toml).
    """

    def __init__(self, root: Path, size: int = 3, hosts: Iterable[str] | None = None,
                 external_port: int | None = None, timers: dict | None = None,
                 name: str = "client-test") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.names = [f"node{i + 1}" for i in range(size)]
        hosts = list(hosts) if hosts is not None else ["127.0.0.1"] * size
        if external_port is not None and len(set(hosts)) != size:
            raise ValueError("a shared external port needs a distinct host per node")
        self.external = {n: (h, external_port or free_port_on(h))
                         for n, h in zip(self.names, hosts, strict=True)}
        self.internal = {n: ("127.0.0.1", free_port()) for n in self.names}
        self.config = self.root / "topology.toml"
        self.config.write_text(self.topology_text(name, timers or {}))
        self.procs: dict[str, subprocess.Popen] = {}
        self._stderr: dict[str, object] = {}
        self.exits: list[str] = []

    # --- topology -------------------------------------------------------------------------
    def topology_text(self, name: str, timers: dict) -> str:
        lines = ["[cluster]", f'name = "{name}"', f"size = {len(self.names)}"]
        if timers:
            lines += ["", "[timers]"] + [f"{key} = {value}" for key, value in timers.items()]
        for n in self.names:
            (ih, ip), (eh, ep) = self.internal[n], self.external[n]
            lines += ["", "[[nodes]]", f'name = "{n}"', f'data_dir = "data/{n}"',
                      f'internal_host = "{ih}"', f"internal_port = {ip}",
                      f'external_host = "{eh}"', f"external_port = {ep}"]
        return "\n".join(lines) + "\n"

    def endpoint(self, name: str) -> str:
        host, port = self.external[name]
        return f"{host}:{port}"

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint(n) for n in self.names]

    @property
    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    # --- processes ------------------------------------------------------------------------
    def start(self, *names: str) -> RealCluster:
        for name in names or self.names:
            if name in self.procs and self.procs[name].poll() is None:
                raise RuntimeError(f"{name} is already running")
            err = open(self.root / f"{name}.stderr", "ab")  # noqa: SIM115 - closed in close()
            err.write(f"--- started at {time.time():.3f}\n".encode())
            err.flush()
            self._stderr[name] = err
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "esnode.cli", "run", "--config", str(self.config),
                 "--node", name],
                cwd=self.root, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
        return self

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` and reap it."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.exits.append(f"{name} killed (SIGKILL)")

    def stop(self, name: str, timeout: float = 10.0) -> int:
        """SIGTERM ``name`` and wait for it to exit (SIGKILL after ``timeout``)."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    def close(self) -> None:
        """Kill every process still running (SIGKILL: the data is thrown away anyway)."""
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.kill()
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
                self.exits.append(f"{name} did not die")
        for err in self._stderr.values():
            err.close()

    def __enter__(self) -> RealCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def report(self, lines: int = 40) -> str:
        """The tail of every node's stderr, and how each process ended."""
        out = []
        for name in self.names:
            path = self.root / f"{name}.stderr"
            text = path.read_text(errors="replace").splitlines() if path.exists() else []
            proc = self.procs.get(name)
            code = None if proc is None else proc.poll()
            out.append(f"===== {name} ({self.endpoint(name)}; exit code {code}) "
                       f"last {lines} of {len(text)} stderr lines =====")
            out += text[-lines:]
        out += self.exits
        return "\n".join(out)

    # --- cluster state --------------------------------------------------------------------
    def view(self, name: str, timeout: float = 0.5):
        """``name``'s cluster_info, or None if it does not answer."""
        try:
            with connect(f"tcp://{self.endpoint(name)}", timeout=timeout, max_retries=0,
                         keepalive_interval=0, discovery_attempts=1,
                         gossip_timeout=timeout) as client:
                return client.cluster_info()
        except (EsError, OSError):
            return None

    def leader(self) -> str | None:
        """The leader every live node agrees on and shows, in its member list, as the alive
        ``Leader`` with every other live node alive (what a client's discovery needs), or
        None."""
        alive = set(self.alive)
        seen = set()
        for name in alive:
            info = self.view(name)
            if info is None or info.leader not in alive:
                return None
            members = {m.name: m for m in info.members}
            shown = members.get(info.leader)
            if shown is None or shown.state != "Leader" \
                    or not all(n in members and members[n].alive for n in alive):
                return None
            seen.add(info.leader)
        return seen.pop() if len(seen) == 1 else None

    def wait_leader(self, timeout: float = 20.0) -> str:
        """Wait until every live node agrees on one live leader, and return its name."""
        return wait_for(self.leader, timeout, interval=0.05,
                        message=f"a leader all of {self.alive} agree on\n{self.report(15)}")

    def wait_members_alive(self, timeout: float = 20.0) -> None:
        """Wait until every live node sees every live node alive (gossip has converged)."""
        def converged() -> bool:
            alive = set(self.alive)
            for name in alive:
                info = self.view(name)
                if info is None or {m.name for m in info.members if m.alive} < alive:
                    return False
            return True

        wait_for(converged, timeout, interval=0.05, message="gossip to converge")
