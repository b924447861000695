"""``esnode bench``: the standard workload against a node it starts (or ``--connect``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from esnode.bench.cpu import process_tree
from esnode.transport.ports import free_port

bench_app = typer.Typer(help="Benchmarks on the standard workload (docs/performance.md).",
                        invoke_without_command=True, no_args_is_help=False)


def _wait_serving(target: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    from esnode.client import connect

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the benchmark node exited with code {proc.returncode}")
        try:
            with connect(target, timeout=1) as client:
                client.ping(timeout=1)
            return
        except Exception:  # not up yet
            time.sleep(0.1)
    raise RuntimeError("the benchmark node did not start in time")


def _secure_section(tmp: str, size: int) -> tuple[str, str]:
    """Fresh keys for every member and the clients' side: the topology's ``[security]``
    section and the connection-string option clients need."""
    from esnode.transport.security import generate_keypair, key_hex, load_public_key

    for name in [f"bench{i + 1}" for i in range(size)] + ["external"]:
        generate_keypair(Path(tmp) / "keys" / name)
    server_key = key_hex(load_public_key(Path(tmp) / "keys" / "external.key"))
    return ('[security]\nkey_dir = "keys"\nexternal_key = "keys/external"\n',
            f"?serverKey={server_key}")


@contextlib.contextmanager
def fresh_node(size: int = 1, secure: bool = False) -> Iterator[str]:
    """Start a fresh cluster of ``size`` nodes (LMDB in a temp dir) as ``esnode run`` does,
    with CURVE on both networks when ``secure``; yield its connection string; stop it."""
    with fresh_cluster(size, secure) as (target, _, _pids):
        yield target


@contextlib.contextmanager
def fresh_cluster(size: int = 1, secure: bool = False
                  ) -> Iterator[tuple[str, str, Callable[[], list[int]]]]:
    """``fresh_node``, yielding also the first node's HTTP URL and a function listing the
    cluster's processes (the supervisor and the nodes it runs), for their CPU figures."""
    with tempfile.TemporaryDirectory(prefix="esnode-bench-") as tmp:
        ports = [(free_port(), free_port(), free_port()) for _ in range(size)]
        nodes = "".join(f"""
[[nodes]]
name = "bench{i + 1}"
data_dir = "data{i + 1}"
internal_host = "127.0.0.1"
internal_port = {internal}
external_host = "127.0.0.1"
external_port = {external}
external_http_port = {http}
""" for i, (external, internal, http) in enumerate(ports))
        security, option = _secure_section(tmp, size) if secure else ("", "")
        config = Path(tmp) / "topology.toml"
        config.write_text(f'[cluster]\nname = "bench"\nsize = {size}\n{security}{nodes}')
        proc = subprocess.Popen([sys.executable, "-m", "esnode.cli", "run", "--config",
                                 str(config)], stderr=subprocess.DEVNULL)
        target = "esnode://" + ",".join(f"127.0.0.1:{e}" for e, _, _ in ports) + option
        try:
            _wait_serving(target, proc)
            yield target, f"http://127.0.0.1:{ports[0][2]}", lambda: process_tree(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _console() -> Console:
    """Wide enough for the tables when the output is a file or a pipe (rich assumes 80)."""
    return Console() if sys.stdout.isatty() else Console(width=132)


def _print(rows: list[dict], title: str, as_json: bool) -> None:
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    table = Table(title=title)
    for col in ("phase", "appends or reads/s", "events/s", "p50 ms", "p99 ms", "p99.9 ms", "spread",
                "cores client/machine", "server µs CPU/event"):
        table.add_column(col, justify="right" if col != "phase" else "left")
    for r in rows:
        client, machine = r.get("client_cores"), r.get("machine_cores")
        server = r.get("server_us_per_event")
        table.add_row(r["phase"], f"{r['ops_per_s']:,.0f}", f"{r['events_per_s']:,.0f}",
                      f"{r['p50_ms']:.3f}" if r["p50_ms"] is not None else "-",
                      f"{r['p99_ms']:.3f}" if r["p99_ms"] is not None else "-",
                      f"{r['p999_ms']:.3f}" if r.get("p999_ms") is not None else "-",
                      f"{r['spread']:.0%}",
                      "-" if client is None else
                      f"{client:.2f}/{'-' if machine is None else f'{machine:.2f}'}",
                      "-" if server is None else f"{server:.1f}")
    _console().print(table)


@bench_app.callback()
def bench(
    ctx: typer.Context,
    connect: str = typer.Option(None, "--connect", envvar="ESNODE_CONNECT",
                                help="Benchmark this running node/cluster instead of starting "
                                     "a fresh one (its data is NOT reset between runs)."),
    seconds: float = typer.Option(5.0, help="Timed seconds per phase."),
    runs: int = typer.Option(3, help="Runs per figure; the table shows medians."),
    phases: str = typer.Option("abcdgh", help="Which phases: a single, b concurrent, "
                                              "c 100-event batches, d reads, g subscriptions "
                                              "and persistent subscription groups, h HTTP "
                                              "(single POSTs at C=64, 100-event POSTs, feed "
                                              "pages)."),
    http: str = typer.Option(None, "--http", help="With --connect: a node's HTTP URL for "
                                                  "phase h (e.g. http://127.0.0.1:2115)."),
    nodes: int = typer.Option(1, help="Size of the fresh cluster to start (1 or 3, ...)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document per phase."),
    secure: bool = typer.Option(False, "--secure",
                                help="Each run twice, plaintext then CURVE on both networks "
                                     "(fresh keys), and the secure/plain ratio per phase."),
    ceiling: bool = typer.Option(False, "--ceiling",
                                 help="Also run the bare-stack ceiling (bench/ceiling/), "
                                      "interleaved with esnode's runs, and print esnode's "
                                      "figures as ratios of it."),
) -> None:
    """Run the standard workload and print appends/s, events/s and latency p50/p99 per phase.

    Examples:
      esnode bench                      # a fresh single node, 3 runs, medians
      esnode bench --nodes 3            # a fresh 3-node cluster
      esnode bench --seconds 2 --runs 1 --phases ab
      esnode bench --secure --nodes 3 --phases bc   # the cost of CURVE
      esnode bench --ceiling --phases abcd          # as ratios of the bare stack
      esnode bench storage              # the storage engine alone, no network
    """
    if ctx.invoked_subcommand is not None:
        return
    from esnode.bench.workload import Workload, median_summaries

    if secure and connect:
        raise typer.BadParameter("--secure starts its own clusters; leave out --connect")
    modes = (False, True) if secure else (False,)
    all_runs: dict[bool, list] = {mode: [] for mode in modes}
    ceiling_runs: list[dict] = []
    for i in range(runs):
        if ceiling:
            from esnode.bench.ceiling_run import run_ceiling

            typer.echo(f"run {i + 1}/{runs} of the stack ceiling", err=True)
            ceiling_runs.append(run_ceiling(seconds))
        for mode in modes:  # interleaved, so that both see the same machine load
            with contextlib.ExitStack() as stack:
                target, http_url, pids = (connect, http, None) if connect else \
                    stack.enter_context(fresh_cluster(nodes, secure=mode))
                typer.echo(f"run {i + 1}/{runs} against {target}", err=True)
                all_runs[mode].append(Workload(target, seconds, http=http_url,
                                               server_pids=pids).run(phases))
    where = "given cluster" if connect else f"{nodes} node(s)"
    medians = {mode: median_summaries(r) for mode, r in all_runs.items()}
    for mode in modes:
        label = " with CURVE on both networks" if mode else (" plaintext" if secure else "")
        _print(medians[mode], f"esnode, {where}{label}: median of {runs}", as_json)
        ratio = http_ratio(medians[mode])
        if ratio is not None and not as_json:
            typer.echo(f"HTTP single-event appends at C=64 / ZeroMQ phase b C=64: {ratio:.2f}")
    if ceiling:
        _print_ceiling(medians[False], ceiling_runs, runs, as_json)
    if secure:
        ratios = [{"phase": p["phase"], "secure_over_plain": s["events_per_s"]
                   / max(p["events_per_s"], 1e-9)} for p, s in zip(medians[False], medians[True])]
        if as_json:
            for row in ratios:
                typer.echo(json.dumps(row))
        else:
            for row in ratios:
                typer.echo(f"{row['phase']}: CURVE / plaintext = {row['secure_over_plain']:.2f}")


def _print_ceiling(esnode: list[dict], ceiling_runs: list[dict], runs: int,
                   as_json: bool) -> None:
    from esnode.bench.ceiling_run import ratios

    rows = ratios(esnode, ceiling_runs)
    if as_json:
        for row in rows:
            typer.echo(json.dumps({"ceiling": row}))
        return
    table = Table(title=f"esnode / the bare-stack ceiling, same run: medians of {runs}")
    for col in ("phase", "esnode events/s", "ceiling events/s", "ratio", "esnode p50 ms",
                "ceiling p50 ms"):
        table.add_column(col, justify="right" if col != "phase" else "left")
    for r in rows:
        table.add_row(r["phase"], f"{r['esnode_events_per_s']:,.0f}",
                      f"{r['ceiling_events_per_s']:,.0f}", f"{r['ratio']:.2f}",
                      *(f"{r[k]:.3f}" if r[k] is not None else "-"
                        for k in ("esnode_p50_ms", "ceiling_p50_ms")))
    _console().print(table)


def http_ratio(summaries: list[dict]) -> float | None:
    """The issue's bar: HTTP appends at 64 connections over the ZeroMQ figure, same run."""
    by = {s["phase"]: s["ops_per_s"] for s in summaries}
    zmq, web = by.get("b C=64"), by.get("h single C=64")
    return web / zmq if zmq and web else None


@bench_app.command()
def storage(
    seconds: float = typer.Option(3.0, help="Seconds per measurement."),
    runs: int = typer.Option(3, help="Runs per figure (medians are shown)."),
    phases: str = typer.Option("group1,batch100,read_stream,read_all",
                               help="Comma-separated phases to run (e.g. one, under a profiler)."),
    mem: bool = typer.Option(False, "--mem", help="The in-memory store instead of LMDB."),
) -> None:
    """Benchmark the storage engine alone (LMDB, fsync on commit) on the standard workload:
    throughput per phase, and the latency of one group commit (p50/p99/p99.9/max)."""
    from esnode.bench.storage_bench import PHASES, run_storage_bench

    chosen = tuple(p for p in phases.split(",") if p)
    if not chosen or set(chosen) - set(PHASES):
        raise typer.BadParameter(f"phases are a comma-separated subset of {','.join(PHASES)}")
    run_storage_bench(seconds=seconds, runs=runs, mem=mem, phases=chosen)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    bench_app()
