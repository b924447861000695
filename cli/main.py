"""The ``esnode`` command: client commands (append, read, subscribe, ...) on one typer app.

Every client command takes ``--connect`` (env ``ESNODE_CONNECT``; default: the external
endpoints of ``./topology.toml``, else ``tcp://127.0.0.1:2113``), prints rich tables by
default and one JSON document per line with ``--json``, and fails with one line on stderr and
a non-zero exit code (1: the operation failed, 2: bad input). ``esnode run`` and
``esnode bench`` live in their own modules and are registered at the bottom of this file.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import importlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from esnode.client import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    BadRequest,
    Client,
    EsError,
    EventFilter,
    InvalidConnectionString,
    RecordedEvent,
    connect,
    new_event,
)
from esnode.client.settings import ConnectionSettings, settings_from
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="esnode",
    help="esnode: a clustered, durable event store. Run a node with `esnode run`, then talk "
         "to it with the other commands (each has `--help` with examples).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
metadata_app = typer.Typer(help="Read or replace a stream's metadata (`$maxCount`, `$maxAge`, "
                                "`$tb` and your own keys).", no_args_is_help=True,
                           rich_markup_mode="markdown")
app.add_typer(metadata_app, name="metadata")

PIPE_WIDTH = 1000
"""Columns for output that is not a terminal: a pipe or a file gets whole table cells, not
rows cut at rich's default 80 columns."""


def console(stderr: bool = False) -> Console:
    """A rich console as wide as the terminal, or unlimited when piped."""
    terminal = Console(stderr=stderr, soft_wrap=True)
    if terminal.is_terminal:
        return terminal
    return Console(stderr=stderr, soft_wrap=True, width=PIPE_WIDTH)


out = console()
err = console(stderr=True)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:2113"
TOPOLOGY_FILE = Path("topology.toml")

# --- options shared by every client command ----------------------------------------------------
Connect = Annotated[str | None, typer.Option(
    "--connect", envvar="ESNODE_CONNECT", show_default=False,
    help="Where the node is: `tcp://host:port` or `host:port` (that node), "
         "`esnode://host:port,host:port?option=value` (a cluster, by gossip seeds) or "
         "`esnode+dns://name:port?dnsServer=ip:port` (a cluster, by DNS); see "
         "docs/client.md. Default: the external endpoints of ./topology.toml, else "
         "tcp://127.0.0.1:2113.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document per line.")]
Timeout = Annotated[float, typer.Option("--timeout", min=0.001,
                                        help="Seconds to wait for each answer.")]
Expected = Annotated[str, typer.Option(
    "--expected-version", "-e",
    help="Optimistic concurrency check: `any`, `no-stream`, `stream-exists` or the stream's "
         "last version N.")]
Limit = Annotated[int, typer.Option("--limit", "-n", min=1, help="Most events to show.")]
StreamPrefix = Annotated[list[str] | None, typer.Option(
    "--stream-prefix", show_default=False,
    help="Only events of streams starting with this (repeatable); filtered on the node.")]
TypePrefix = Annotated[list[str] | None, typer.Option(
    "--type-prefix", show_default=False,
    help="Only events whose type starts with this (repeatable); filtered on the node.")]


def event_filter(streams: list[str] | None, types: list[str] | None) -> EventFilter | None:
    """The node-side filter the prefix options ask for (None: everything, as before)."""
    if not streams and not types:
        return None
    return EventFilter(stream_prefixes=tuple(streams or ()), type_prefixes=tuple(types or ()))


class UsageError(Exception):
    """Bad input from the command line (exit code 2)."""


class NothingListens(Exception):
    """The default endpoints refuse connections: no node runs there (exit code 1)."""


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"esnode: {message}", markup=False, highlight=False)
    return typer.Exit(code)


PROBE_TIMEOUT_S = 1.0
"""How long a command waits for a TCP connection to a default endpoint before saying nothing
listens there (the client's own retries would take over 10 s to give up)."""


