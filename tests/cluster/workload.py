"""A steady stream of appends through chosen nodes, recorded in a ``History``.

One thread per node, each with its own raw DEALER (no client-side retries, so every outcome
is exactly what the node said): single-event appends with fresh event ids, expected version
"any", spread over a few shared streams. A node marked down is skipped until marked up again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from esnode.verify.history import APPEND, compact
from tests.cluster.checker import FAIL, OK, PENDING, UNKNOWN, History, Op
from tests.cluster.harness import Cluster, NoReply, Raw, new_event, wait_until


class Writers:
    def __init__(self, cluster: Cluster, history: History, via: Iterable[str],
                 streams: int = 4, prefix: str = "w", timeout: float | None = None,
                 max_batch: int = 1, big: int = 0):
        self.cluster = cluster
        self.history = history
        self.via = list(via)
        self.streams = [f"{prefix}-{i}" for i in range(streams)]
        # The node answers outcome_unknown within its write timeout; allow some slack.
        self.timeout = timeout or cluster.write_timeout + 2.0
        self._stop = threading.Event()
        self._down: set[str] = set()
        self._threads = [threading.Thread(target=self._run, args=(n,), name=f"writer-{n}",
                                          daemon=True) for n in self.via]
        self.errors: list[BaseException] = []
        self.max_batch = max_batch
        self.big = big  # every 50th append carries this many events (0: never)

    def __enter__(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        assert not any(t.is_alive() for t in self._threads), "a writer thread did not stop"
        if self.errors:
            raise self.errors[0]

    def down(self, name: str) -> None:
        self._down.add(name)

    def up(self, name: str) -> None:
        self._down.discard(name)

    def _run(self, node: str) -> None:
        raw = Raw(self.cluster.external(node))
        i = 0
        try:
            while not self._stop.is_set():
                if node in self._down:
                    self._stop.wait(0.05)
                    continue
                stream = self.streams[i % len(self.streams)]
                i += 1
                size = 1 + i % self.max_batch
                if self.big and i % 50 == 0:
                    size = self.big
                events = [new_event() for _ in range(size)]
                op = self.history.append(stream, [e[0] for e in events], node)
                try:
                    kind, body = raw.call("append", {"stream": stream, "events": events},
                                          timeout=self.timeout, abort=self._stop)
                except NoReply as exc:
                    self.history.complete(op, None, None, str(exc))
                    continue
                if self.history.complete(op, kind, body) == FAIL:
                    self._stop.wait(0.02)  # an election: do not spin
        except BaseException as exc:  # reported by stop()
            self.errors.append(exc)
        finally:
            raw.close()

    # --- waiting on progress -----------------------------------------------------------------
    def acked(self) -> int:
        return len(self.history.of(OK))

    def wait_acked(self, more: int, timeout: float = 15.0, since: float | None = None,
                   via: str | None = None) -> None:
        """Wait for ``more`` further acknowledged appends (invoked after ``since``, a
        monotonic time, and through ``via``, when given)."""
        if via is not None:
            since = time.monotonic() if since is None else since
            wait_until(lambda: sum(1 for op in self.history.of(OK)
                                   if op.t_invoke >= since and op.process == via) >= more,
                       timeout, f"{more} appends through {via} acknowledged", self.cluster)
        elif since is None:
            target = self.acked() + more
            wait_until(lambda: self.acked() >= target, timeout,
                       f"{more} more acknowledged appends", self.cluster)
        else:
            wait_until(lambda: sum(1 for op in self.history.of(OK) if op.t_invoke >= since)
                       >= more, timeout, f"{more} appends acknowledged after the fault",
                       self.cluster)


class Readers:
    """One thread per node reading the newest events of ``$all`` over and over; every event a
    node served is recorded once, in one read op per node of ``history``
    (``History.served``), so the checker proves no node served a record that was later
    truncated (a read past the commit position)."""

    def __init__(self, cluster: Cluster, history: History, via: Iterable[str],
                 timeout: float = 1.0):
        self.cluster = cluster
        self.history = history
        self.via = list(via)
        self.timeout = timeout
        self.reads = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), name=f"reader-{n}",
                                          daemon=True) for n in self.via]
        self._ops: dict[str, Op] = {}

    def seen(self) -> int:
        """Distinct events served, summed over the nodes."""
        return sum(len(op.events) for op in self._ops.values())

    def __enter__(self) -> Readers:
        self._ops = {n: self.history.served(n) for n in self.via}
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        for op in self._ops.values():
            History.end(op, OK, attempts=self.reads)

    def _run(self, node: str) -> None:
        raw = Raw(self.cluster.external(node))
        events, seen = self._ops[node].events, set()
        try:
            while not self._stop.is_set():
                try:
                    kind, body = raw.call("read_all", {"from_position": -1, "backwards": True,
                                                       "max_count": 200},
                                          timeout=self.timeout, abort=self._stop)
                except NoReply:
                    continue
                if kind != "ok":
                    continue
                self.reads += 1
                for e in body["events"]:
                    if e[0] not in seen:
                        seen.add(e[0])
                        events.append(compact(e))
                self._stop.wait(0.005)
        finally:
            raw.close()


def retry_unknown(cluster: Cluster, history: History, node: str) -> list[Op]:
    """Retry every unknown-outcome append through ``node`` with the same event ids; each
    must now succeed (idempotently if it had been written). Updates the ops in place."""
    retried = []
    for op in [op for op in history.of(UNKNOWN) + history.of(PENDING) if op.kind == APPEND]:
        deadline = time.monotonic() + 20
        while True:
            event_list = [new_event(eid) for eid in op.event_ids]
            try:
                kind, body = cluster.append(node, op.stream, event_list)
            except NoReply:
                kind, body = None, None
            if kind == "ok":
                History.complete(op, kind, body)
                retried.append(op)
                break
            assert time.monotonic() < deadline, f"retrying {op!r} on {node}: {kind} {body}"
            time.sleep(0.05)
    return retried
