"""A steady writer through the client library, recording each append as ok / fail / unknown in
a ``History`` for the checker (tests/cluster/checker.py).

One thread, one append at a time (every ``interval`` seconds), single-event appends with fresh
ids, expected version "any", over a few streams. Classification:

- ``AppendSuccess`` -> ok, at its position and versions;
- ``NoQuorum`` / ``NotLeader`` / ``NotReady`` / a plain ``Unavailable`` -> fail, unless an
  earlier attempt of the same append (the client retries with the same ids) had an unknown
  outcome: the client's ``Retrying`` notices say so, and then it is unknown;
- any ``OutcomeUnknown`` (``WriteTimeout``, ``WriteUnavailable``, server ``outcome_unknown``)
  or ``ConnectionLost`` -> unknown;
- any other error -> unknown and unexpected (the checker reports it); an exception that is
  not an ``EsError`` stops the writer and is raised by ``stop``.
"""

from __future__ import annotations

import threading
import time
import uuid

from tests.cluster.checker import FAIL, OK, UNEXPECTED, UNKNOWN, History, Op
from tests.cluster.harness import wait_until


class ClientWriter:
    """Appends through ``client`` (the test's own: it stays open) recording in ``history``;
    ``cluster`` (optional) says which nodes ran when a wait gives up."""

    def __init__(self, client, history: History, streams: int = 3, prefix: str = "cw",
                 interval: float = 0.0, cluster=None) -> None:
        self.client = client
        self.history = history
        self.cluster = cluster
        self.interval = interval
        self.streams = [f"{prefix}-{i}" for i in range(streams)]
        self._retry_unknown = False
        self._lock = threading.Lock()
        self._unsubscribe = client.on_event(self._notice)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="client-writer", daemon=True)
        self.errors: list[BaseException] = []

    def _notice(self, notice: object) -> None:
        from esnode.client import ConnectionLost, OutcomeUnknown

        error = getattr(notice, "error", None)
        if type(notice).__name__ == "Retrying" and isinstance(error, (OutcomeUnknown,
                                                                      ConnectionLost)):
            with self._lock:
                self._retry_unknown = True

    def __enter__(self) -> ClientWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=30)
        self._unsubscribe()
        assert not self._thread.is_alive(), "the client writer is stuck in an append"
        if self.errors:
            raise self.errors[0]

    def _run(self) -> None:
        from esnode.client import (
            ConnectionLost,
            EsError,
            NoQuorum,
            NotLeader,
            NotReady,
            OutcomeUnknown,
            Unavailable,
            new_event,
        )

        i = 0
        try:
            while not self._stop.is_set():
                stream = self.streams[i % len(self.streams)]
                i += 1
                eid = str(uuid.uuid4())
                event = new_event("Tested", b"{}", id=eid)
                with self._lock:
                    self._retry_unknown = False
                op = self.history.append(stream, [eid], "client")
                try:
                    ok = self.client.append(stream, [event])
                except OutcomeUnknown as exc:  # before Unavailable: WriteUnavailable is both
                    self._complete(op, UNKNOWN, exc)
                except ConnectionLost as exc:
                    self._complete(op, UNKNOWN, exc)
                except (NoQuorum, NotLeader, NotReady, Unavailable) as exc:
                    with self._lock:
                        earlier_unknown = self._retry_unknown
                    self._complete(op, UNKNOWN if earlier_unknown else FAIL, exc,
                                   " (an earlier attempt was unknown)" if earlier_unknown else "")
                    self._stop.wait(0.02)
                except EsError as exc:
                    self._complete(op, UNKNOWN, exc, prefix=f"{UNEXPECTED} ")
                else:
                    History.end(op, OK, position=ok.position, first_version=ok.first_version,
                                last_version=ok.last_version, idempotent=ok.idempotent)
                if self.interval:
                    self._stop.wait(self.interval)  # the pace of the load
        except BaseException as exc:  # reported by stop()
            self.errors.append(exc)

    @staticmethod
    def _complete(op: Op, outcome: str, exc: BaseException, note: str = "",
                  prefix: str = "") -> None:
        History.end(op, outcome, error=f"{prefix}{getattr(exc, 'code', type(exc).__name__)}: "
                    f"{exc}{note}"[:300])

    # --- progress --------------------------------------------------------------------------
    def acked_since(self, since: float) -> list[Op]:
        return [op for op in self.history.of(OK) if op.t_invoke >= since]

    def wait_acked(self, more: int, since: float | None = None, timeout: float = 15.0) -> float:
        """Wait for ``more`` appends invoked after ``since`` (default now) to be acknowledged;
        returns when the first of them was acknowledged (monotonic)."""
        since = time.monotonic() if since is None else since
        wait_until(lambda: len(self.acked_since(since)) >= more, timeout,
                   f"{more} client appends acknowledged (outcomes so far "
                   f"{self.history.counts()})", self.cluster)
        return min(op.t_complete for op in self.acked_since(since))

    def failures(self) -> list[Op]:
        return self.history.of(FAIL)
