"""A commit wakes only the actors that need to hear of it (``Node._notify``): the gateway
reads the commit position from the status board, and the subscription actors are not told
while they serve nothing; a subscription started after a quiet spell still sees every event."""

from __future__ import annotations

import threading

from esnode.actors.messages import Committed
from esnode.actors.persistent import PersistentSubscriptionsActor
from esnode.actors.subscriptions import SubscriptionsActor
from esnode.core.messages import Append, CaughtUp, EventsPushed, ReadStream, Subscribe
from esnode.core.types import ANY
from tests.conftest import wait_for
from tests.support.cluster import new_event
from tests.support.inproc import outcome

COUNTS: dict[str, int] = {}
LOCK = threading.Lock()


def _count(name: str, message: object) -> None:
    if type(message) is Committed:
        with LOCK:
            COUNTS[name] = COUNTS.get(name, 0) + 1


class CountingSubscriptions(SubscriptionsActor):
    def on_receive(self, message: object) -> None:
        _count("subscriptions", message)
        super().on_receive(message)


class CountingGroups(PersistentSubscriptionsActor):
    def on_receive(self, message: object) -> None:
        _count("persistent", message)
        super().on_receive(message)


def _told() -> dict[str, int]:
    with LOCK:
        return dict(COUNTS)


def _append(client, stream: str) -> int:
    kind, body = outcome(client.call(Append(stream, ANY, (new_event(),))))
    assert kind == "ok", body
    return body["position"]


def test_idle_subscription_actors_are_not_woken_by_commits_and_catch_up_when_needed(
        make_cluster):
    COUNTS.clear()
    cluster = make_cluster(size=1, overrides={"subscriptions_actor": CountingSubscriptions,
                                              "persistent_actor": CountingGroups})
    node = cluster.wait_for_leader()
    board = node.board
    client = cluster.client("n1")
    _append(client, "warm-up")
    wait_for(lambda: board.subscriptions_idle and board.groups_idle,
             message="both subscription actors to say they are idle")
    before = _told()
    positions = [_append(client, f"quiet-{i}") for i in range(20)]
    assert _told() == before  # 20 commits, no wake-ups

    # Read-your-writes without a commit notice: the gateway reads the board.
    kind, body = outcome(client.call(ReadStream("quiet-19", 0, 10)))
    assert kind == "ok" and len(body["events"]) == 1, body

    # A subscription from the start sees all of it although its actor was never told.
    corr = client.send(Subscribe("$all"))
    seen: list[int] = []

    def caught_up() -> bool:
        messages = client.messages(corr)
        return any(type(m) is CaughtUp for m in messages)

    wait_for(caught_up, message="the subscription to catch up")
    for message in client.messages(corr):
        if type(message) is EventsPushed:
            seen += [e.position for e in message.events]
    assert set(positions) <= set(seen)
    assert not board.subscriptions_idle
    live = _append(client, "live")

    def delivered() -> bool:
        return any(type(m) is EventsPushed and any(e.position == live for e in m.events)
                   for m in client.messages(corr))

    wait_for(delivered, message="the live event to be pushed")
    assert _told()["subscriptions"] > before.get("subscriptions", 0)
    assert board.groups_idle  # no group defined: still not woken
