"""``esnode verify``: run the verification workload against a running cluster (or check a saved
history) and print the checker's verdict (docs/verify.md). Exit code 0: no violation; 1: at
least one violation (or the run could not be made)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

MAX_SHOWN = 20
"""Violations printed with their evidence (all of them go to --json and --save)."""


def _progress_line(p: dict) -> str:
    return (f"[{p['elapsed']:5.1f}s] {p['phase']}: {p['ops']} ops ({p['ops_per_s']:,.0f}/s); "
            f"ok {p['ok']}, failed {p['fail']}, unknown {p['unknown']}, in flight "
            f"{p['pending']}; appends ok {p['appends_ok']} / failed {p['appends_fail']} / "
            f"unknown {p['appends_unknown']}")


def print_verdict(result, out: Console, source: str, group: bool = False) -> None:
    from esnode.verify.checker import DESCRIPTIONS, INVARIANTS, describe

    ops, appends = result.operations, result.appends
    out.print(f"[bold]esnode verify[/] — {source}", highlight=False)
    out.print(f"operations: {sum(ops.values())} — ok {ops['ok']}, failed {ops['fail']}, "
              f"unknown {ops['unknown']}, never ended {ops['pending']}", highlight=False)
    out.print(f"appends: ok {appends['ok']}, failed {appends['fail']}, unknown "
              f"{appends['unknown']} (landed {appends['unknown_landed']}, not landed "
              f"{appends['unknown_not_landed']})", highlight=False)
    out.print(f"events checked: {result.events_checked} records ({result.distinct_events} "
              f"distinct events in the final log) on {len(result.nodes)} node(s): "
              f"{', '.join(result.nodes) or '-'}", highlight=False)
    for node, why in result.unreachable.items():
        out.print(f"[yellow]unreachable after the run:[/] {node}: {why}", highlight=False)
    counts = result.by_invariant()
    for inv in INVARIANTS:
        mark = f"[red]{counts[inv]} violation(s)[/]" if inv in counts else "[green]ok[/]"
        out.print(f"  {inv:<4} {DESCRIPTIONS[inv]}: {mark}", highlight=False)
    if group:  # the run had a persistent subscription group (verify/groups.py)
        from esnode.verify.groups import DESCRIPTION, G1

        bad = sum(1 for v in result.violations if v.invariant == G1)
        mark = f"[red]{bad} violation(s)[/]" if bad else "[green]ok[/]"
        out.print(f"  G1   {DESCRIPTION}: {mark}", highlight=False)
    for v in result.violations[:MAX_SHOWN]:
        out.print(describe(v), highlight=False, markup=False)
    if len(result.violations) > MAX_SHOWN:
        out.print(f"... and {len(result.violations) - MAX_SHOWN} more (see --json or --save)")
    if result.ok:
        out.print("[bold green]VERDICT: OK[/] — no violation", highlight=False)
    else:
        out.print(f"[bold red]VERDICT: {len(result.violations)} VIOLATION(S)[/]",
                  highlight=False)


def group_facts(group, history) -> None:
    """Finish the run's persistent subscription group (if any) and keep its facts with the
    history, where rule G1 finds them (also when the saved history is checked again)."""
    if group is None:
        return
    from esnode.verify.groups import save_facts

    save_facts(history.meta, group, group.finish())


def register(app: typer.Typer) -> None:
    @app.command()
    def verify(
        connect_to: str = typer.Option(
            None, "--connect", envvar="ESNODE_CONNECT", show_default=False,
            help="The cluster to verify, e.g. `esnode://h1:2113,h2:2113,h3:2113` (see "
                 "docs/client.md). Its data is not touched: the run writes streams named "
                 "`verify-<run id>-...`."),
        duration: float = typer.Option(10.0, "--duration", min=0.1,
                                       help="Seconds of workload."),
        clients: int = typer.Option(4, "--clients", min=1, help="Concurrent clients."),
        converge_timeout: float = typer.Option(
            20.0, "--converge-timeout", min=0.0,
            help="Seconds the nodes may take to serve the same $all after the run."),
        save: Path = typer.Option(None, "--save",
                                  help="Write the history and final state (JSON lines)."),
        check_file: Path = typer.Option(None, "--check", exists=True, dir_okay=False,
                                        help="Check a saved history instead of running."),
        as_json: bool = typer.Option(False, "--json",
                                     help="Print the verdict as one JSON document."),
        group_consumers: int = typer.Option(
            2, "--group-consumers", min=0,
            help="Consumers of a persistent subscription group of the run, with its own "
                 "writer (rule G1); 0: no group."),
    ) -> None:
        """Verify a running cluster: concurrent clients append (with conflicting expected
        versions), delete streams, change their metadata, read and subscribe while every
        outcome is recorded; then every node's final state is read and invariants I1–I11 are
        checked (no acknowledged write lost, one event per stream version, no failed write
        visible, expected-version exclusivity, no duplicates, real-time order, gap-free
        subscriptions, one leader per epoch, $all agrees with streams, convergence, reads
        show committed deletes and metadata only). Exit code 0: no violation.

        Examples:
          esnode verify --connect esnode://127.0.0.1:2113,127.0.0.1:2123 --duration 30
          esnode verify --connect ... --save run.jsonl      # keep the history
          esnode verify --check run.jsonl                   # check it again
        """
        from esnode.verify.checker import check
        from esnode.verify.history import load
        from esnode.verify.history import save as save_history

        out = Console(soft_wrap=True)
        err = Console(stderr=True, soft_wrap=True)
        if check_file is not None:
            try:
                history, final = load(check_file)
            except (OSError, ValueError) as exc:
                err.print(f"esnode: cannot read {check_file}: {exc}", highlight=False)
                raise typer.Exit(2) from None
            source = f"saved history {check_file} ({len(history)} operations)"
        else:
            from esnode.cli.main import UsageError, default_connect
            from esnode.client import (
                EsError,
                InvalidConnectionString,
                parse_connection_string,
            )
            from esnode.verify.workload import Workload

            try:
                target = connect_to or default_connect()
                parse_connection_string(target)
                workload = Workload(target, duration, clients, converge_timeout=converge_timeout)
            except (InvalidConnectionString, UsageError) as exc:
                err.print(f"esnode: {exc}", highlight=False)
                raise typer.Exit(2) from None
            err.print(f"esnode verify: run {workload.run_id} against {target}: {clients} "
                      f"clients for {duration:g}s", highlight=False)
            group = None
            if group_consumers:
                from esnode.verify.groups import GroupRun

                group = GroupRun(target, workload.run_id, group_consumers, duration=duration)
            try:
                if group is not None:
                    group.start()
                history, final = workload.run(
                    on_progress=lambda p: err.print(_progress_line(p), highlight=False))
                group_facts(group, history)
            except EsError as exc:
                err.print(f"esnode: {exc.code}: {exc}", highlight=False)
                raise typer.Exit(1) from None
            except KeyboardInterrupt:
                workload.stop()
                raise
            source = f"run {workload.run_id} against {target} ({duration:g}s, {clients} clients)"
            if save is not None:
                save_history(history, final, save)
                err.print(f"esnode verify: history saved to {save}", highlight=False)
        from esnode.verify.groups import check_saved

        result = check(history, final)
        group_violations = check_saved(history.meta)
        result.violations += group_violations or []
        if as_json:
            typer.echo(json.dumps({"source": source, **result.to_json()}, default=str))
        else:
            print_verdict(result, out, source, group=group_violations is not None)
        raise typer.Exit(0 if result.ok else 1)
