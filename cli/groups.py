"""``esnode group ...`` (persistent subscription groups) and ``esnode consume``
(docs/subscriptions.md). Registered by cli/main.py like the other command modules."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import typer

from esnode.cli import main as base
from esnode.cli.main import Connect, Json, Timeout, session
from esnode.client import BadRequest, GroupSettings

group_app = typer.Typer(help="Persistent subscription groups (competing consumers): create, "
                             "change, delete, list, describe, replay parked events.",
                        no_args_is_help=True)

Stream = Annotated[str, typer.Argument(metavar="STREAM|$all", help="A stream, or `$all`.")]
Group = Annotated[str, typer.Argument(help="The group's name.")]


def _opt(name: str, help_: str, kind: type = int) -> Any:
    return Annotated[kind | None, typer.Option(name, show_default=False, help=help_)]


StartFrom = _opt("--start-from", "`start`, `end` or a version/position N (events after N). "
                                 "Default: end.", str)
MessageTimeout = _opt("--message-timeout", "Seconds a consumer has to ack an event before "
                                           "it is retried. Default: 30.", float)
MaxRetry = _opt("--max-retry-count", "Deliveries after the first before an event is parked. "
                                     "Default: 10.")
LiveBuffer = _opt("--live-buffer-size", "Events read ahead and waiting once the group is at "
                  "the end of its source. Default: 500.")
ReadBatch = _opt("--read-batch-size", "Events read from the log at once. Default: 20.")
HistoryBuffer = _opt("--history-buffer-size", "Events read ahead and waiting while the group "
                     "catches up. Default: 500.")
CheckpointAfter = _opt("--checkpoint-after", "Seconds between checkpoints at most. Default: 2.",
                       float)
MinCheckpoint = _opt("--min-checkpoint-count", "Settled events before a checkpoint. "
                                               "Default: 10.")
MaxCheckpoint = _opt("--max-checkpoint-count", "Default: 1000.")
MaxSubscribers = _opt("--max-subscriber-count", "Most consumers at once (0: any). Default: 0.")
Strategy = _opt("--strategy", "RoundRobin, DispatchToSingle or Pinned (by stream). "
                              "Default: RoundRobin.", str)


def _settings(start_from, message_timeout, max_retry_count, live_buffer_size, read_batch_size,
              history_buffer_size, checkpoint_after, min_checkpoint_count,
              max_checkpoint_count, max_subscriber_count, strategy) -> dict:
    """The settings given on the command line (the others keep their values)."""
    given = {"message_timeout": message_timeout, "max_retry_count": max_retry_count,
             "live_buffer_size": live_buffer_size, "read_batch_size": read_batch_size,
             "history_buffer_size": history_buffer_size, "checkpoint_after": checkpoint_after,
             "min_checkpoint_count": min_checkpoint_count,
             "max_checkpoint_count": max_checkpoint_count,
             "max_subscriber_count": max_subscriber_count, "consumer_strategy": strategy}
    if start_from is not None:
        text = start_from.strip().lower()
        given["start_from"] = int(text) if text.isascii() and text.isdigit() else text
    return {k: v for k, v in given.items() if v is not None}


def _checked(changes: dict, base_settings: GroupSettings | None = None) -> dict:
    try:
        GroupSettings.from_wire(changes, base_settings)
    except BadRequest as exc:
        raise base.fail(str(exc), 2) from None
    return changes


def _settings_command(verb: str, act) -> Any:
    """``group create`` and ``group update``: the same options, a different call."""

    def command(stream: Stream, group: Group, start_from: StartFrom = None,
                message_timeout: MessageTimeout = None, max_retry_count: MaxRetry = None,
                live_buffer_size: LiveBuffer = None, read_batch_size: ReadBatch = None,
                history_buffer_size: HistoryBuffer = None,
                checkpoint_after: CheckpointAfter = None,
                min_checkpoint_count: MinCheckpoint = None,
                max_checkpoint_count: MaxCheckpoint = None,
                max_subscriber_count: MaxSubscribers = None, strategy: Strategy = None,
                connect_to: Connect = None, timeout: Timeout = 5.0) -> None:
        changes = _checked(_settings(start_from, message_timeout, max_retry_count,
                                     live_buffer_size, read_batch_size, history_buffer_size,
                                     checkpoint_after, min_checkpoint_count,
                                     max_checkpoint_count, max_subscriber_count, strategy))
        with session(connect_to, timeout) as client:
            act(client, stream, group, changes)
        base.err.print(f"group {group!r} on {stream!r} {verb}", highlight=False)

    return command


group_app.command("create", help="Create a group on a stream or `$all`.\n\n**Example:** "
                  "`esnode group create orders billing --start-from start --strategy Pinned`")(
    _settings_command("created", lambda c, s, g, changes: c.create_group(s, g, **changes)))
group_app.command("update", help="Change some settings of a group (the others keep their "
                  "values).")(
    _settings_command("updated", lambda c, s, g, changes: c.update_group(s, g, **changes)))


@group_app.command("delete")
def delete(stream: Stream, group: Group, connect_to: Connect = None,
           timeout: Timeout = 5.0) -> None:
    """Delete a group (its consumers are dropped)."""
    with session(connect_to, timeout) as client:
        client.delete_group(stream, group)
    base.err.print(f"group {group!r} on {stream!r} deleted", highlight=False)


def _doc(status) -> dict:
    doc = asdict(status)
    doc["settings"] = status.settings.to_wire()
    return doc


@group_app.command("list")
def list_(stream: Annotated[str | None, typer.Argument(
              metavar="[STREAM|$all]", help="Only this stream's groups.")] = None,
          connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0) -> None:
    """List the groups (of one stream, or all)."""
    with session(connect_to, timeout) as client:
        groups = client.list_groups(stream)
    if as_json:
        for g in groups:
            base.print_json(_doc(g))
        return
    for g in groups:
        s = g.settings
        base.out.print(f"{g.stream} :: [bold]{g.group}[/]  {s.consumer_strategy}, start "
                       f"{s.start_from}, retries {s.max_retry_count}, timeout "
                       f"{s.message_timeout:g}s", highlight=False)


@group_app.command("info")
def info(stream: Stream, group: Group, connect_to: Connect = None, as_json: Json = False,
         timeout: Timeout = 5.0) -> None:
    """A group's settings and, on the leader, its consumers, events in flight and parked."""
    with session(connect_to, timeout) as client:
        status = client.group_info(stream, group)
    base.print_record(_doc(status), as_json, f"group {group} on {stream}")


