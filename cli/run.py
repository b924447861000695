"""``esnode run``: start the nodes of a topology and supervise them."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import typer

from esnode.core.config import Topology, TopologyError, load_topology

RESTART_BACKOFF_S = (0.5, 1, 2, 5)


def run_node(topology: Topology, name: str) -> int:
    """Run one node in this process until SIGTERM/SIGINT; returns the exit code."""
    from esnode.actors.logs import setup_logging
    from esnode.actors.node import Node

    node_config = topology.node(name)
    setup_logging(name, node_config.log_dir)
    node = Node(topology, name)
    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        import pykka.debug

        signal.signal(signal.SIGUSR1, pykka.debug.log_thread_tracebacks)
    except (ImportError, AttributeError):
        pass
    try:
        node.start()
    except OSError as exc:
        typer.echo(f"esnode: {name}: {exc}", err=True)
        return 1
    while not stop.is_set() and not node.stopped:
        stop.wait(0.2)
    node.stop()
    return node.wait()


def supervise(config: Path, topology: Topology, restart: bool) -> int:
    """One OS process per node (started fresh with ``python -m esnode.cli``, never forked
    from this threaded process); report crashes and restart them when asked."""
    procs: dict[str, subprocess.Popen] = {}
    restarts: dict[str, int] = {}
    stopping = threading.Event()

    def spawn(name: str) -> None:
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "esnode.cli", "run", "--config", str(config), "--node", name])

    def on_signal(signum, frame):  # noqa: ARG001
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for node in topology.nodes:
        spawn(node.name)
    typer.echo(f"esnode: started {len(procs)} nodes of cluster {topology.cluster.name!r}: "
               + ", ".join(f"{n.name} (pid {procs[n.name].pid}, clients on "
                           f"{n.external_advertise[0]}:{n.external_advertise[1]})"
                           for n in topology.nodes), err=True)
    exit_code = 0
    while not stopping.is_set():
        for name, proc in list(procs.items()):
            code = proc.poll()
            if code is None:
                continue
            typer.echo(f"esnode: node {name} exited with code {code}", err=True)
            if restart:
                delay = RESTART_BACKOFF_S[min(restarts.get(name, 0), len(RESTART_BACKOFF_S) - 1)]
                restarts[name] = restarts.get(name, 0) + 1
                typer.echo(f"esnode: restarting {name} in {delay}s", err=True)
                if stopping.wait(delay):
                    break
                spawn(name)
            else:
                del procs[name]
                exit_code = 1
        if not procs:
            break
        stopping.wait(0.2)
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + topology.timers.shutdown_timeout_ms / 1000 + 5
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            typer.echo(f"esnode: node {name} did not stop in time; killing it", err=True)
            proc.kill()
            proc.wait()
    return exit_code


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        config: Path = typer.Option(Path("topology.toml"), "--config", "-c",
                                    help="Topology file describing the cluster."),
        node: str = typer.Option(None, "--node", "-n",
                                 help="Run only this node (one per machine). Default: all."),
        restart: bool = typer.Option(False, "--restart",
                                     help="Restart a node that crashes (with backoff)."),
    ) -> None:
        """Run the nodes of a topology: all of them (supervised), or one with --node.

        With no --node, starts one process per node of the topology and supervises them;
        Ctrl-C (or SIGTERM) stops them all gracefully.

        Examples:
          esnode run --config topology.toml
          esnode run --config topology.toml --node node2
        """
        from esnode.transport.security import KeyFileError, node_security

        try:
            topology = load_topology(config)
            for name in [node] if node is not None else [n.name for n in topology.nodes]:
                node_security(topology, topology.node(name))
        except TopologyError as exc:
            typer.echo(f"esnode: invalid topology: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyFileError as exc:
            typer.echo(f"esnode: security keys: {exc}", err=True)
            raise typer.Exit(2) from None
        if node is not None or len(topology.nodes) == 1:
            code = run_node(topology, node or topology.nodes[0].name)
        else:
            code = supervise(config, topology, restart)
        raise typer.Exit(code)
