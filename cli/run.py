"""``esnode run``: start the nodes of a topology and supervise them, or start one node from
Event Store's command-line options (cli/guide.py)."""

from __future__ import annotations

import gc
import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from esnode.cli import guide
from esnode.cli.supervision import RunState
from esnode.core.config import Topology, TopologyError, load_topology, read_topology_file

RESTART_BACKOFF_S = (0.5, 1, 2, 5)
DNS_RETRY_S = 2.0
DEFAULT_CONFIG = Path("topology.toml")


class SignalFlag:
    """Set from a signal handler, waited on by the main thread. Not a ``threading.Event``:
    its ``set`` takes a lock that the interrupted main thread may hold inside ``wait``, and a
    second signal then deadlocks the process (seen: a node that ignored SIGTERM for good)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True  # one store: safe in a signal handler

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._set and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(0.05, left))  # a signal interrupts the sleep and runs the handler
        return self._set


def settle_heap() -> None:
    """Move what the started node holds for good (modules, classes, actors, sockets) out of the
    garbage collector's sight: a full collection walked the ~55,000 objects of a started node
    and stopped every thread for ~43 ms, three times in 14 s of appends; after ``gc.freeze()``
    ~6 ms (docs/performance.md). What the node allocates later is collected as before. Done by
    the node's process, not by ``Node.start()``: it is a decision for a whole process, and tests
    run nodes inside theirs."""
    gc.collect()  # garbage of the start-up is freed, not frozen
    gc.freeze()


def run_node(topology: Topology, name: str, announce: bool = False) -> int:
    """Run one node in this process until SIGTERM/SIGINT; returns the exit code."""
    from esnode.actors.logs import setup_logging
    from esnode.actors.node import Node

    node_config = topology.node(name)
    setup_logging(name, node_config.log_dir)
    node = Node(topology, name)
    stop = SignalFlag()

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
    settle_heap()
    if announce:
        c = node_config
        typer.echo(f"esnode: node {name} (pid {os.getpid()}) of a {topology.cluster.size}-node "
                   f"cluster: clients on {c.external_advertise[0]}:{c.external_advertise[1]}, "
                   f"gossip on {c.internal_host}:{c.gossip_port}, "
                   f"{'in memory' if c.mem_db else 'data in ' + c.data_dir}", err=True)
    while not stop.is_set() and not node.stopped:
        stop.wait(0.2)
    node.stop()
    return node.wait()


def supervise(config: Path, topology: Topology, restart: bool) -> int:
    """One OS process per node (started fresh with ``python -m esnode.cli``, never forked
    from this threaded process); report crashes and restart them unless told not to.
    ``esnode stop/restart --node`` reach this loop through the run-state folder."""
    procs: dict[str, subprocess.Popen] = {}
    restarts: dict[str, int] = {}
    held: set[str] = set()  # stopped by `esnode stop --node`: not restarted until asked
    stopping = SignalFlag()
    state = RunState.for_config(config)

    def spawn(name: str, again: bool = True) -> None:
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "esnode.cli", "run", "--config", str(config), "--node", name])
        if again:
            typer.echo(f"esnode: restarted {name} (pid {procs[name].pid})", err=True)
        state.save(os.getpid(), {n: p.pid for n, p in procs.items()})

    def on_signal(signum, frame):  # noqa: ARG001
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    state.clear_requests()
    for node in topology.nodes:
        spawn(node.name, again=False)
    typer.echo(f"esnode: started {len(procs)} nodes of cluster {topology.cluster.name!r}: "
               + ", ".join(f"{n.name} (pid {procs[n.name].pid}, clients on "
                           f"{n.external_advertise[0]}:{n.external_advertise[1]})"
                           for n in topology.nodes)
               + f"; supervisor pid {os.getpid()}, "
               + ("restarting a node that dies" if restart else "not restarting nodes "
                  "(--no-restart)"), err=True)
    exit_code = 0
    while not stopping.is_set():
        for name, request in state.take_requests():
            proc = procs.get(name)
            if request == "stop":
                held.add(name)
            if proc is not None and proc.poll() is None:
                typer.echo(f"esnode: {request} {name}: stopping pid {proc.pid}", err=True)
                stop_process(name, proc, topology)
            if request == "restart":
                held.discard(name)
                restarts.pop(name, None)
                spawn(name)
        for name, proc in list(procs.items()):
            code = proc.poll()
            if code is None:
                continue
            if name in held or code == 0:  # stopped on purpose (esnode stop, admin shutdown)
                held.add(name)
                typer.echo(f"esnode: node {name} stopped (esnode restart --node {name} starts "
                           "it again)", err=True)
                del procs[name]
                state.save(os.getpid(), {n: p.pid for n, p in procs.items()})
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
                state.save(os.getpid(), {n: p.pid for n, p in procs.items()})
                exit_code = 1
                typer.echo(f"esnode: not restarting it (--no-restart); start it again with "
                           f"esnode run --config {config} --node {name}", err=True)
        if not procs and not held:
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
    state.remove()
    return exit_code


def stop_process(name: str, proc: subprocess.Popen, topology: Topology) -> None:
    """SIGTERM, then SIGKILL after the topology's shutdown timeout."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=topology.timers.shutdown_timeout_ms / 1000 + 5)
    except subprocess.TimeoutExpired:
        typer.echo(f"esnode: node {name} did not stop in time; killing it", err=True)
        proc.kill()
        proc.wait()


