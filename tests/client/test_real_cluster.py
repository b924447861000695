"""The cluster-aware client against REAL 3-node clusters (one OS process per node, LMDB data,
server timers as shipped): leader kills under a steady append load, through gossip seeds and
through DNS; a ``$all`` subscriber across a failover; dead seeds; the CLI's every ``--connect``.

Run with ``-s`` to see the measured pauses (kill -> next successful append)."""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from esnode.cli.main import app
from esnode.client import Unavailable, connect, new_event
from esnode.client.errors import EsError
from tests.client.cluster_support import Notices, dns_seeds, dns_server, seeds
from tests.client.real_cluster import RealCluster, common_free_port
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.slow

RIDE_OUT_ELECTIONS = {"maxDiscoverAttempts": 25}
"""Added to the tests' fast-failover options (tests/client/cluster_support.py): their 5
discovery rounds of ~0.2 s (a dead node's probe costs gossipTimeout 0.2 s) could end before
an election with the server's default timers does (1-2 s)."""

DNS_NAME = "cluster.esnode.test"
LOOPBACK_HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


@pytest.fixture
def cluster(tmp_path):
    """A started 3-node cluster with an agreed leader; every process ends after the test.
    The nodes' stderr is printed at teardown (pytest shows it when the test fails)."""
    c = RealCluster(tmp_path / "cluster")
    try:
        c.start()
        c.wait_leader()
        yield c
    finally:
        c.close()
        print(c.report())


@pytest.fixture
def dns_cluster(tmp_path):
    """A 3-node cluster whose nodes serve clients on 127.0.0.2/.3/.4 and one shared port,
    and a DNS server on loopback resolving ``DNS_NAME`` to those three addresses; yields
    ``(cluster, port, dns server address)``."""
    port = common_free_port(LOOPBACK_HOSTS)
    c = RealCluster(tmp_path / "cluster", hosts=LOOPBACK_HOSTS, external_port=port)
    try:
        with dns_server({DNS_NAME: LOOPBACK_HOSTS}) as dns:
            c.start()
            c.wait_leader()
            yield c, port, dns
    finally:
        c.close()
        print(c.report())


# --- a steady writer ----------------------------------------------------------------------------
@dataclass
class Outcome:
    event_id: str
    stream: str
    started: float
    ended: float
    error: BaseException | None = None


class SteadyAppender:
    """Appends one event (expected version any) to one of ``streams`` streams every
    ``interval`` seconds from a background thread, recording each call's outcome: every call
    either returns or raises, so nothing can go unreported."""

    def __init__(self, client, interval: float = 0.005, streams: int = 4) -> None:
        self.client, self.interval = client, interval
        self.streams = [f"steady-{uuid.uuid4().hex[:8]}-{i}" for i in range(streams)]
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-appender", daemon=True)

    def __enter__(self) -> SteadyAppender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the appender is stuck in an append"

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            event = new_event("Tick", {"i": i})
            stream = self.streams[i % len(self.streams)]
            started = time.monotonic()
            try:
                self.client.append(stream, event)
                error = None
            except BaseException as exc:  # noqa: BLE001 - recorded and checked by the test
                error = exc
            self.outcomes.append(Outcome(event.event_id, stream, started, time.monotonic(),
                                         error))
            i += 1
            self._stop.wait(self.interval)  # the pace of the load, not a synchronisation

    def succeeded(self) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.error is None]

    def failed(self) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.error is not None]

    def first_success_after(self, moment: float, timeout: float = 20.0) -> Outcome:
        """Wait for an append started after ``moment`` to succeed; return the first."""
        def first() -> Outcome | None:
            return next((o for o in self.succeeded() if o.started >= moment), None)

        return wait_for(first, timeout, message="an append to succeed after the kill")

    def wait_successes(self, n: int, timeout: float = 10.0) -> None:
        wait_for(lambda: len(self.succeeded()) >= n, timeout, message=f"{n} appends")


def all_events(endpoint: str) -> list:
    """Every event of ``$all`` as one node has it (a direct connection: read locally)."""
    with connect(f"tcp://{endpoint}", timeout=5, discovery_attempts=3) as client:
        return list(client.iter_all())


