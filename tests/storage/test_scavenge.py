"""Scavenge reclaims exactly what no read can show (deleted, tombstoned, `$tb`, `$maxCount`,
`$maxAge`), online and in chunks, survives SIGKILL mid-way, and changes no position, version
or live event."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from esnode.core.types import ANY, AppendRequest, StreamDeleted, StreamNotFound
from esnode.storage import LmdbEventStore
from esnode.storage.scavenge import Progress, Scavenger, reclaimable
from tests.storage.conftest import NOW
from tests.storage.scavenge_fixture import big_event, build, stub_saving
from tests.storage.test_crash import ROOT


def snapshot(store, encoded: bool = False) -> dict:
    """Everything a client can read: every stream (each version), and `$all`; ``encoded``:
    read as the node reads (pages as stored where no rule hides a record)."""
    streams = {}
    for stream in ("capped", "soft", "tomb", "truncated", "old", "live", "during"):
        try:
            streams[stream] = list(store.read_stream(stream, 0, 10_000, now_us=NOW,
                                                     encoded=encoded).events)
        except (StreamNotFound, StreamDeleted) as exc:
            streams[stream] = type(exc).__name__
    everything, position = [], 0
    while True:
        page = store.read_all(position, 1000, encoded=encoded)
        everything += page.events
        if page.is_end:
            break
        position = page.next_position
    return {"streams": streams, "all": everything}


def run_to_end(store, **options) -> Progress:
    scavenger = Scavenger(store, lambda: NOW, **options)
    scavenger.start()
    p = scavenger.wait(60)
    assert p.state == "done", p
    return p


def test_scavenge_takes_exactly_what_reads_hide_and_changes_nothing_visible(make_store):
    store = make_store()
    expected = build(store)
    saving = stub_saving(store, expected)
    before, live_before = snapshot(store), store.live_bytes()

    p = run_to_end(store, chunk=37)
    assert p.scavenged == sum(expected.values()) and p.bytes_reclaimed == saving
    after = snapshot(store)
    assert snapshot(store, encoded=True) == after  # no scavenged record is sent as stored
    assert after["streams"] == before["streams"]  # every stream read, exactly as before
    # $all: the same records at the same positions, minus the scavenged ones.
    kept = {r.position for r in after["all"]}
    gone = [r for r in before["all"] if r.position not in kept]
    assert [r for r in before["all"] if r.position in kept] == after["all"]
    assert sorted(r.stream for r in gone) == sorted(
        s for s, n in expected.items() for _ in range(n))
    assert store.writer_position == before["all"][-1].position
    freed = live_before - store.live_bytes()
    if isinstance(store, LmdbEventStore):  # one overflow page per scavenged event
        assert freed >= 0.9 * p.scavenged * 4096, (freed, p)
    else:
        assert freed == saving

    # A second scavenge finds nothing; appends and retries behave as before.
    assert run_to_end(store).scavenged == 0
    retry = store.write([AppendRequest("capped", ANY, (big_event(0, "capped"),))], NOW)[0]
    assert retry.idempotent  # a scavenged event's id is still known
    fresh = store.write([AppendRequest("soft", ANY, (big_event(99, "soft2"),))], NOW)[0]
    assert fresh.last_version == 30  # versions continue after the soft delete


def test_the_rule_keeps_metadata_tombstones_and_live_events():
    rec = big_event(0, "s")
    from esnode.core.types import RecordedEvent

    def record(stream, version, created=NOW):
        return RecordedEvent(rec.event_id, stream, version, "T", b"x", b"", True, created, 0)

    assert not reclaimable(record("$$s", 0), 5, False, {"$maxCount": 1}, NOW)
    assert not reclaimable(record("s", 2**63 - 1), 5, True, {}, NOW)
    assert reclaimable(record("s", 3), 5, True, {}, NOW)
    assert reclaimable(record("s", 3), 5, False, {"$maxCount": 2}, NOW)
    assert not reclaimable(record("s", 4), 5, False, {"$maxCount": 2}, NOW)
    assert reclaimable(record("s", 5, NOW - 61_000_000), 5, False, {"$maxAge": 60}, NOW)
    assert not reclaimable(record("s", 5, NOW - 59_000_000), 5, False, {"$maxAge": 60}, NOW)


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(json.loads(line))
    out.put(None)


def test_sigkill_mid_scavenge_then_resume_loses_nothing(tmp_path):
    path = str(tmp_path / "db")
    proc = subprocess.Popen([sys.executable, "-m", "tests.storage.scavenge_fixture", path],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    acked, progress = -1, None
    try:
        deadline = time.monotonic() + 60
        while progress is None or progress["next"] < 60:  # well into the scavenge
            assert time.monotonic() < deadline, "the scavenge did not get far enough"
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, proc.stderr.read()
            acked = line.get("acked", acked)
            if "next" in line:
                progress = line
                assert line["state"] == "running", line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    while (line := lines.get(timeout=10)) is not None:
        acked = line.get("acked", acked)

    # A reference store built the same way (never scavenged) says what every read must give.
    reference = LmdbEventStore(str(tmp_path / "reference"))
    expected = build(reference)
    store = LmdbEventStore(path)
    try:
        scavenger = Scavenger(store, lambda: NOW)
        interrupted = scavenger.progress
        assert interrupted.state == "running" and 0 < interrupted.next_position
        assert interrupted.next_position <= interrupted.end_position
        scavenger.resume()
        p = scavenger.wait(60)
        assert p.state == "done" and p.id == interrupted.id
        assert p.scavenged == sum(expected.values())
        got, want = snapshot(store), snapshot(reference)
        for stream in ("capped", "soft", "tomb", "truncated", "old", "live"):
            assert got["streams"][stream] == want["streams"][stream], stream
        during = got["streams"]["during"]
        assert len(during) >= acked + 1  # every acknowledged append survived
        assert [json.loads(e.data)["i"] for e in during] == list(range(len(during)))
        ref_live = {r.position: r for r in want["all"]}
        for r in got["all"]:
            if r.stream != "during":
                # The same event at the same position (system events have fresh ids).
                assert ref_live[r.position][1:7] == r[1:7]
    finally:
        store.close()
        reference.close()


def test_only_committed_deletes_and_metadata_decide(make_store):
    store = make_store()
    store.write([AppendRequest("s", ANY, tuple(big_event(i, "s") for i in range(20)))], NOW)
    store.set_commit_position(store.writer_position)
    store.set_metadata("s", ANY, {"$maxCount": 1}, NOW)  # written, not committed yet
    assert run_to_end(store).scavenged == 0  # a new leader may still truncate it
    store.set_commit_position(store.writer_position)
    assert run_to_end(store).scavenged == 19
