"""Operating a running cluster over its external network (`esnode admin`): the leader resigns
under a steady writer and another takes over with no acknowledged write lost; scavenge runs
on every node online; a node shuts down gracefully (exit code 0); priorities are set."""

from __future__ import annotations

import json
import time
import uuid

from typer.testing import CliRunner

from esnode.cli.main import app
from esnode.client import connect
from tests.client.cluster_support import seeds
from tests.client.test_real_cluster import RIDE_OUT_ELECTIONS, check_history
from tests.cluster.checker import History
from tests.cluster.harness import new_event, wait_until
from tests.cluster.writer import ClientWriter


def esnode(*args: str, code: int = 0) -> list[dict]:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_resign_hands_leadership_over_without_losing_a_write(cluster):
    leader = cluster.wait_for_leader(timeout=20, settled=True)
    target = "esnode://" + ",".join(cluster.endpoints)
    history = History()
    with connect(seeds(cluster.endpoints, **RIDE_OUT_ELECTIONS)) as client, \
            ClientWriter(client, history, streams=3, prefix=f"resign-{uuid.uuid4().hex[:8]}",
                         interval=0.005, cluster=cluster) as writer:
        writer.wait_acked(20, since=0.0, timeout=10)
        [answer] = esnode("admin", "resign", "--connect", target)
        resigned_at = time.monotonic()
        assert answer["node"] == leader and answer["accepted"]
        new = cluster.wait_for_leader(timeout=20, exclude=[leader])
        assert new != leader
        writer.wait_acked(20, since=resigned_at, timeout=20)
    check_history(cluster, history)  # every acknowledged append is on every node, once


def test_scavenge_priority_and_graceful_shutdown_over_the_network(cluster):
    leader = cluster.wait_for_leader(timeout=20, settled=True)
    events = [new_event() for _ in range(30)]
    for event in events:
        assert cluster.append(leader, "trimmed", [event])[0] == "ok"
    kind, _ = cluster.raw(leader).call("set_metadata", {"stream": "trimmed",
                                                        "metadata": {"$maxCount": 5}})
    assert kind == "ok"
    cluster.wait_converged(cluster.names, at_least=31)
    before = {n: cluster.read_stream(n, "trimmed") for n in cluster.names}
    assert all([e[0] for e in log] == [e[0] for e in events[-5:]] for log in before.values())

    target = "esnode://" + ",".join(cluster.endpoints)
    esnode("admin", "scavenge", "--connect", target)
    done = wait_until(lambda: (lambda rows: all(r["state"] == "done" for r in rows) and rows)(
        esnode("admin", "scavenge", "--status", "--connect", target)), 20,
        "every node to finish its scavenge", cluster)
    assert sorted(r["node"] for r in done) == sorted(cluster.names)
    assert all(r["scavenged"] == 25 and r["bytes_reclaimed"] > 0 for r in done), done
    assert {n: cluster.read_stream(n, "trimmed") for n in cluster.names} == before

    follower = next(n for n in cluster.names if n != leader)
    [stats] = esnode("stats", "--connect", cluster.endpoint(leader))
    lags = {m["name"]: (m["replication_lag_records"], m["replication_lag_seconds"])
            for m in stats["members"]}
    assert lags[leader] == (None, None) and lags[follower][0] >= 0 <= lags[follower][1]
    [answer] = esnode("admin", "priority", "7", "--connect", cluster.endpoint(follower))
    assert answer["accepted"]
    esnode("admin", "priority", "7", "--connect", target, code=2)  # which node?
    wait_until(lambda: {m["name"]: m["priority"] for m in esnode(
        "status", "--connect", cluster.endpoint(leader))}[follower] == 7, 10,
        "the new priority to be gossiped", cluster)

    esnode("admin", "shutdown", "--connect", cluster.endpoint(follower))
    code = cluster.procs[follower].wait(timeout=20)
    assert code == 0
    assert "node " + follower + " stopped" in cluster.stderr_path(follower).read_text()
    # The other two carry on.
    assert cluster.append(leader, "after-shutdown", [new_event()])[0] == "ok"