def default_connect() -> str:
    """The external endpoints of ./topology.toml when present, else the local default."""
    if not TOPOLOGY_FILE.exists():
        return DEFAULT_ENDPOINT
    from esnode.core.config import load_topology

    try:
        nodes = load_topology(TOPOLOGY_FILE).nodes
    except Exception as exc:  # noqa: BLE001 - any problem with the file is reported as is
        raise UsageError(f"cannot take the default --connect from {TOPOLOGY_FILE}: {exc}") \
            from None
    hosts = [node.external_advertise for node in nodes]
    if len(hosts) == 1:
        return f"tcp://{hosts[0][0]}:{hosts[0][1]}"
    return "esnode://" + ",".join(f"{h}:{p}" for h, p in hosts)


@contextlib.contextmanager
def command_input() -> Iterator[None]:
    """Parse the command line's values before connecting: bad input exits with code 2."""
    try:
        yield
    except UsageError as exc:
        raise fail(str(exc), 2) from None


def with_credentials(settings: ConnectionSettings) -> ConnectionSettings:
    """``ESNODE_USER``/``ESNODE_PASSWORD`` when the connection string names no user (the
    environment keeps the password out of the command line and ``ps``)."""
    user = os.environ.get("ESNODE_USER", "")
    if settings.user or not user:
        return settings
    return settings.with_options(user=user, password=os.environ.get("ESNODE_PASSWORD", ""))


def listening(endpoints: list[tuple[str, int]]) -> bool:
    """Whether any of ``endpoints`` accepts a TCP connection (ZeroMQ is TCP underneath)."""
    for host, port in endpoints:
        with contextlib.suppress(OSError), \
                socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    return False


def checked_default() -> str:
    """The default --connect, said out loud, and refused at once when nothing listens."""
    target = default_connect()
    where = "./topology.toml" if TOPOLOGY_FILE.exists() else "the default"
    if where == "the default":
        err.print(f"esnode: no --connect and no ./topology.toml: trying {DEFAULT_ENDPOINT}",
                  style="dim", highlight=False)
    endpoints = [(host, int(port)) for host, _, port in (
        item.rpartition(":") for item in target.split("://", 1)[1].split(","))]
    if not listening(endpoints):
        raise NothingListens(
            f"nothing listens on {', '.join(f'{h}:{p}' for h, p in endpoints)} ({where}); "
            "start a node (esnode run --mem-db) or give --connect")
    return target


@contextlib.contextmanager
def session(target: str | None, timeout: float, any_node: bool = False) -> Iterator[Client]:
    """A connected client; every failure inside becomes a one-line error and an exit code.
    ``any_node``: whichever live node answers first (``nodePreference=random``), for views
    every node can give (status), so they keep working while the cluster elects a leader."""
    try:
        settings = with_credentials(settings_from(target or checked_default()))
        if any_node:
            settings = settings.with_options(node_preference="random")
        with connect(settings, timeout=timeout) as client:
            yield client
    except (UsageError, InvalidConnectionString) as exc:
        raise fail(str(exc), 2) from None
    except EsError as exc:
        raise fail(f"{exc.code}: {exc}") from None
    except NothingListens as exc:
        raise fail(f"unavailable: {exc}") from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def parse_expected(text: str) -> int:
    named = {"any": ANY, "no-stream": NO_STREAM, "stream-exists": STREAM_EXISTS}
    key = text.strip().lower().replace("_", "-")
    if key in named:
        return named[key]
    if key.isdigit():
        return int(key)
    raise UsageError(f"--expected-version {text!r}: expected any, no-stream, stream-exists or "
                     "a version number >= 0")


def parse_json(option: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option} is not valid JSON ({exc.msg} at character {exc.pos}): "
                         f"{text!r}") from None


