"""``esnode verify``'s persistent subscription group: a writer and competing consumers on one
group of the run, and the checker rule G1 (docs/subscriptions.md, "The guarantee"):

- G1  every event of the group's stream was processed by some consumer (acked, or its ack's
      outcome was unknown: it may have been made durable, and then is rightly never
      delivered again), and no event was delivered by the node after its ack had been
      confirmed. (A consumer that hands out an
      event after another consumer's confirmed ack is not a violation when its own ack of it
      then failed because its connection was gone: it had received the event before the
      cut.)

Kept apart from the I1-I10 workload (verify/workload.py) so each can change alone. Its
facts are saved with the history (``meta["group"]``), so ``esnode verify --check`` checks G1
again.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from esnode.verify.checker import Violation

G1 = "G1"
DESCRIPTION = ("group: every event of its stream processed, none delivered again after its "
               "ack was confirmed")
CUT_OFF = ("outcome_unknown", "connection_lost", "stale", "unavailable", "timeout",
           "not_leader", "not_ready", "no_quorum")
"""Ack failures that mean the consumer's connection was gone (or its node no longer leads):
an ack is never sent again elsewhere, so these come from the connection it was made on."""


class GroupRun:
    """A writer appending to ``stream`` for ``duration`` seconds (as long as the rest of the
    run: the log must be quiet when the final state is read) and ``consumers`` threads (a
    connection each) in one group on it, acking everything; ``facts`` records what each saw,
    with monotonic times."""

    def __init__(self, target: str, run_id: str, consumers: int = 2,
                 options: dict | None = None, duration: float = 10.0) -> None:
        self.target, self.consumers, self.duration = target, consumers, duration
        self.options = dict(options or {})
        self.stream, self.group = f"verify-{run_id}-group", "verify"
        self.facts: list[dict] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop_writing = threading.Event()
        self._stop_consuming = threading.Event()
        self._threads: list[threading.Thread] = []

    def _note(self, **fact: Any) -> None:
        with self._lock:
            self.facts.append({"t": time.monotonic(), **fact})

    def start(self) -> None:
        from esnode.client import connect

        with connect(self.target, **self.options) as client:
            client.create_group(self.stream, self.group, start_from="start",
                                message_timeout=5.0, max_retry_count=1000)
        self._threads = [threading.Thread(target=self._write, name="verify-group-writer",
                                          daemon=True)]
        self._threads += [threading.Thread(target=self._consume, args=(k,), daemon=True,
                                           name=f"verify-group-c{k}")
                          for k in range(self.consumers)]
        for t in self._threads:
            t.start()

    def _write(self) -> None:
        from esnode.client import EsError, connect, new_event

        until = time.monotonic() + self.duration
        with connect(self.target, **self.options) as client:
            n = 0
            while not self._stop_writing.is_set() and time.monotonic() < until:
                try:
                    client.append(self.stream, [new_event("GroupJob", {"n": n + i})
                                                for i in range(5)])
                except EsError:
                    pass  # unknown or failed: the final stream read is the truth
                n += 5
                self._stop_writing.wait(0.02)

    def _consume(self, k: int) -> None:
        from esnode.client import EsError, connect

        try:
            with connect(self.target, **self.options) as client, \
                    client.subscribe_group(self.stream, self.group, window=20) as sub:
                while not self._stop_consuming.is_set():
                    item = sub.get(0.2)
                    if item is None:
                        continue
                    self._note(consumer=k, delivered=item.position, retry=item.retry_count)
                    try:
                        confirmed = sub.ack(item)
                    except EsError as exc:
                        self._note(consumer=k, ack_failed=item.position,
                                   error=f"{exc.code}: {exc}")
                        continue
                    if confirmed:
                        self._note(consumer=k, acked=item.position)
                    else:
                        self._note(consumer=k, ack_failed=item.position, error="stale")
        except EsError as exc:
            self.errors.append(f"consumer {k}: {exc.code}: {exc}")

    def finish(self, settle_timeout: float = 30.0) -> set[int]:
        """Stop writing, wait (up to ``settle_timeout``) for every event of the stream to be
        acked, stop the consumers; returns the positions of the stream's events."""
        from esnode.client import EsError, connect

        self._stop_writing.set()
        self._threads[0].join(timeout=60)
        positions: set[int] = set()
        deadline = time.monotonic() + settle_timeout
        while time.monotonic() < deadline:
            try:
                with connect(self.target, **self.options) as client:
                    positions = {e.position for e in client.iter_stream(self.stream)}
                break
            except EsError:
                time.sleep(0.5)
        while time.monotonic() < deadline and not positions <= self.acked():
            time.sleep(0.1)
        self._stop_consuming.set()
        for t in self._threads[1:]:
            t.join(timeout=30)
        return positions

    def stop(self) -> None:
        """Stop writer and consumers at once (a run cut short); idempotent."""
        self._stop_writing.set()
        self._stop_consuming.set()
        for t in self._threads:
            t.join(timeout=30)

    def acked(self) -> set[int]:
        with self._lock:
            return {f["acked"] for f in self.facts if "acked" in f}


def check_group(facts: list[dict], positions: set[int],
                errors: list[str] = ()) -> list[Violation]:
    """Rule G1 over what the consumers recorded (``facts``) and the stream's final events."""
    violations = [Violation(G1, f"a group consumer failed: {e}") for e in errors]
    acked: dict[int, float] = {}
    for f in facts:
        if "acked" in f:
            acked[f["acked"]] = min(acked.get(f["acked"], f["t"]), f["t"])
    by_consumer: dict[Any, list[dict]] = {}
    for f in facts:
        by_consumer.setdefault(f.get("consumer"), []).append(f)
    for mine in by_consumer.values():
        for i, f in enumerate(mine):
            p = f.get("delivered")
            if p is None or p not in acked or f["t"] <= acked[p]:
                continue
            outcome = next((g for g in mine[i + 1:]
                            if g.get("acked") == p or g.get("ack_failed") == p), {})
            if not str(outcome.get("error", "")).startswith(CUT_OFF):
                violations.append(Violation(G1, f"event at position {p} delivered after its "
                                                "ack was confirmed",
                                            {"delivery": f, "then": outcome,
                                             "acked_at": acked[p]}))
    # An ack whose outcome is unknown (the leader died before answering) may have been made
    # durable: then the group rightly never delivers the event again. It was processed.
    maybe = {f["ack_failed"] for f in facts if "ack_failed" in f
             and str(f.get("error", "")).startswith("outcome_unknown")}
    missing = sorted(positions - set(acked) - maybe)
    if missing:
        violations.append(Violation(G1, f"{len(missing)} event(s) of the group's stream never "
                                        "processed (acked, or ack outcome unknown)",
                                    {"positions": missing[:20],
                                     "facts": [f for f in facts if missing[0] in (
                                         f.get("delivered"), f.get("acked"),
                                         f.get("ack_failed"))]}))
    return violations


META = "group"
"""The key of the group's facts in a saved history's meta record."""


def save_facts(meta: dict, run: GroupRun, positions: set[int]) -> None:
    """Keep what G1 needs in a history's ``meta`` (saved with it)."""
    meta[META] = {"stream": run.stream, "group": run.group, "facts": list(run.facts),
                  "positions": sorted(positions), "errors": list(run.errors)}


def check_saved(meta: dict) -> list[Violation] | None:
    """Rule G1 over the group facts of a history's ``meta``; None when the run had none."""
    saved = meta.get(META)
    if saved is None:
        return None
    return check_group(saved["facts"], set(saved["positions"]), saved["errors"])