def check_exactly_once(cluster: RealCluster, appender: SteadyAppender) -> None:
    """Every append reported success or a clear error; every success is in every surviving
    node's ``$all`` exactly once; a failed one at most once; nothing else was written."""
    for outcome in appender.failed():
        error = outcome.error
        assert isinstance(error, EsError) and error.code and str(error), \
            f"append of {outcome.event_id} failed without a clear error: {error!r}"
    succeeded = {o.event_id for o in appender.succeeded()}
    mine = {o.event_id for o in appender.outcomes}
    for name in cluster.alive:
        def has_all(name=name) -> list | None:
            events = all_events(cluster.endpoint(name))
            ids = {e.event_id for e in events}
            return events if succeeded <= ids else None

        events = wait_for(has_all, 15, interval=0.2,
                          message=f"{name} to have every acknowledged append")
        counts = Counter(e.event_id for e in events)
        duplicated = {i: n for i, n in counts.items() if n > 1}
        assert not duplicated, f"{name}: events written more than once: {duplicated}"
        assert set(counts) <= mine, f"{name}: events nobody appended: {set(counts) - mine}"
        positions = [e.position for e in events]
        assert positions == sorted(set(positions)), f"{name}: $all positions not increasing"


def kill_leader_under_load(cluster: RealCluster, connection: str, kills: int) -> list[float]:
    """A client on ``connection`` appends steadily while the leader is SIGKILLed ``kills``
    times (the killed node is restarted and rejoins before the next kill); returns the
    pauses (kill -> the first successful append started after it)."""
    pauses = []
    notices = Notices()
    with connect(connection) as client:
        client.on_event(notices)
        with SteadyAppender(client) as appender:
            appender.wait_successes(20)
            for round_ in range(kills):
                leader = cluster.wait_leader()
                before = len(appender.succeeded())
                appender.wait_successes(before + 20)
                killed_at = time.monotonic()
                cluster.kill(leader)
                first = appender.first_success_after(killed_at)
                pauses.append(first.ended - killed_at)
                print(f"kill {round_ + 1}: {leader} killed; next successful append after "
                      f"{pauses[-1] * 1000:.0f} ms (client now on {client.node})")
                assert client.node != leader
                if round_ < kills - 1:
                    cluster.start(leader)
                    cluster.wait_leader()
            appender.wait_successes(len(appender.succeeded()) + 20)
        print(f"{len(appender.outcomes)} appends, {len(appender.failed())} failed: "
              f"{[repr(o.error) for o in appender.failed()]}; stats {client.stats}")
    check_exactly_once(cluster, appender)
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
            leader = cluster.wait_leader()
            assert reader.node == leader
            with SteadyAppender(writer) as appender:
                appender.wait_successes(50)
                killed_at = time.monotonic()
                cluster.kill(leader)
                appender.first_success_after(killed_at)
                appender.wait_successes(len(appender.succeeded()) + 50)
            survivor = cluster.alive[0]
            final = wait_for(lambda: (lambda events: events if {o.event_id for o in
                                                                appender.succeeded()}
                                      <= {e.event_id for e in events} else None)(
                all_events(cluster.endpoint(survivor))), 15, interval=0.2,
                message="the survivor to have every acknowledged append")
            wait_for(lambda: reached(final[-1].position), 15,
                     message=f"the subscriber to reach $all position {final[-1].position}")
        finally:
            stop.set()
            consumer.join(timeout=5)
            sub.close()
    positions = [e.position for e in received]
    assert all(a < b for a, b in zip(positions, positions[1:], strict=False)), \
        "subscriber positions not strictly increasing"
    assert [(e.position, e.event_id) for e in received] == \
        [(e.position, e.event_id) for e in final[:len(received)]], \
        "the subscriber's events differ from the final $all (gap or duplicate)"
    assert len(received) == len(final)
    assert reader.stats.resubscriptions >= 1, notices.items
    print(f"subscriber: {len(received)} events in order through the kill of {leader}; "
          f"{reader.stats}")


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
    monkeypatch.chdir(cluster.root)  # holds the cluster's topology.toml: the default

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
