"""A real load balancer (the shipped HAProxy and nginx configs) in front of a 3-node cluster.

Through HAProxy (and nginx, when installed), writers POST with their own event ids and retry unknown outcomes with the
same ids while readers page a stream and ``$all``; the leader is SIGKILLed, restarted, and
then a follower is SIGKILLed. The history is checked by the product's checker (no
acknowledged write lost or duplicated), every failure a client saw is a visible error, and
the write pause around each kill is measured (printed; docs/http.md has the figures)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import requests

from tests.cluster.checker import FAIL, OK, UNKNOWN, History, check
from tests.cluster.harness import wait_until
from tests.http.balancer import Balancer
from tests.http.conftest import ATOM, EVENTS

pytestmark = pytest.mark.slow

DEFINITE = {"no_quorum", "not_leader", "not_ready", "wrong_expected_version", "bad_request",
            "stream_deleted", "too_large"}
"""ESnode-Error codes that mean the write was not made."""


@pytest.fixture
def balancer(request, http_cluster, tmp_path):
    lb = Balancer(request.param, http_cluster.http_ports, tmp_path)
    yield lb
    lb.stop()


class Writer(threading.Thread):
    """POSTs batches of 1-3 events with its own ids; an unknown outcome (5xx without a
    definite code, a dropped connection, a timeout) is retried with the same ids."""

    def __init__(self, url: str, name: str, history: History, stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self.url, self.history, self.stop_flag = url, history, stop
        self.session = requests.Session()
        self.acks: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        i = 0
        while not self.stop_flag.is_set():
            i += 1
            stream = f"bal-{self.name}-{i % 3}"
            ids = [str(uuid.uuid4()) for _ in range(1 + i % 3)]
            body = json.dumps([{"eventId": e, "eventType": "Bal", "data": {"i": i}}
                               for e in ids])
            op = self.history.append(stream, ids, via=self.name)
            self._attempt_until_known(op, stream, body, len(ids))
        self.session.close()

    def _attempt_until_known(self, op, stream: str, body: str, n: int) -> None:
        unknown_before = False
        deadline = time.monotonic() + 60
        while True:
            kind, result, why = self._post(stream, body)
            op.attempts += 1
            if kind == "ok":
                first = result["first"]
                History.end(op, OK, position=result["position"], first_version=first,
                            last_version=first + n - 1, attempts=op.attempts)
                self.acks.append(time.monotonic())
                return
            if kind == "fail" and not unknown_before:
                History.end(op, FAIL, error=why, attempts=op.attempts)
                return
            unknown_before = unknown_before or kind == "unknown"
            self.errors.append(why)
            if time.monotonic() > deadline:
                History.end(op, UNKNOWN, error=why, attempts=op.attempts)
                return
            self.stop_flag.wait(0.05)  # back off a little before the retry

    def _post(self, stream: str, body: str) -> tuple[str, dict, str]:
        try:
            r = self.session.post(f"{self.url}/streams/{stream}", data=body, timeout=20,
                                  headers={"Content-Type": EVENTS}, allow_redirects=False)
        except requests.RequestException as exc:
            return "unknown", {}, f"connection: {type(exc).__name__}"
        if r.status_code == 201:
            first = int(r.headers["Location"].rsplit("/", 1)[1])
            assert r.headers["Location"].startswith(self.url), r.headers["Location"]
            return "ok", {"first": first, "position": int(r.headers["ESnode-Position"])}, ""
        code = r.headers.get("ESnode-Error", "")
        why = f"{r.status_code} {r.reason} {code}".strip()
        assert r.status_code >= 400, why  # every failure is an error the client can see
        return ("fail" if code in DEFINITE else "unknown"), {}, why


class Reader(threading.Thread):
    """Pages a stream and ``$all`` backwards through the balancer: every answer is a page or a
    visible error status; a page's events are consecutive."""

    def __init__(self, url: str, stream: str, stop: threading.Event):
        super().__init__(name="reader", daemon=True)
        self.url, self.stream, self.stop_flag = url, stream, stop
        self.pages = 0
        self.errors: list[str] = []

    def run(self) -> None:
        session = requests.Session()
        while not self.stop_flag.is_set():
            for path in (f"/streams/{self.stream}", "/streams/%24all/head/backward/50"):
                url = self.url + path
                for _ in range(3):  # follow "next" a few pages
                    try:
                        r = session.get(url, headers={"Accept": ATOM}, timeout=15)
                    except requests.RequestException as exc:
                        self.errors.append(type(exc).__name__)
                        break
                    if r.status_code != 200:
                        assert r.status_code >= 400, r.status_code
                        self.errors.append(str(r.status_code))
                        break
                    body = r.json()
                    self.pages += 1
                    if "streamId" in body:
                        numbers = [int(e["title"].split("@")[0]) for e in body["entries"]]
                        assert numbers == list(range(numbers[0], numbers[0] - len(numbers),
                                                     -1)) if numbers else True, numbers
                    nxt = [link["uri"] for link in body["links"] if link["relation"] == "next"]
                    if not nxt:
                        break
                    assert nxt[0].startswith(self.url), nxt[0]  # links point at the balancer
                    url = nxt[0]
        session.close()