# --- rendering ---------------------------------------------------------------------------------
def payload(raw: bytes, is_json: bool) -> Any:
    """An event's data or metadata as JSON-friendly value: parsed JSON, text, or base64."""
    if not raw:
        return None
    if is_json:
        with contextlib.suppress(ValueError):
            return json.loads(raw)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}


def created_iso(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).isoformat(timespec="milliseconds")


def event_doc(e: RecordedEvent) -> dict:
    return {"stream": e.stream, "version": e.version, "type": e.event_type, "id": e.event_id,
            "position": e.position, "created": created_iso(e.created),
            "data": payload(e.data, e.is_json), "metadata": payload(e.metadata, e.is_json)}


def brief(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[:width - 1] + "…"


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_events(events: Iterator[RecordedEvent], as_json: bool, title: str) -> int:
    if as_json:
        count = 0
        for e in events:
            print_json(event_doc(e))
            count += 1
        return count
    table = Table(title=title, title_justify="left")
    for column in ("position", "stream", "version", "type", "created", "data"):
        table.add_column(column, justify="right" if column in ("position", "version") else "left")
    for e in events:
        doc = event_doc(e)
        table.add_row(str(e.position), e.stream, str(e.version), e.event_type,
                      doc["created"], brief(doc["data"]) if doc["data"] is not None else "")
    out.print(table)
    return table.row_count


def print_record(doc: dict, as_json: bool, title: str) -> None:
    if as_json:
        print_json(doc)
        return
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in doc.items():
        table.add_row(key, value if isinstance(value, str) else json.dumps(value))
    out.print(table)


# --- commands ----------------------------------------------------------------------------------
@app.command()
def append(
    stream: Annotated[str, typer.Argument(metavar="STREAM", help="Stream to append to.")],
    event_type: Annotated[str, typer.Option("--type", "-t", help="Event type, e.g. OrderPlaced.")],
    data: Annotated[str, typer.Option("--data", "-d", help="Event data as JSON.")] = "{}",
    metadata: Annotated[str | None, typer.Option("--metadata", "-m",
                                                 help="Event metadata as JSON.")] = None,
    expected_version: Expected = "any",
    event_id: Annotated[str | None, typer.Option(
        "--id", help="Event id (a UUID). Default: a fresh one. Appending the same id again "
                     "is idempotent.")] = None,
    connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0,
) -> None:
    """Append one JSON event to a stream.

    **Examples**

    ```
    esnode append order-1 --type OrderPlaced --data '{"total": 12}'
    esnode append order-1 --type OrderShipped --expected-version 0
    esnode append order-2 --type OrderPlaced --expected-version no-stream --json
    ```
    """
    with command_input():
        expected = parse_expected(expected_version)
        body, meta = parse_json("--data", data), parse_json("--metadata", metadata or '""')
        try:
            event = new_event(event_type, body, b"" if metadata is None else meta, id=event_id)
        except ValueError as exc:
            raise UsageError(f"--id {event_id!r} is not a UUID" if event_id else str(exc)) \
                from None
    with session(connect_to, timeout) as client:
        result = client.append(stream, [event], expected)
        print_record({"stream": stream, "event_id": event.event_id,
                      "version": result.last_version, "position": result.position,
                      "idempotent": result.idempotent}, as_json, "appended")


@app.command()
def read(
    stream: Annotated[str, typer.Argument(metavar="STREAM", help="Stream to read.")],
    from_version: Annotated[int | None, typer.Option(
        "--from", "-f", show_default=False,
        help="First version to show (inclusive). Default: 0, or the end with --backwards.")
    ] = None,
    backwards: Annotated[bool, typer.Option("--backwards", "-b",
                                            help="Newest first.")] = False,
    limit: Limit = 100,
    connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0,
) -> None:
    """Show the events of a stream.

    **Examples**

    ```
    esnode read order-1
    esnode read order-1 --from 10 --limit 5
    esnode read order-1 --backwards --limit 1      # the last event
    esnode read order-1 --json | jq .data
    ```
    """
    start = from_version if from_version is not None else (-1 if backwards else 0)
    with session(connect_to, timeout) as client:
        print_events(client.iter_stream(stream, start, backwards, limit=limit), as_json,
                     f"stream {stream}")


@app.command("read-all")
def read_all(
    from_position: Annotated[int | None, typer.Option(
        "--from", "-f", show_default=False,
        help="Log position to start at. Default: the start, or the end with --backwards.")
    ] = None,
    backwards: Annotated[bool, typer.Option("--backwards", "-b",
                                            help="Newest first.")] = False,
    limit: Limit = 100,
    stream_prefix: StreamPrefix = None, type_prefix: TypePrefix = None,
    connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0,
) -> None:
    """Show the global log (`$all`: every stream's events in commit order, system events
    included unless filtered by `--stream-prefix` / `--type-prefix`).

    **Examples**

    ```
    esnode read-all --limit 20
    esnode read-all --backwards --limit 10     # the ten most recent events
    esnode read-all --stream-prefix order-     # one category, filtered on the node
    ```
    """
    start = from_position if from_position is not None else (-1 if backwards else 0)
    with session(connect_to, timeout) as client:
        print_events(client.iter_all(start, backwards, limit=limit,
                                     filter=event_filter(stream_prefix, type_prefix)),
                     as_json, "$all")


@app.command()
def subscribe(
    stream: Annotated[str, typer.Argument(metavar="STREAM|$all",
                                          help="A stream, or `$all` for every event.")],
    from_: Annotated[str, typer.Option(
        "--from", "-f",
        help="`start` (all history first), `end` (new events only), or a version/position N "
             "(events after N).")] = "start",
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, show_default=False,
                                              help="Stop after this many events.")] = None,
    stream_prefix: StreamPrefix = None, type_prefix: TypePrefix = None,
    connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0,
) -> None:
    """Follow a stream or `$all` like `tail -f`: history first, then new events as they are
    written, until Ctrl-C. `--stream-prefix` / `--type-prefix` filter `$all` on the node.

    **Examples**

    ```
    esnode subscribe order-1
    esnode subscribe '$all' --from end          # only what is written from now on
    esnode subscribe '$all' --json | jq -c '{stream, type}'
    esnode subscribe '$all' --stream-prefix order- --type-prefix Order
    ```
    """
    start: int | str = from_.strip().lower()
    if start not in ("start", "end"):
        if not (start.isascii() and start.isdigit()):
            raise fail(f"--from {from_!r}: expected start, end or a number >= 0", 2)
        start = int(start)

    def caught_up(position: int | None) -> None:
        err.print(f"-- caught up (log position {position}); waiting for new events, Ctrl-C "
                  "to stop", style="dim", highlight=False)

    with session(connect_to, timeout) as client:
        count = 0
        try:
            sub = client.subscribe(stream, start, on_caught_up=None if as_json else caught_up,
                                   filter=event_filter(stream_prefix, type_prefix))
        except BadRequest as exc:
            raise fail(str(exc), 2) from None
        with sub:
            for event in sub:
                if as_json:
                    print_json(event_doc(event))
                else:
                    doc = event_doc(event)
                    out.print(f"[bold]{event.stream}[/]@{event.version} [cyan]{event.event_type}"
                              f"[/] pos {event.position}  "
                              f"{'' if doc['data'] is None else brief(doc['data'], 100)}",
                              highlight=False)
                count += 1
                if limit is not None and count >= limit:
                    break


