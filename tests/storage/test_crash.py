"""SIGKILL at random moments loses no acknowledged append and leaves no partial batch."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from esnode.core.types import ANY, AppendRequest
from esnode.storage import LmdbEventStore
from tests.storage.conftest import NOW, events

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _run_and_kill(path: str, rng: random.Random, acked: list[dict]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tests.storage.crash_writer", path],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: queue.Queue = queue.Queue()
    thread = threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True)
    thread.start()
    try:
        want = rng.randint(1, 600)  # kill after this many acknowledged batches
        got, ready = 0, False
        deadline = time.monotonic() + 20
        while got < want:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"writer too slow: {got} acks (stderr: {proc.stderr.read()})")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"writer exited early: {proc.wait()} {proc.stderr.read()}")
            record = json.loads(line)
            if "ready" in record:
                ready = True
                continue
            assert ready
            acked.append(record)
            got += 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        thread.join(10)
        proc.stdout.close()
        proc.stderr.close()
    # lines printed before the kill but not yet read are acknowledged too
    while True:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            break
        if line is not None and line.endswith("\n"):
            acked.append(json.loads(line))


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_append(tmp_path):
    path = str(tmp_path / "db")
    rng = random.Random()
    acked: list[dict] = []
    deadline = time.monotonic() + 12
    rounds = 0
    while rounds < 3 or (time.monotonic() < deadline and rounds < 30):
        _run_and_kill(path, rng, acked)
        rounds += 1
    store = LmdbEventStore(path)
    try:
        by_id, batches = {}, Counter()
        position = 0
        while True:
            page = store.read_all(position, 5000)
            for rec in page.events:
                assert rec.event_id not in by_id, "an event is stored twice"
                by_id[rec.event_id] = rec
                meta = json.loads(rec.metadata)
                batches[(meta["batch"], meta["size"])] += 1
            if page.is_end:
                break
            position = page.next_position
        assert [r.position for r in sorted(by_id.values(), key=lambda r: r.position)] == \
            list(range(len(by_id)))
        for (tag, size), count in batches.items():
            assert count == size, f"partial batch {tag}: {count} of {size} events"
        for ack in acked:
            recs = [by_id.get(i) for i in ack["ids"]]
            assert all(r is not None for r in recs), f"acknowledged append lost: {ack}"
            assert [r.version for r in recs] == list(range(ack["first"],
                                                           ack["first"] + len(recs)))
            assert recs[-1].position == ack["position"] and recs[0].stream == ack["stream"]
        # every stream is gapless, and retries after the crashes stay idempotent
        for s in {a["stream"] for a in acked}:
            versions = [e.version for e in store.read_stream(s, 0, 1_000_000).events]
            assert versions == list(range(len(versions)))
        for ack in rng.sample(acked, min(20, len(acked))):
            retry = AppendRequest(ack["stream"], ANY, tuple(
                e._replace(event_id=i) for e, i in zip(events(len(ack["ids"])), ack["ids"])))
            assert store.write([retry], NOW)[0].idempotent
    finally:
        store.close()
    assert rounds >= 3 and len(acked) > 0
    print(f"{rounds} kills, {len(acked)} acknowledged appends checked")