def _pause(acks: list[float], at: float, window: float = 10.0) -> float:
    """The longest gap between consecutive acknowledged writes from the last one before
    ``at`` (a kill) to ``window`` seconds after it: the time writes stood still."""
    before = [t for t in acks if t <= at]
    times = ([before[-1]] if before else [at]) + [t for t in acks if at < t <= at + window]
    return max((b - a for a, b in zip(times, times[1:])), default=window)


@pytest.mark.parametrize("balancer", ["haproxy", "nginx"], indirect=True)
def test_leader_and_follower_kills_through_the_balancer(http_cluster, balancer):
    cluster = http_cluster
    history = History()
    stop = threading.Event()
    writers = [Writer(balancer.url, f"w{k}", history, stop) for k in range(3)]
    reader = Reader(balancer.url, "bal-w0-1", stop)
    threads = [*writers, reader]
    for t in threads:
        t.start()
    acks = lambda: sorted(t for w in writers for t in w.acks)  # noqa: E731
    try:
        wait_until(lambda: len(acks()) >= 30, 30, "30 acknowledged writes", cluster)
        leader = cluster.wait_for_leader()
        killed_leader_at = time.monotonic()
        cluster.kill(leader)
        others = [n for n in cluster.names if n != leader]
        cluster.wait_for_leader(timeout=30, among=others)
        wait_until(lambda: sum(t > killed_leader_at for t in acks()) >= 30, 60,
                   "30 writes acknowledged after the leader kill", cluster)
        cluster.start(leader)
        current = cluster.wait_for_leader(timeout=30, settled=True)
        follower = next(n for n in cluster.names if n != current)
        killed_follower_at = time.monotonic()
        cluster.kill(follower)
        wait_until(lambda: sum(t > killed_follower_at for t in acks()) >= 30, 60,
                   "30 writes acknowledged after the follower kill", cluster)
        cluster.start(follower)
    finally:
        stop.set()
        for t in threads:
            t.join(70)
    assert not any(t.is_alive() for t in threads)
    cluster.wait_for_leader(timeout=30, settled=True)
    logs = cluster.wait_converged(cluster.names, timeout=60)
    result = check(history, logs)
    counts = history.counts("append")
    leader_pause = _pause(acks(), killed_leader_at)
    follower_pause = _pause(acks(), killed_follower_at)
    print(f"\nthrough {balancer.kind}: appends {counts}, reader pages {reader.pages}, "
          f"reader errors {len(reader.errors)}, writer retries "
          f"{sum(len(w.errors) for w in writers)}; write pause at the leader kill "
          f"{leader_pause:.2f}s, at the follower kill {follower_pause:.2f}s")
    assert counts.get(OK, 0) >= 90 and result is not None
    assert leader_pause < 20 and follower_pause < 20


@pytest.mark.parametrize("balancer", ["haproxy", "nginx"], indirect=True)
def test_the_example_balancers_serve_writes_reads_and_links(http_cluster, balancer):
    cluster = http_cluster  # noqa: F841  (started, settled)
    url = balancer.url
    seen = set()
    for i in range(6):  # round robin: several nodes answer, every one of them serves
        r = requests.post(f"{url}/streams/lb", timeout=15, allow_redirects=False,
                          data=json.dumps([{"eventId": str(uuid.uuid4()), "eventType": "T",
                                            "data": {"i": i}}]),
                          headers={"Content-Type": EVENTS})
        assert r.status_code == 201 and r.headers["Location"] == f"{url}/streams/lb/{i}"
        seen.add(requests.get(f"{url}/info", timeout=5).json()["state"])

    def feed():  # a follower serves what it has (it may lag the leader by a heartbeat)
        r = requests.get(f"{url}/streams/lb", headers={"Accept": ATOM}, timeout=10)
        assert r.status_code == 200 and r.json()["id"] == f"{url}/streams/lb"
        return len(r.json()["entries"]) == 6
    wait_until(feed, 10, "every node serving the 6 events")
    assert requests.get(f"{url}/gossip", timeout=5).status_code == 200
    assert "leader" in seen