@group_app.command("replay-parked")
def replay_parked(stream: Stream, group: Group, connect_to: Connect = None,
                  timeout: Timeout = 5.0) -> None:
    """Deliver the group's parked events again (each once, oldest first)."""
    with session(connect_to, timeout) as client:
        n = client.replay_parked(stream, group)
    base.err.print(f"{n} parked event(s) put back in line", highlight=False)


def consume(stream: Stream, group: Group,
            limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, show_default=False,
                                                      help="Stop after this many events.")
                             ] = None,
            window: Annotated[int, typer.Option(help="Most events in flight at once.")] = 100,
            connect_to: Connect = None, as_json: Json = False, timeout: Timeout = 5.0) -> None:
    """Join a group as one of its consumers: print each event and ack it, until Ctrl-C.

    **Examples**

    ```
    esnode consume orders billing
    esnode consume '$all' projector --json --limit 100
    ```
    """
    with session(connect_to, timeout) as client:
        count = 0
        with client.subscribe_group(stream, group, window=window) as sub:
            for item in sub:
                e = item.event
                if as_json:
                    base.print_json(base.event_doc(e) | {"retry_count": item.retry_count})
                else:
                    doc = base.event_doc(e)
                    base.out.print(f"[bold]{e.stream}[/]@{e.version} [cyan]{e.event_type}[/] "
                                   f"pos {e.position} retry {item.retry_count}  "
                                   f"{'' if doc['data'] is None else base.brief(doc['data'], 100)}",
                                   highlight=False)
                sub.ack(item)
                count += 1
                if limit is not None and count >= limit:
                    break


def register(app: typer.Typer) -> None:
    app.add_typer(group_app, name="group")
    app.command("consume")(consume)