def resolve_members(options: guide.GuideOptions) -> list[str]:
    """The ``--cluster-dns`` addresses, waiting (and saying so) until DNS names as many
    addresses as the cluster has members: a member's name is its address, so all of them
    must be known before the node can count votes."""
    from esnode.transport.discovery import resolve_a

    size = options.cluster_size or 1
    while True:
        try:
            found = resolve_a(options.cluster_dns, options.dns_server or "")
        except Exception as exc:  # noqa: BLE001 - DNS down or name unknown: wait and retry
            found, why = [], str(exc) or type(exc).__name__
        else:
            why = f"{len(found)} address(es): {', '.join(found) or 'none'}"
        if len(found) >= size - 1 and found:
            return found
        typer.echo(f"esnode: --cluster-dns {options.cluster_dns}: {why}; waiting for the "
                   f"{size} members of the cluster (asking again in {DNS_RETRY_S:.0f}s)",
                   err=True)
        time.sleep(DNS_RETRY_S)


def guide_run(options: guide.GuideOptions) -> int:
    """``esnode run`` with Event Store's options and no topology file: this one node."""
    resolve = (lambda: resolve_members(options)) if options.cluster_dns else None
    topology = guide.guide_topology(options, Path.cwd(), resolve)
    me = topology.nodes[0]
    return run_node(topology, me.name, announce=True)


def fail(message: str) -> typer.Exit:
    typer.echo(f"esnode run: {message}", err=True)
    return typer.Exit(2)


RUN_HELP = """Run the nodes of a topology, or one node from Event Store's command-line options.

With `--config` (default `./topology.toml`) and no `--node`, starts one process per node of
the topology and supervises them: a node that dies is restarted (`--no-restart` to turn that
off), Ctrl-C (or SIGTERM) stops them all gracefully; `esnode stop --node NAME` and
`esnode restart --node NAME` act on one node. With `--node NAME`, runs that node in this
process (one per machine).

With Event Store's options (`--mem-db`, `--int-ip`, `--gossip-seed`, ...) and no `--config`,
runs one node described by them (no TOML needed); with `--config` they override the file's
values for the node started. Each option can also be given as an `ESNODE_*` environment
variable (`--int-tcp-port` is `ESNODE_INT_TCP_PORT`). The mapping: docs/topology.md.

**Examples**

```
esnode run --config topology.toml
esnode run --config topology.toml --node node2
esnode run --mem-db                      # one node in memory, clients on 2113
esnode run --mem-db --int-tcp-port=1111 --ext-tcp-port=1112 \
    --int-http-port=1113 --cluster-size=3 --discover-via-dns=false \
    --gossip-seed=127.0.0.1:2113,127.0.0.1:3113
esnode run --db ./db1 --cluster-size=3 \
    --cluster-dns cluster.example.com --cluster-gossip-port=2113
```
"""


