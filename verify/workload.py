"""The verification workload: concurrent clients against a running cluster, every operation
recorded in a ``History``, then the final state of every node.

- ``clients`` worker threads, each with its own ``esnode.client`` connection (every other one
  with ``requires_leader``): appends with the exact expected version they last saw to a few
  **shared** streams (so they conflict: I4), appends with ``any`` to a **private** stream,
  reads of those streams from the end, and now and then a read of ``$all`` from the end.
  Deletes and metadata: appends to, metadata changes (``$maxCount`` and a unique key) of,
  soft deletes of and reads (stream and metadata) of a few shared **state** streams, and
  appends to a private **doomed** stream that is tombstoned now and then (then a new one
  starts), so that a read showing a delete or metadata that never committed is caught (I11).
  A write whose outcome is unknown is retried with the same request (an append with the same
  events: same ids, same expected version) a few times; the op records every attempt as one
  logical operation.
- ``subscribers`` threads subscribe to ``$all`` from where it stood at the start and record
  every delivery.
- a sampler asks every node for ``cluster_info`` every ``sample_interval`` seconds (I8).
- after ``duration`` seconds (and the in-flight operations), the final state: every node's
  ``$all`` from the start position and every stream of the run, read directly from each
  node (its external endpoint from ``cluster_info``) until all agree or ``converge_timeout``
  passes.

Every stream of a run is named ``verify-<run id>-...``, so a run can go against a cluster that
holds other data (and other runs).
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from esnode.client import (
    ANY,
    NO_STREAM,
    BadRequest,
    Client,
    EsError,
    IdempotencyConflict,
    NoQuorum,
    NotLeader,
    NotReady,
    OutcomeUnknown,
    Retrying,
    StorageFull,
    StreamDeleted,
    StreamNotFound,
    TooLarge,
    WrongExpectedVersion,
    connect,
    new_event,
)
from esnode.verify.history import (
    APPEND,
    CLUSTER_INFO,
    DELETE,
    FAIL,
    METADATA_PREFIX,
    OK,
    READ_ALL,
    READ_METADATA,
    READ_STREAM,
    SET_METADATA,
    SUBSCRIBE,
    UNKNOWN,
    WRITES,
    FinalState,
    History,
    Op,
    compact,
)

DEFINITE = (WrongExpectedVersion, StreamDeleted, StreamNotFound, IdempotencyConflict,
            BadRequest, TooLarge, StorageFull, NotLeader, NotReady, NoQuorum)
"""Errors that say the write was not made (when no earlier attempt had an unknown outcome)."""
UNKNOWN_RETRIES = 2
"""Further attempts (same events) after the client raised an unknown outcome."""
RETRY_GRACE = 10.0
"""Seconds after the end of the run during which unknown outcomes are still retried."""
READ_PAGE = 20
"""Events a stream read asks for (backwards from the end)."""
MAX_COUNTS = (2, 3, 5)
"""``$maxCount`` values the metadata changes set (small: the cut shows in every read)."""


def error_code(exc: BaseException) -> str:
    return getattr(exc, "code", None) or type(exc).__name__


class _Writer:
    """One client's writes (appends, deletes, metadata changes), each one logical operation of
    the history, retried with the same request while its outcome is unknown."""

    def __init__(self, history: History, client: Client, process: str, requires_leader: bool,
                 saw_unknown: list[bool], hard_stop: Callable[[], float]) -> None:
        self.history, self.client, self.process = history, client, process
        self.requires_leader, self.saw_unknown, self.hard_stop = (requires_leader, saw_unknown,
                                                                  hard_stop)

    def write(self, kind: str, stream: str, expected: int = ANY, *, events: list = (),
              metadata: dict | None = None, tombstone: bool = False) -> Any:
        """The result, the definite error (an exception instance), or None (unknown)."""
        op = self.history.invoke(self.process, kind, stream=stream, expected_version=expected,
                                 event_ids=[e.event_id for e in events], metadata=metadata,
                                 tombstone=tombstone, requires_leader=self.requires_leader)
        client = self.client
        unknown = False
        while True:
            op.attempts += 1
            self.saw_unknown[0] = False
            try:
                if kind == APPEND:
                    result = client.append(stream, events, expected)
                elif kind == DELETE:
                    result = client.delete(stream, expected, tombstone)
                else:
                    result = client.set_metadata(stream, metadata, expected)
            except DEFINITE as exc:
                unknown = unknown or self.saw_unknown[0]
                History.end(op, UNKNOWN if unknown else FAIL, error=error_code(exc),
                            node=client.node)
                return exc
            except (OutcomeUnknown, EsError) as exc:
                unknown = True
                if op.attempts <= UNKNOWN_RETRIES and time.monotonic() < self.hard_stop():
                    continue  # the same request: an append keeps its event ids
                History.end(op, UNKNOWN, error=error_code(exc), node=client.node)
                return None
            if kind == DELETE:
                History.end(op, OK, position=result.position, node=client.node)
            else:
                History.end(op, OK, first_version=result.first_version,
                            last_version=result.last_version, position=result.position,
                            idempotent=result.idempotent, node=client.node)
            return result


class Workload:
    def __init__(self, target: str, duration: float = 10.0, clients: int = 4, *,
                 shared_streams: int = 3, state_streams: int = 2, subscribers: int = 1,
                 sample_interval: float = 0.25,
                 converge_timeout: float = 20.0, seed: int | None = None,
                 client_options: dict | None = None) -> None:
        self.target = target
        self.duration = duration
        self.clients = max(1, clients)
        self.subscribers = subscribers
        self.sample_interval = sample_interval
        self.converge_timeout = converge_timeout
        self.options = dict(client_options or {})
        self.seed = random.randrange(2**32) if seed is None else seed
        self.run_id = uuid.uuid4().hex[:8]
        self.shared = [f"verify-{self.run_id}-shared-{k}" for k in range(shared_streams)]
        self.state = [f"verify-{self.run_id}-state-{k}" for k in range(state_streams)]
        self.history = History(meta={"target": target, "run_id": self.run_id,
                                     "duration": duration, "clients": self.clients,
                                     "seed": self.seed})
        self.start_position = -1
        self.started_at: float | None = None
        self.phase = "connecting"
        self._stop = threading.Event()
        self._stopped_subs = threading.Event()
        self._hard_stop = float("inf")
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._endpoints: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()

    # --- running ------------------------------------------------------------------------------
    def run(self, on_progress: Callable[[dict], Any] | None = None,
            progress_interval: float = 1.0) -> tuple[History, FinalState]:
        """Run the workload for ``duration`` seconds, then read the final state."""
        with self._connect() as probe:
            info = probe.cluster_info()
            self._learn(info)
            head = probe.read_all(-1, 1, backwards=True).events
            self.start_position = head[0].position if head else -1
        self.history.meta["start_position"] = self.start_position
        self.started_at = time.monotonic()
        self.phase = "running"
        threads = [threading.Thread(target=self._worker, args=(i,), name=f"verify-c{i}",
                                    daemon=True) for i in range(self.clients)]
        threads += [threading.Thread(target=self._subscriber, args=(i,),
                                     name=f"verify-sub{i}", daemon=True)
                    for i in range(self.subscribers)]
        threads.append(threading.Thread(target=self._sampler, name="verify-sampler",
                                        daemon=True))
        self._threads = threads
        for t in threads:
            t.start()
        end = self.started_at + self.duration
        try:
            while (left := end - time.monotonic()) > 0 and not self._stop.is_set():
                self._stop.wait(min(progress_interval, left))
                if on_progress is not None:
                    on_progress(self.progress())
        finally:
            self.phase = "finishing"
            self._hard_stop = time.monotonic() + RETRY_GRACE
            self._stop.set()
            for t in threads[:self.clients]:
                t.join(timeout=120)
            self._stopped_subs.set()
            for t in threads[self.clients:]:
                t.join(timeout=30)
        if on_progress is not None:
            on_progress(self.progress())
        self.phase = "reading the final state"
        if on_progress is not None:
            on_progress(self.progress())
        final = self.read_final()
        self.phase = "done"
        return self.history, final

    def stop(self) -> None:
        """End the run early (the final state is still read)."""
        self._stop.set()

    def progress(self) -> dict:
        counts = self.history.counts()
        ops = sum(counts.values())
        elapsed = time.monotonic() - self.started_at if self.started_at else 0.0
        appends = self.history.counts(APPEND)
        return {"phase": self.phase, "elapsed": elapsed, "ops": ops,
                "ops_per_s": ops / elapsed if elapsed > 0 else 0.0, **counts,
                "appends_ok": appends[OK], "appends_fail": appends[FAIL],
                "appends_unknown": appends[UNKNOWN]}

    # --- clients --------------------------------------------------------------------------------
    def _connect(self, **options: Any) -> Client:
        return connect(self.target, **{**self.options, **options})

    def _learn(self, info: Any) -> None:
        with self._lock:
            for m in info.members:
                if m.external:
                    self._endpoints[m.name] = m.external

    def _worker(self, index: int) -> None:
        process = f"c{index}"
        rng = random.Random(f"{self.seed}-{index}")
        requires_leader = index % 2 == 0
        private = f"verify-{self.run_id}-c{index}"
        doomed = [0, 0]  # [generation, appends to it]
        known: dict[str, int] = {s: NO_STREAM for s in self.shared}
        saw_unknown = [False]

        def on_notice(notice: object) -> None:
            if isinstance(notice, Retrying) and not isinstance(notice.error, DEFINITE):
                saw_unknown[0] = True

        client: Client | None = None
        try:
            while not self._stop.is_set():
                if client is None:
                    try:
                        client = self._connect(requires_leader=requires_leader)
                        client.on_event(on_notice)
                    except EsError:
                        self._stop.wait(0.2)
                        continue
                    w = _Writer(self.history, client, process, requires_leader, saw_unknown,
                                self._hard_stop_at)
                doomed_stream = f"{private}-doomed-{doomed[0]}"
                # reads also go to the doomed stream before (tombstoned, unless that failed)
                doomed_read = f"{private}-doomed-{max(0, doomed[0] - rng.randint(0, 1))}"
                roll = rng.random()
                if roll < 0.40:
                    stream = rng.choice(self.shared)
                    self._append(w, stream, known[stream], rng, known)
                elif roll < 0.55:
                    self._append(w, private, ANY, rng, known)
                elif roll < 0.70:
                    self._read_stream(client, process, rng.choice(
                        self.shared + self.state + [private, doomed_read]), requires_leader)
                elif roll < 0.74:
                    self._read_all(client, process, requires_leader)
                elif roll < 0.82:
                    self._append(w, rng.choice(self.state), ANY, rng, known)
                elif roll < 0.86:
                    meta = {"$maxCount": rng.choice(MAX_COUNTS), "verify": f"{process}-{roll}"}
                    w.write(SET_METADATA, rng.choice(self.state), metadata=meta)
                elif roll < 0.88:
                    w.write(DELETE, rng.choice(self.state))
                elif roll < 0.93:
                    self._read_metadata(client, process, rng.choice(
                        self.state + [doomed_read]), requires_leader)
                elif roll < 0.98 or not doomed[1]:
                    doomed[1] += 1
                    self._append(w, doomed_stream, ANY, rng, known)
                else:
                    w.write(DELETE, doomed_stream, tombstone=True)
                    doomed[:] = [doomed[0] + 1, 0]
        except BaseException as exc:  # noqa: BLE001 - reported in the history meta
            self._errors.append(exc)
            self.history.meta.setdefault("errors", []).append(f"{process}: {exc!r}")
        finally:
            if client is not None:
                client.close()

    def _hard_stop_at(self) -> float:
        return self._hard_stop

    def _append(self, w: _Writer, stream: str, expected: int, rng: random.Random,
                known: dict[str, int]) -> None:
        events = [new_event("VerifyEvent", {"by": w.process, "k": k})
                  for k in range(rng.choice((1, 1, 1, 2, 3)))]
        result = w.write(APPEND, stream, expected, events=events)
        if stream in known:
            if isinstance(result, WrongExpectedVersion):
                known[stream] = result.current
            elif result is not None and not isinstance(result, BaseException):
                known[stream] = result.last_version

    def _read_stream(self, client: Client, process: str, stream: str,
                     requires_leader: bool) -> None:
        self._read(client, process, READ_STREAM, stream, requires_leader,
                   lambda: client.read_stream(stream, -1, READ_PAGE, backwards=True),
                   lambda page: {"last_version": page.last_version,
                                 "events": [compact(e) for e in page.events]},
                   max_count=READ_PAGE)

    def _read_metadata(self, client: Client, process: str, stream: str,
                       requires_leader: bool) -> None:
        self._read(client, process, READ_METADATA, stream, requires_leader,
                   lambda: client.get_metadata(stream),
                   lambda meta: {"last_version": meta.version, "metadata": meta.raw})

    def _read(self, client: Client, process: str, kind: str, stream: str,
              requires_leader: bool, call: Callable[[], Any],
              results: Callable[[Any], dict], **inputs: Any) -> None:
        """One read of a stream: a stream that is not found or deleted is an answer too (ok,
        with its code as the error); any other error fails the read."""
        op = self.history.invoke(process, kind, stream=stream, requires_leader=requires_leader,
                                 **inputs)
        try:
            answer = call()
        except (StreamNotFound, StreamDeleted) as exc:
            History.end(op, OK, error=error_code(exc), node=client.node,
                        last_version=-1 if isinstance(exc, StreamNotFound) else None)
        except EsError as exc:
            History.end(op, FAIL, error=error_code(exc), node=client.node)
        else:
            History.end(op, OK, node=client.node, **results(answer))

    def _read_all(self, client: Client, process: str, requires_leader: bool) -> None:
        op = self.history.invoke(process, READ_ALL, from_position=-1,
                                 requires_leader=requires_leader)
        try:
            page = client.read_all(-1, 20, backwards=True)
        except EsError as exc:
            History.end(op, FAIL, error=error_code(exc), node=client.node)
        else:
            History.end(op, OK, node=client.node, events=[compact(e) for e in page.events])

    def _subscriber(self, index: int) -> None:
        process = f"sub{index}"
        start = self.start_position
        client: Client | None = None
        try:
            while not self._stopped_subs.is_set():
                op = self.history.invoke(process, SUBSCRIBE, stream="$all", from_position=start)
                try:
                    if client is None:
                        client = self._connect()
                    sub = client.subscribe("$all", from_="start" if start < 0 else start)
                except EsError as exc:
                    History.end(op, FAIL, error=error_code(exc))
                    self._stopped_subs.wait(0.2)
                    continue
                events = op.events
                try:
                    while not self._stopped_subs.is_set():
                        event = sub.get(timeout=0.1)
                        if event is not None:
                            events.append(compact(event))
                            start = event.position
                except EsError as exc:
                    History.end(op, FAIL, error=error_code(exc), node=client.node)
                    continue
                finally:
                    sub.close()
                History.end(op, OK, node=client.node)
        except BaseException as exc:  # noqa: BLE001
            self._errors.append(exc)
            self.history.meta.setdefault("errors", []).append(f"{process}: {exc!r}")
        finally:
            if client is not None:
                client.close()

    def _sampler(self) -> None:
        direct: dict[str, Client] = {}
        try:
            while not self._stopped_subs.is_set():
                with self._lock:
                    endpoints = dict(self._endpoints)
                for name, (host, port) in endpoints.items():
                    op = self.history.invoke("sampler", CLUSTER_INFO, node=name)
                    try:
                        if name not in direct:
                            direct[name] = connect(f"tcp://{host}:{port}", timeout=0.5,
                                                   max_retries=0, gossip_timeout=0.5,
                                                   discovery_attempts=1)
                        info = direct[name].cluster_info()
                    except EsError as exc:
                        History.end(op, FAIL, error=error_code(exc))
                        stale = direct.pop(name, None)
                        if stale is not None:
                            stale.close()
                        continue
                    self._learn(info)
                    History.end(op, OK, info={
                        "node": info.node, "state": info.state, "leader": info.leader,
                        "members": [[m.name, m.state, m.epoch, m.alive]
                                    for m in info.members]})
                self._stopped_subs.wait(self.sample_interval)
        finally:
            for c in direct.values():
                c.close()

    # --- the final state ---------------------------------------------------------------------
    def run_streams(self) -> list[str]:
        return sorted({op.stream for op in self.history if op.kind in WRITES})

    def changed_streams(self) -> list[str]:
        """Streams the run deleted or gave metadata."""
        return sorted({op.stream for op in self.history if op.kind in (DELETE, SET_METADATA)})

    def read_final(self) -> FinalState:
        """Read every node's ``$all`` (from the start position) and every stream of the run,
        again and again until every node answers with the same ``$all`` or
        ``converge_timeout`` passes."""
        first = max(0, self.start_position)
        streams = self.run_streams()
        changed = self.changed_streams()
        started = time.monotonic()
        direct: dict[str, Client] = {}
        wait = threading.Event()
        try:
            while True:
                with self._lock:
                    endpoints = dict(self._endpoints)
                state = FinalState(from_position=first, deadline=self.converge_timeout)
                for name, (host, port) in sorted(endpoints.items()):
                    try:
                        if name not in direct:
                            direct[name] = connect(f"tcp://{host}:{port}", timeout=2,
                                                   max_retries=1, gossip_timeout=1,
                                                   discovery_attempts=2)
                        c = direct[name]
                        log = [compact(e) for e in c.iter_all(first, page_size=2000)]
                        reads = {}
                        for stream in streams:
                            try:
                                reads[stream] = [compact(e) for e in
                                                 c.iter_stream(stream, page_size=2000)]
                            except (StreamNotFound, StreamDeleted):
                                reads[stream] = []
                        metadata = {stream: metadata_records(c, stream) for stream in changed}
                    except EsError as exc:
                        state.unreachable[name] = f"{error_code(exc)}: {exc}"
                        stale = direct.pop(name, None)
                        if stale is not None:
                            stale.close()
                        continue
                    state.logs[name], state.streams[name] = log, reads
                    state.metadata[name] = metadata
                keys = {tuple((e.event_id, e.position) for e in log)
                        for log in state.logs.values()}
                elapsed = time.monotonic() - started
                if len(keys) <= 1 and state.logs and not state.unreachable:
                    state.converged_after = elapsed
                    return state
                if elapsed > self.converge_timeout:
                    state.converged_after = elapsed if len(keys) <= 1 and state.logs else None
                    return state
                wait.wait(0.2)  # polling the nodes, not synchronizing with them
        finally:
            for c in direct.values():
                c.close()


def metadata_records(client: Client, stream: str) -> list[list]:
    """``[[version, metadata], ...]``: every record of ``stream``'s metadata stream."""
    try:
        return [[e.version, json.loads(e.data)] for e in
                client.iter_stream(METADATA_PREFIX + stream, page_size=2000)]
    except StreamNotFound:
        return []