@app.command()
def delete(
    stream: Annotated[str, typer.Argument(metavar="STREAM", help="Stream to delete.")],
    tombstone: Annotated[bool, typer.Option(
        "--tombstone", help="Delete for good: the stream can never be written again.")] = False,
    expected_version: Expected = "any",
    connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0,
) -> None:
    """Delete a stream. A soft delete hides its events (appending again revives it from the
    next version); `--tombstone` is permanent.

    **Examples**

    ```
    esnode delete order-1
    esnode delete order-1 --expected-version 3 --tombstone
    ```
    """
    with command_input():
        expected = parse_expected(expected_version)
    with session(connect_to, timeout) as client:
        result = client.delete(stream, expected, tombstone)
        print_record({"stream": stream, "deleted": "tombstone" if tombstone else "soft",
                      "position": result.position}, as_json, "deleted")


@metadata_app.command("get")
def metadata_get(
    stream: Annotated[str, typer.Argument(metavar="STREAM")],
    connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0,
) -> None:
    """Show a stream's metadata.

    **Example:** `esnode metadata get order-1`
    """
    with session(connect_to, timeout) as client:
        meta = client.get_metadata(stream)
        print_record({"stream": meta.stream, "version": meta.version, "metadata": meta.raw},
                     as_json, f"metadata of {stream}")


