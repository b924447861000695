"""A failure inside an actor is never swallowed, even when it happens in a message sent with
``ask`` (pykka hands such an exception to the asker and keeps the actor running): the node
logs it and exits non-zero."""

from __future__ import annotations

import logging

from esnode.actors.messages import Shutdown
from esnode.actors.replica import Replica
from esnode.actors.storage import StorageActor
from esnode.actors.subscriptions import SubscriptionsActor
from esnode.core.messages import Append
from esnode.core.types import ANY
from tests.support.cluster import new_event
from tests.support.inproc import outcome


class FinalFlushFails(Replica):
    """A writer whose last flush, at shutdown, hits a disk error."""

    def shutdown(self) -> None:
        raise OSError("disk error during the final flush")


class WriterWithFailingShutdown(StorageActor):
    replica_class = FinalFlushFails


def test_a_failed_final_flush_makes_the_node_exit_non_zero(make_cluster, caplog):
    caplog.set_level(logging.CRITICAL, logger="esnode")
    cluster = make_cluster(size=1, overrides={"storage_actor": WriterWithFailingShutdown})
    node = cluster.wait_for_leader()
    kind, body = outcome(cluster.client("n1").call(Append("s", ANY, (new_event(),))))
    assert kind == "ok", body
    node.stop()
    assert node.wait(timeout=5) == 1
    assert "disk error during the final flush" in caplog.text


class SubscriptionsFailingAtShutdown(SubscriptionsActor):
    """Any actor the node asks at shutdown: its failure reaches the exit code too."""

    def on_receive(self, message: object) -> None:
        if type(message) is Shutdown:
            raise RuntimeError("subscriptions could not close")
        super().on_receive(message)


def test_a_failure_answered_to_an_ask_is_not_swallowed(make_cluster, caplog):
    caplog.set_level(logging.CRITICAL, logger="esnode")
    cluster = make_cluster(size=1,
                           overrides={"subscriptions_actor": SubscriptionsFailingAtShutdown})
    node = cluster.wait_for_leader()
    node.stop()
    assert node.wait(timeout=5) == 1
    assert "subscriptions could not close" in caplog.text


def test_a_clean_stop_still_exits_zero(make_cluster):
    cluster = make_cluster(size=1)
    node = cluster.wait_for_leader()
    node.stop()
    assert node.wait(timeout=5) == 0
