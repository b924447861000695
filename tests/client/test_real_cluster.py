"""The cluster-aware client against REAL 3-node clusters (one OS process per node, LMDB data,
server timers as shipped): leader kills under a steady append load, through gossip seeds and
through DNS; a ``$all`` subscriber across a failover; dead seeds; the CLI's every ``--connect``.

Run with ``-s`` to see the measured pauses (kill -> next successful append)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
import statistics
import threading
import time
import uuid

import pytest
from typer.testing import CliRunner

from esnode.cli.main import app
from esnode.client import Unavailable, connect, new_event
from tests.client.cluster_support import Notices, dns_server, host_port, seeds
from tests.cluster.checker import OK, History, check
from tests.cluster.harness import Cluster, common_free_port
from tests.cluster.writer import ClientWriter
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.slow

RIDE_OUT_ELECTIONS = {"maxDiscoverAttempts": 25}
"""Added to the tests' fast-failover options (tests/client/cluster_support.py): their 5
discovery rounds of ~0.2 s (a dead node's probe costs gossipTimeout 0.2 s) could end before
an election with the server's default timers does (1-2 s)."""

DNS_NAME = "cluster.esnode.test"
LOOPBACK_HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


@contextmanager
def real_cluster(tmp_path, cluster_class: type[Cluster] = Cluster,
                 **options) -> Iterator[Cluster]:
    """A started 3-node cluster (the server's default timers unless ``options`` has some)
    whose live nodes agree on a leader; every process ends after the test and the nodes'
    stderr tails are printed (pytest shows them when the test fails)."""
    c = cluster_class(tmp_path / "cluster", name="client-test", **options)
    try:
        c.start()
        c.wait_for_leader(timeout=20, settled=True)
        yield c
    finally:
        c.stop_all(graceful=False)
        print(c.logs(40))


@pytest.fixture
def cluster(tmp_path):
    with real_cluster(tmp_path) as c:
        yield c


@pytest.fixture
def dns_cluster(tmp_path):
    """A 3-node cluster whose nodes serve clients on 127.0.0.2/.3/.4 and one shared port,
    and a DNS server on loopback resolving ``DNS_NAME`` to those three addresses; yields
    ``(cluster, port, dns server address)``."""
    port = common_free_port(LOOPBACK_HOSTS)
    with dns_server({DNS_NAME: LOOPBACK_HOSTS}) as dns, \
            real_cluster(tmp_path, hosts=LOOPBACK_HOSTS, external_port=port) as c:
        yield c, port, dns


def check_history(cluster: Cluster, history: History) -> dict[str, list]:
    """Every append reported success or a clear error; the history checker passes against
    every surviving node's ``$all`` (returned), and nothing was written that nobody
    appended."""
    clear = [op for op in history if op.outcome != OK]
    assert all(all(op.error.partition(": ")[::2]) for op in clear), \
        f"appends that failed without a clear error: {[op.brief() for op in clear]}"
    logs = cluster.wait_converged(cluster.running(), timeout=15,
                                  at_least=len(history.of(OK)))
    check(history, logs)
    mine = {eid for op in history for eid in op.event_ids}
    for name, log in logs.items():
        foreign = {e[0] for e in log} - mine
        assert not foreign, f"{name}: events nobody appended: {foreign}"
    return logs


def kill_leader_under_load(cluster: Cluster, connection: str, kills: int) -> list[float]:
    """A client on ``connection`` appends steadily while the leader is SIGKILLed ``kills``
    times (the killed node is restarted and rejoins before the next kill); returns the
    pauses (kill -> the first successful append started after it)."""
    pauses = []
    notices = Notices()
    history = History()
    with connect(connection) as client:
        client.on_event(notices)
        with ClientWriter(client, history, streams=4, prefix=f"steady-{uuid.uuid4().hex[:8]}",
                          interval=0.005) as writer:
            writer.wait_acked(20, since=0.0, timeout=10)
            for round_ in range(kills):
                leader = cluster.wait_for_leader(timeout=20, settled=True)
                writer.wait_acked(20, timeout=10)
                killed_at = time.monotonic()
                cluster.kill(leader)
                pauses.append(writer.wait_acked(1, since=killed_at, timeout=20) - killed_at)
                print(f"kill {round_ + 1}: {leader} killed; next successful append after "
                      f"{pauses[-1] * 1000:.0f} ms (client now on {client.node})")
                assert client.node != leader
                if round_ < kills - 1:
                    cluster.start(leader)
                    cluster.wait_for_leader(timeout=20, settled=True)
            writer.wait_acked(20, timeout=10)
        print(f"appends {history.counts()}: "
              f"{[op.error for op in history if op.outcome != OK]}; stats {client.stats}")
    check_history(cluster, history)
    assert client.stats.node_changes >= kills
    return pauses


def report_pauses(label: str, pauses: list[float]) -> None:
    print(f"{label}: pauses {[round(p * 1000) for p in pauses]} ms; median "
          f"{statistics.median(pauses) * 1000:.0f} ms, worst {max(pauses) * 1000:.0f} ms")


# --- the tests ----------------------------------------------------------------------------------
def test_appends_carry_on_through_three_leader_kills_with_gossip_seeds(cluster):
    pauses = kill_leader_under_load(cluster, seeds(cluster.endpoints, **RIDE_OUT_ELECTIONS),
                                    kills=3)
    report_pauses("gossip seeds", pauses)


def test_appends_carry_on_through_a_leader_kill_with_dns_discovery(dns_cluster):
    cluster, port, dns = dns_cluster
    # the client's default options (heartbeat 1 s + 2 s, gossipTimeout 1 s, ...)
    connection = f"esnode+dns://{DNS_NAME}:{port}?dnsServer={dns[0]}:{dns[1]}"
    pauses = kill_leader_under_load(cluster, connection, kills=2)
    report_pauses("DNS discovery, default client options", pauses)


def test_all_subscriber_sees_every_event_once_and_in_order_through_a_failover(cluster):
    received: list = []
    failure: list[BaseException] = []
    stop = threading.Event()
    notices = Notices()
    history = History()
    connection = seeds(cluster.endpoints, **RIDE_OUT_ELECTIONS)
    with connect(connection) as reader, connect(connection) as writer:
        reader.on_event(notices)
        sub = reader.subscribe("$all", from_="start")

        def consume() -> None:
            try:
                while not stop.is_set():
                    event = sub.get(0.1)
                    if event is not None:
                        received.append(event)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                failure.append(exc)

        def reached(position: int) -> bool:
            if failure:
                raise AssertionError(f"the subscription failed: {failure[0]!r}")
            return bool(received) and received[-1].position >= position

        consumer = threading.Thread(target=consume, name="all-subscriber", daemon=True)
        consumer.start()
        try:
            leader = cluster.wait_for_leader(timeout=20, settled=True)
            assert reader.node == leader
            with ClientWriter(writer, history, streams=4, interval=0.005,
                              prefix=f"steady-{uuid.uuid4().hex[:8]}") as appender:
                appender.wait_acked(50, since=0.0, timeout=10)
                killed_at = time.monotonic()
                cluster.kill(leader)
                appender.wait_acked(1, since=killed_at, timeout=20)
                appender.wait_acked(50, timeout=10)
            final = [(e[8], e[0]) for e in check_history(cluster, history)[cluster.running()[0]]]
            wait_for(lambda: reached(final[-1][0]), 15,
                     message=f"the subscriber to reach $all position {final[-1][0]}")
        finally:
            stop.set()
            consumer.join(timeout=5)
            sub.close()
    positions = [e.position for e in received]
    assert all(a < b for a, b in zip(positions, positions[1:], strict=False)), \
        "subscriber positions not strictly increasing"
    assert [(e.position, e.event_id) for e in received] == final[:len(received)], \
        "the subscriber's events differ from the final $all (gap or duplicate)"
    assert len(received) == len(final)
    assert reader.stats.resubscriptions >= 1, notices.items
    print(f"subscriber: {len(received)} events in order through the kill of {leader}; "
          f"{reader.stats}")


def epochs(cluster: Cluster) -> dict[str, int]:
    """Each answering node's own epoch number (the term of the last election it knows)."""
    infos = {n: cluster.info(n) for n in cluster.running()}
    return {n: {m["name"]: m["epoch"] for m in i["members"]}[n]
            for n, i in infos.items() if i is not None}


def test_a_follower_killed_and_restarted_under_load_causes_no_election(cluster):
    """Its peers' socket monitors see its connections close (the disconnect hint), but it
    was nobody's leader: the leader keeps its term and the appends carry on."""
    leader = cluster.wait_for_leader(timeout=20, settled=True)
    before = epochs(cluster)
    history = History()
    with connect("esnode://" + ",".join(host_port(e) for e in cluster.endpoints)) as client, \
            ClientWriter(client, history, streams=4, prefix=f"fr-{uuid.uuid4().hex[:8]}",
                         interval=0.005) as writer:
        writer.wait_acked(20, since=0.0, timeout=10)
        for round_ in range(2):
            follower = next(n for n in cluster.names if n != leader)
            cluster.kill(follower)
            writer.wait_acked(20, timeout=10)
            cluster.start(follower)
            assert cluster.wait_for_leader(timeout=20, settled=True) == leader
            writer.wait_acked(20, timeout=10)
    after = epochs(cluster)
    print(f"epochs before {before}, after two follower kills {after}")
    assert set(after.values()) == {before[leader]}
    check_history(cluster, history)


def test_a_client_whose_seeds_are_all_dead_fails_within_its_attempts(cluster):
    options = {"maxDiscoverAttempts": 3, "gossipTimeout": 200, "discoveryInterval": 50,
               "maxRetries": 1}
    # never-answering seeds: a connect gives up after 3 rounds of 3 probes
    dead = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        connect(seeds(dead, **options))
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "after 3 attempt(s)" in message and "3 seed(s)" in message, message
    assert all(f"tcp://{seed}" in message for seed in dead), message
    assert elapsed < 3 * 3 * 0.2 + 2 * 0.05 + 1.5, elapsed
    # a connected client whose whole cluster dies: the next append fails in bounded time
    with connect(seeds(cluster.endpoints, **options)) as client:
        client.append("doomed", new_event("Before"))
        for name in cluster.names:
            cluster.kill(name)
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            client.append("doomed", new_event("After"))
        elapsed = time.monotonic() - started
    message = str(caught.value)
    assert message.count("append to 'doomed'") == 1 and "after 3 attempt(s)" in message, \
        message
    assert all(f"tcp://{e}" in message for e in cluster.endpoints), message
    # one attempt times out (operationTimeout 1 s, or the heartbeat sooner), then discovery
    # gives up after 3 rounds of 3 probes
    assert elapsed < 1.0 + 3 * 3 * 0.2 + 2 * 0.05 + 1.5, elapsed
    print(f"dead cluster: append failed after {elapsed:.2f}s: {message}")


def test_cli_works_with_every_form_of_connect(dns_cluster, monkeypatch):
    cluster, port, dns = dns_cluster
    runner = CliRunner()
    monkeypatch.delenv("ESNODE_CONNECT", raising=False)
    monkeypatch.chdir(cluster.dir)  # holds the cluster's topology.toml: the default

    def run(*args: str, env: dict | None = None):
        result = runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})
        assert result.exit_code == 0, (args, env, result.output, result.stderr)
        return result

    seeded = "esnode://" + ",".join(cluster.endpoints)
    forms = {
        "tcp": (["--connect", f"tcp://{cluster.endpoint('node2')}"], None),
        "seeds": (["--connect", seeded], None),
        "dns": (["--connect", f"esnode+dns://{DNS_NAME}:{port}?dnsServer={dns[0]}:{dns[1]}"],
                None),
        "env": ([], {"ESNODE_CONNECT": seeded}),
        "topology.toml": ([], None),
    }
    ids = {}
    for form, (args, env) in forms.items():
        pong = json.loads(run("ping", "--json", *args, env=env).stdout)
        assert pong["state"] in ("Leader", "Follower"), (form, pong)
        ids[form] = str(uuid.uuid4())
        [doc] = [json.loads(line) for line in run(
            "append", "cli-forms", "--type", form, "--id", ids[form], "--json", *args,
            env=env).stdout.splitlines()]
        assert doc["event_id"] == ids[form]
        members = [json.loads(line) for line in run("status", "--json", *args,
                                                    env=env).stdout.splitlines()]
        assert sorted(m["name"] for m in members) == cluster.names
        assert sum(m["leader"] for m in members) == 1
    docs = [json.loads(line) for line in run("read", "cli-forms", "--json").stdout.splitlines()]
    assert [d["id"] for d in docs] == list(ids.values())
    assert [d["type"] for d in docs] == list(forms)