@metadata_app.command("set")
def metadata_set(
    stream: Annotated[str, typer.Argument(metavar="STREAM")],
    metadata: Annotated[str, typer.Argument(metavar="JSON", help="The new metadata (a map).")],
    expected_version: Expected = "any",
    connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0,
) -> None:
    """Replace a stream's metadata.

    **Examples**

    ```
    esnode metadata set order-1 '{"$maxCount": 100}'
    esnode metadata set order-1 '{"$maxAge": 86400, "owner": "billing"}'
    ```
    """
    with command_input():
        expected = parse_expected(expected_version)
        value = parse_json("the metadata", metadata)
        if not isinstance(value, dict):
            raise UsageError("the metadata must be a JSON object, e.g. '{\"$maxCount\": 10}'")
    with session(connect_to, timeout) as client:
        result = client.set_metadata(stream, value, expected)
        print_record({"stream": stream, "version": result.last_version, "metadata": value},
                     as_json, f"metadata of {stream}")


@app.command()
def status(connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0,
           watch: Annotated[bool, typer.Option(
               "--watch", "-w", help="Refresh every second (lag behind the leader, records/s); "
                                     "Ctrl-C to stop.")] = False) -> None:
    """Show the cluster as a live node sees it (whichever answers first, so it works during
    an election): each member's state, epoch, positions and
    whether it is alive (and, for a cluster `esnode run` supervises from ./topology.toml,
    each node's PID).

    **Examples**

    ```
    esnode status --connect tcp://127.0.0.1:2113
    esnode status --watch
    ```
    """
    if watch:
        from esnode.cli.ops import watch as watch_cluster

        try:
            watch_cluster(connect_to, timeout)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        return
    with session(connect_to, timeout, any_node=True) as client:
        info = client.cluster_info()
    pids = local_pids() if connect_to is None else {}
    if as_json:
        for m in info.members:
            print_json({"cluster": info.cluster, "name": m.name, "state": m.state,
                        "pid": pids.get(m.name),
                        "alive": m.alive, "leader": m.name == info.leader,
                        "external": f"{m.external[0]}:{m.external[1]}" if m.external else None,
                        "epoch": m.epoch, "writer_position": m.writer_position,
                        "commit_position": m.commit_position, "priority": m.priority,
                        "answered": m.name == info.node})
        return
    table = Table(title=f"cluster {info.cluster} (answered by {info.node}; leader: "
                        f"{info.leader or 'none'})", title_justify="left")
    # Names, states and endpoints are what an operator reads and copies: never cut short.
    columns = ["name", "state", "alive", "epoch", "writer", "commit", "clients on",
               "priority"] + (["pid"] if pids else [])
    for column in columns:
        keep = column in ("name", "state", "clients on")
        table.add_column(column, no_wrap=keep, overflow="fold" if keep else "ellipsis",
                         min_width={"state": 10, "clients on": 15}.get(column))
    for m in info.members:
        table.add_row(m.name, m.state, "yes" if m.alive else "[red]NO[/]", str(m.epoch),
                      str(m.writer_position), str(m.commit_position),
                      f"{m.external[0]}:{m.external[1]}" if m.external else "", str(m.priority),
                      *([str(pids.get(m.name, "-"))] if pids else []))
    out.print(table)