def register(app: typer.Typer) -> None:
    def run(ctx: typer.Context, config: Path | None = None, node: str | None = None,
            restart: bool = True, **values: Any) -> None:
        from esnode.transport.security import KeyFileError, node_security

        problem = guide.unknown_arguments(ctx.args) or guide.unknown_environment()
        if problem:
            raise fail(problem)
        try:
            options = guide.parse_options(values)
            if options.given and config is None:
                if node is not None:
                    raise guide.GuideError("--node names a node of a topology file; give "
                                           "--config FILE too")
                raise typer.Exit(guide_run(options))
            config = config or DEFAULT_CONFIG
            if not config.exists():
                raise TopologyError(
                    f"{config}: no such file; give --config FILE, or run one node from "
                    "options (esnode run --mem-db, see esnode run --help)")
            raw = read_topology_file(config)
            if options.given:
                raw = guide.override(raw, node, options, Path.cwd())
            topology = load_topology(config, raw)
            for name in [node] if node is not None else [n.name for n in topology.nodes]:
                node_security(topology, topology.node(name))
        except guide.GuideError as exc:
            raise fail(str(exc)) from None
        except TopologyError as exc:
            raise fail(f"invalid topology: {exc}") from None
        except KeyFileError as exc:
            raise fail(f"security keys: {exc}") from None
        if node is not None or len(topology.nodes) == 1:
            code = run_node(topology, node or topology.nodes[0].name)
        else:
            code = supervise(config, topology, restart)
        raise typer.Exit(code)

    panel = "Event Store's options (docs/topology.md)"
    parameters = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          annotation=typer.Context),
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[Path | None, typer.Option(
                              "--config", "-c", show_default=False,
                              help="Topology file describing the cluster. Default: "
                                   "./topology.toml, unless Event Store's options describe "
                                   "the node.")]),
        inspect.Parameter("node", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[str | None, typer.Option(
                              "--node", "-n",
                              help="Run only this node of the topology (one per machine). "
                                   "Default: all, supervised.")]),
        inspect.Parameter("restart", inspect.Parameter.KEYWORD_ONLY, default=True,
                          annotation=Annotated[bool, typer.Option(
                              "--restart/--no-restart", envvar="ESNODE_RESTART",
                              help="Supervised cluster: restart a node that dies (with "
                                   "backoff).")]),
    ]
    for option in guide.OPTIONS:
        kind = bool if option.kind == "flag" else str | None
        parameters.append(inspect.Parameter(
            option.field, inspect.Parameter.KEYWORD_ONLY,
            default=False if option.kind == "flag" else None,
            annotation=Annotated[kind, typer.Option(
                option.flag, envvar=option.envvar, show_default=False, help=option.help,
                metavar="" if option.kind == "flag" else option.kind.upper(),
                rich_help_panel=panel)]))
    run.__signature__ = inspect.Signature(parameters)
    register_control(app)
    run.__doc__ = RUN_HELP
    app.command(context_settings={"ignore_unknown_options": True,
                                  "allow_extra_args": True})(run)


STOP_WAIT_S = 30.0
SupervisedConfig = Annotated[Path, typer.Option("--config", "-c",
                                                help="Topology file the supervisor runs.")]
NodeName = Annotated[str, typer.Option("--node", "-n", help="The node to act on.")]


def register_control(app: typer.Typer) -> None:
    """``esnode stop --node`` and ``esnode restart --node``: ask the supervisor of a
    ``--config`` cluster, and wait until it has done it."""
    def control(action: str, config: Path, node: str) -> None:
        try:
            load_topology(config).node(node)
        except TopologyError as exc:
            raise fail(str(exc)) from None
        state = RunState.for_config(config)
        before = state.load()
        if before is None:
            typer.echo(f"esnode: no `esnode run --config {config}` is running here; start "
                       "the cluster with it first", err=True)
            raise typer.Exit(1)
        old = before["nodes"].get(node)
        state.request(node, action)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            now = state.load()
            pid = (now or {}).get("nodes", {}).get(node)
            if action == "stop" and pid is None:
                typer.echo(f"esnode: stopped {node}" + (f" (pid {old})" if old else ""),
                           err=True)
                return
            if action == "restart" and pid not in (None, old):
                typer.echo(f"esnode: restarted {node} (pid {pid})", err=True)
                return
            time.sleep(0.1)
        typer.echo(f"esnode: the supervisor did not {action} {node} within "
                   f"{STOP_WAIT_S:.0f}s; see its output", err=True)
        raise typer.Exit(1)

    @app.command()
    def stop(node: NodeName, config: SupervisedConfig = DEFAULT_CONFIG) -> None:
        """Stop one node of a cluster that `esnode run --config` supervises (gracefully; it
        stays stopped until `esnode restart --node NAME`).

        **Example:** `esnode stop --node node2`
        """
        control("stop", config, node)

    @app.command()
    def restart(node: NodeName, config: SupervisedConfig = DEFAULT_CONFIG) -> None:
        """Restart (or start again after `esnode stop`) one node of a cluster that
        `esnode run --config` supervises, and print its new PID.

        **Example:** `esnode restart --node node2`
        """
        control("restart", config, node)
