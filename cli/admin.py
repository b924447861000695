"""``esnode admin``: operate a running cluster over its external network (docs/operations.md).

Each operation acts on one node. ``--connect HOST:PORT`` names it; with a cluster address (or
the default from ./topology.toml) scavenge acts on every member, resign on the leader, and
shutdown/priority ask for one node.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from esnode.cli.main import Connect, Json, Timeout, command_input, fail, out, print_json, \
    print_record, session
from esnode.client._calls import Call

admin_app = typer.Typer(help="Operate a running cluster: resign the leader, set a node's "
                             "priority, shut a node down, scavenge.", no_args_is_help=True,
                        rich_markup_mode="markdown")


def single(target: str | None) -> bool:
    return target is not None and "," not in target and not target.startswith("esnode")


def admin_call(endpoint: str | None, action: str, value: int | None, timeout: float) -> dict:
    with session(endpoint, timeout) as client:
        args = {"action": action} if value is None else {"action": action, "value": value}
        return client._op(Call("admin", args, lambda body: body, False, f"admin {action}"),
                          timeout)


def members(target: str | None, timeout: float) -> list[tuple[str, str]]:
    """``(name, tcp://external)`` of every member the target's node knows."""
    if single(target):
        return [("", target)]
    with session(target, timeout) as client:
        info = client.cluster_info()
    return [(m.name, f"tcp://{m.external[0]}:{m.external[1]}") for m in info.members
            if m.external and m.alive]


def one_node(target: str | None, action: str) -> str:
    if not single(target):
        raise fail(f"admin {action} acts on one node: give --connect HOST:PORT", 2)
    return target


@admin_app.command()
def resign(connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0) -> None:
    """Ask the leader to step down: another node takes over (within about two election
    timeouts) without losing a committed write.

    **Example:** `esnode admin resign`
    """
    target = connect_to
    if not single(target):
        with session(target, timeout) as client:
            info = client.cluster_info()
        leader = next((m for m in info.members if m.name == info.leader and m.external), None)
        if leader is None:
            raise fail("no leader to resign: the cluster is electing one")
        target = f"tcp://{leader.external[0]}:{leader.external[1]}"
    print_record(admin_call(target, "resign", None, timeout), as_json, "resign")


@admin_app.command()
def priority(
    value: Annotated[int, typer.Argument(metavar="N", help="The node's new election priority.")],
    connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0,
) -> None:
    """Set one node's election priority (higher wins among equally up-to-date nodes); it
    lasts until the node restarts (put it in the topology to keep it).

    **Example:** `esnode admin priority 5 --connect 127.0.0.1:2123`
    """
    target = one_node(connect_to, "priority")
    print_record(admin_call(target, "set_priority", value, timeout), as_json, "priority")


@admin_app.command()
def shutdown(connect_to: Connect = None, as_json: Json = False,
             timeout: Timeout = 5.0) -> None:
    """Shut one node down gracefully: in-flight writes are answered, then it exits with code
    0 (a supervising `esnode run` keeps it stopped until `esnode restart --node`).

    **Example:** `esnode admin shutdown --connect 127.0.0.1:2133`
    """
    target = one_node(connect_to, "shutdown")
    print_record(admin_call(target, "shutdown", None, timeout), as_json, "shutdown")


@admin_app.command()
def scavenge(
    stop: Annotated[bool, typer.Option("--stop", help="Stop a running scavenge.")] = False,
    status: Annotated[bool, typer.Option("--status", help="Only show progress.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until every node is done, "
                                                      "showing progress.")] = False,
    connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0,
) -> None:
    """Reclaim the space of deleted, tombstoned, `$tb`-truncated and `$maxCount`/`$maxAge`-
    expired events, online, on every node (or the one `--connect` names). It resumes by itself
    after a crash; a second start while one runs shows its progress.

    **Examples**

    ```
    esnode admin scavenge --wait
    esnode admin scavenge --status --json
    esnode admin scavenge --stop --connect 127.0.0.1:2123
    ```
    """
    with command_input():
        if stop and status:
            raise fail("--stop and --status contradict each other", 2)
    action = "scavenge_stop" if stop else "scavenge_status" if status else "scavenge"
    nodes = members(connect_to, timeout)
    while True:
        rows = [admin_call(endpoint, action, None, timeout) for _, endpoint in nodes]
        action = "scavenge_status"
        running = [r for r in rows if (r.get("scavenge") or {}).get("running")]
        if not wait or not running:
            break
        for r in rows:
            s = r.get("scavenge") or {}
            out.print(f"{r['node']}: {s.get('percent', 0):5.1f}% {s.get('scavenged', 0)} "
                      f"records, {s.get('bytes_reclaimed', 0)} bytes", highlight=False)
        time.sleep(1.0)
    for r in rows:
        s = r.get("scavenge") or {}
        doc = {"node": r["node"], "state": s.get("state", "never run"),
               "percent": s.get("percent", 0.0), "scanned": s.get("scanned", 0),
               "scavenged": s.get("scavenged", 0), "bytes_reclaimed": s.get(
                   "bytes_reclaimed", 0), "longest_write_ms": s.get("longest_write_ms", 0.0)}
        if as_json:
            print_json(doc)
        else:
            print_record(doc, False, f"scavenge on {r['node']}")


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")