def local_pids() -> dict[str, int]:
    """PIDs of the nodes that `esnode run` supervises from ./topology.toml, if it does."""
    from esnode.cli.supervision import RunState

    if not TOPOLOGY_FILE.exists():
        return {}
    state = RunState.for_config(TOPOLOGY_FILE).load()
    return state["nodes"] if state else {}


@app.command()
def ping(connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0) -> None:
    """Check that a node answers, and how fast.

    **Example:** `esnode ping --connect 127.0.0.1:2113`
    """
    with session(connect_to, timeout) as client:
        started = time.perf_counter()
        pong = client.ping()
        rtt_ms = (time.perf_counter() - started) * 1000
    if as_json:
        print_json({"node": pong.node, "state": pong.state, "endpoint": client.endpoint,
                    "rtt_ms": round(rtt_ms, 3)})
    else:
        out.print(f"{pong.node} ({pong.state}) at {client.endpoint} answered in "
                  f"{rtt_ms:.2f} ms", highlight=False)


# --- commands from other modules -----------------------------------------------------------------
# `esnode run` (cli/run.py), `esnode bench` (cli/bench.py), `esnode verify` (cli/verify.py) and
# `esnode group`/`consume` (cli/groups.py), `esnode certs` (cli/certs.py)
# are added here: each module has a `register(app)` function. A module that is not there yet is
# skipped; any other import error is not hidden.
for _name in ("run", "bench", "verify", "groups", "certs", "keys", "admin", "ops"):
    try:
        _module = importlib.import_module(f"esnode.cli.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"esnode.cli.{_name}":
            raise
        continue
    _module.register(app)


# --- users (docs/security.md): admin-only, as $User events in $user-NAME ---------------------
user_app = typer.Typer(help="Manage the users of a cluster with `authentication = true` "
                            "(admins only: connect as an admin).", no_args_is_help=True)
app.add_typer(user_app, name="user")
NewPassword = Annotated[str, typer.Option(
    "--password", prompt=True, hide_input=True, confirmation_prompt=True,
    help="The password (asked for when not given; a command line is visible to `ps`).")]


def _last_record(client: Client, name: str):
    """The user's last record and its stream version; ``None`` when it has no stream."""
    from esnode.client.errors import StreamNotFound
    from esnode.core.acl import USER_EVENT_TYPE, User

    try:
        page = client.read_stream(f"$user-{name}", -1, 1, backwards=True)
    except StreamNotFound:
        return None
    event = page.events[0]
    if event.event_type != USER_EVENT_TYPE:
        raise UsageError(f"$user-{name} does not end with a $User record")
    return User.from_event_data(event.data), event.version


def _user_record(client: Client, name: str):
    """The record of a user that exists (not deleted) and its version, else ``UsageError``."""
    found = _last_record(client, name)
    if found is None or found[0].deleted:
        raise UsageError(f"no user {name!r}" + (" (it was deleted)" if found else ""))
    return found


def _write_user(client: Client, user, expected: int, as_json: bool, title: str) -> None:
    """Append the record. The password is hashed here, by the same ``core.acl`` function the
    node verifies with (the node never sees the clear password of a new user)."""
    from esnode.core.acl import USER_EVENT_TYPE

    client.append(user.stream, [new_event(USER_EVENT_TYPE, user.to_event_data(),
                                          is_json=True)], expected)
    print_record({"user": user.name, "groups": list(user.groups), "disabled": user.disabled},
                 as_json, title)


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The login name.")],
    password: NewPassword,
    group: Annotated[list[str] | None, typer.Option(
        "--group", "-g", help="A group (repeat for several), e.g. `$admins`, `$ops`.")] = None,
    full_name: Annotated[str, typer.Option("--full-name", help="Shown in listings.")] = "",
    connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0,
) -> None:
    """Create a user (refused if it exists).

    **Example**: `ESNODE_USER=admin esnode user add alice --group ops-team`
    """
    from esnode.core.acl import User, hash_password

    with command_input():
        try:
            user = User(name, hash_password(password), tuple(group or ()), full_name)
        except Exception as exc:  # noqa: BLE001 - the record's own validation message
            raise UsageError(str(exc)) from None
    with session(connect_to, timeout) as client:
        _write_user(client, user, _deleted_version(client, name), as_json, "added")


