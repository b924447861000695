"""Seeing a running node or cluster, and keeping its data: ``esnode stats``, the live
``esnode status --watch`` table, ``esnode backup`` and ``esnode restore``
(docs/operations.md)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from esnode.cli.main import Connect, Json, Timeout, err, fail, local_pids, out, print_json, \
    print_record, session
from esnode.client._calls import Call

WATCH_INTERVAL_S = 1.0


def stats(connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0) -> None:
    """One node's figures: state, positions, writes, queues, storage, scavenge, and what it
    sees of the other members (the same figures as its Prometheus metrics).

    **Example:** `esnode stats --connect 127.0.0.1:2113 --json`
    """
    with session(connect_to, timeout) as client:
        doc = client._op(Call("admin", {"action": "stats"}, lambda body: body, False,
                              "stats"), timeout)
    if as_json:
        print_json(doc)
        return
    members = doc.pop("members", [])
    flat = {k: (", ".join(f"{a}={b}" for a, b in v.items()) if isinstance(v, dict) else v)
            for k, v in doc.items() if v is not None}
    print_record(flat, False, f"stats of {doc['node']}")
    table = Table(title="members as this node sees them", title_justify="left")
    for column in ("member", "state", "alive", "writer", "lag (records)"):
        table.add_column(column, no_wrap=column in ("member", "state"))
    for m in members:
        lag = m.get("replication_lag_records")
        table.add_row(m["name"], m["state"], "yes" if m["alive"] else "[red]NO[/]",
                      str(m["member_writer_position"]), "" if lag is None else str(lag))
    out.print(table)


def watch_table(info, pids: dict, rates: dict[str, float]) -> Table:
    leader = next((m for m in info.members if m.name == info.leader), None)
    table = Table(title=f"cluster {info.cluster} (answered by {info.node}; leader: "
                        f"{info.leader or 'none'}) {time.strftime('%H:%M:%S')}",
                  title_justify="left")
    for column in ("name", "state", "alive", "epoch", "writer", "commit", "lag",
                   "records/s", "clients on", "pid"):
        table.add_column(column, no_wrap=column in ("name", "state", "clients on"))
    for m in info.members:
        lag = "" if leader is None else str(max(0, leader.writer_position - m.writer_position))
        table.add_row(m.name, m.state, "yes" if m.alive else "[red]NO[/]", str(m.epoch),
                      str(m.writer_position), str(m.commit_position), lag,
                      f"{rates.get(m.name, 0.0):,.0f}",
                      f"{m.external[0]}:{m.external[1]}" if m.external else "",
                      str(pids.get(m.name, "")))
    return table


def watch(connect_to: str | None, timeout: float, interval: float = WATCH_INTERVAL_S,
          rounds: int | None = None) -> None:
    """Refresh the members table every ``interval``: states, positions, each member's lag
    behind the leader and its write rate (records per second), until Ctrl-C."""
    pids = local_pids() if connect_to is None else {}
    last: dict[str, tuple[float, int]] = {}
    # On a terminal the table is redrawn in place; into a pipe each refresh is printed.
    screen = Live(console=out, auto_refresh=False) if out.is_terminal else None
    with session(connect_to, timeout, any_node=True) as client, \
            screen or contextlib.nullcontext():
        n = 0
        while rounds is None or n < rounds:
            info = client.cluster_info()
            now = time.monotonic()
            rates = {}
            for m in info.members:
                before = last.get(m.name)
                if before is not None and now > before[0]:
                    rates[m.name] = (m.writer_position - before[1]) / (now - before[0])
                last[m.name] = (now, m.writer_position)
            if screen is not None:
                screen.update(watch_table(info, pids, rates), refresh=True)
            else:
                out.print(watch_table(info, pids, rates))
            n += 1
            if rounds is None or n < rounds:
                time.sleep(interval)


def backup(
    db: Annotated[Path, typer.Option("--db", help="The node's data folder (its data_dir).")],
    to: Annotated[Path, typer.Option("--to", help="A new (or empty) folder for the backup.")],
    as_json: Json = False,
) -> None:
    """Back up a node's data folder while the node runs: one consistent, compacted copy
    (LMDB's copy with compaction); the node keeps writing meanwhile.

    **Example:** `esnode backup --db data/node1 --to /backups/node1-2026-12-01`
    """
    from esnode.storage.backup import BackupError
    from esnode.storage.backup import backup as copy

    try:
        print_record(copy(db, to), as_json, "backup")
    except BackupError as exc:
        raise fail(str(exc), 2) from None


def restore(
    from_: Annotated[Path, typer.Option("--from", help="A folder made by esnode backup.")],
    db: Annotated[Path, typer.Option("--db", help="The stopped node's new, empty data "
                                                  "folder.")],
    as_json: Json = False,
) -> None:
    """Restore a backup into a stopped node's empty data folder; started, the node catches
    up from the cluster (docs/operations.md).

    **Example:** `esnode restore --from /backups/node1-2026-12-01 --db data/node1`
    """
    from esnode.storage.backup import BackupError
    from esnode.storage.backup import restore as put

    try:
        print_record(put(from_, db), as_json, "restore")
    except BackupError as exc:
        raise fail(str(exc), 2) from None
    err.print("esnode: start the node now; it catches up from the cluster", style="dim",
              highlight=False)


def register(app: typer.Typer) -> None:
    for command in (stats, backup, restore):
        app.command()(command)