def _deleted_version(client: Client, name: str) -> int:
    """Where a new record of ``name`` goes: after the deletion for a deleted user (its stream
    keeps the history), else ``no_stream`` (which the node refuses for a user that exists)."""
    found = _last_record(client, name)
    return found[1] if found is not None and found[0].deleted else NO_STREAM


@user_app.command("list")
def user_list(connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0) -> None:
    """Every user, its groups and whether it is disabled (reads `$all`: admins only)."""
    from esnode.core.acl import USER_EVENT_TYPE, User

    with session(connect_to, timeout) as client:
        users: dict[str, User] = {}
        for event in client.iter_all(filter=EventFilter(stream_prefixes=("$user-",),
                                                        include_system=True)):
            if event.event_type == USER_EVENT_TYPE:
                user = User.from_event_data(event.data)
                if user.stream == event.stream:
                    users[user.name] = user
                    if user.deleted:  # its history stays in the stream; it is no user now
                        del users[user.name]
    rows = [{"user": u.name, "full_name": u.full_name, "groups": list(u.groups),
             "disabled": u.disabled} for _, u in sorted(users.items())]
    if as_json:
        for row in rows:
            print_json(row)
        return
    table = Table("user", "full name", "groups", "disabled")
    for row in rows:
        table.add_row(row["user"], row["full_name"], ", ".join(row["groups"]),
                      "yes" if row["disabled"] else "")
    out.print(table)


def _change_user(connect_to: str | None, timeout: float, name: str, as_json: bool,
                 title: str, **changes) -> None:
    """Append ``name``'s record with ``changes``, expecting the version it was read at (two
    concurrent changes cannot silently overwrite each other); a deleted user is unknown."""
    import dataclasses

    with session(connect_to, timeout) as client:
        user, version = _user_record(client, name)
        _write_user(client, dataclasses.replace(user, **changes), version, as_json, title)


def _record_command(command: str, title: str, doc: str, **changes: bool) -> None:
    """Register ``esnode user COMMAND NAME``: one change of the user's record."""
    def change(name: Annotated[str, typer.Argument(metavar="NAME")],
               connect_to: Connect = None, as_json: Json = False,
               timeout: Timeout = 5.0) -> None:
        _change_user(connect_to, timeout, name, as_json, title, **changes)

    change.__doc__ = doc
    user_app.command(command)(change)


_record_command("disable", "disabled", "Disable a user: its logins are refused from the moment "
                "the record is committed.", disabled=True)
_record_command("enable", "enabled", "Enable a disabled user: it may log in again once the "
                "record is committed.", disabled=False)
_record_command("delete", "deleted", "Delete a user: its logins are refused once the record "
                "is committed; `$user-NAME` keeps its history (a later `user add NAME` starts "
                "a new record there).", deleted=True)


@user_app.command("passwd")
def user_passwd(
    name: Annotated[str, typer.Argument(metavar="NAME")], password: NewPassword,
    connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0,
) -> None:
    """Give a user a new password (the old one stops working once this is committed)."""
    from esnode.core.acl import hash_password

    _change_user(connect_to, timeout, name, as_json, "password changed",
                 password_hash=hash_password(password))
