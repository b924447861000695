"""A persistent subscription group through leader failures, with REAL processes: three
consumer processes on one group, a writer, the leader SIGKILLed twice and a follower
restarted. Every event written is acked by some consumer; no event whose ack was confirmed
is delivered again afterwards (to any consumer); nothing is parked (no consumer nacks and
the retry limit is high)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from esnode.client import EsError, connect, new_event
from tests.client.test_real_cluster import real_cluster
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def facts(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


CUT_OFF = ("outcome_unknown", "connection_lost", "stale", "unavailable", "timeout")
"""Ack failures that say the consumer's connection was gone: what it handed out had been
received before the cut (the node delivered it earlier), not delivered again."""


def check_group_history(files: list[Path], written: set[int]) -> dict:
    """The checker rule: every written event acked; no event delivered by the node after
    its ack was confirmed. A delivery handed out after a confirmed ack of the same event
    counts unless that consumer's own ack of it then failed because its connection was
    gone (it had received the event before the cut)."""
    all_facts = [f for path in files for f in facts(path)]
    acked: dict[int, float] = {}
    for f in all_facts:
        if "acked" in f:
            acked[f["acked"]] = min(acked.get(f["acked"], f["t"]), f["t"])
    again = []
    for path in files:
        mine = facts(path)
        for i, f in enumerate(mine):
            p = f.get("delivered")
            if p is None or p not in acked or f["t"] <= acked[p]:
                continue
            outcome = next((g for g in mine[i + 1:] if g.get("acked") == p
                            or g.get("ack_failed") == p), {})
            if not str(outcome.get("error", "")).startswith(CUT_OFF):
                again.append((f, outcome))
    assert not again, f"delivered after a confirmed ack: {again[:5]}"
    missing = written - set(acked)
    assert not missing, f"{len(missing)} written event(s) never acked: {sorted(missing)[:10]}"
    errors = [f for f in all_facts if "error" in f and "ack_failed" not in f]
    assert not errors, f"consumers failed: {errors}"
    redelivered = sum(1 for f in all_facts if "delivered" in f and f["retry"] > 0)
    return {"acked": len(acked), "redelivered": redelivered,
            "unconfirmed_acks": sum(1 for f in all_facts if "ack_failed" in f)}


def test_a_group_keeps_every_confirmed_ack_through_leader_kills(tmp_path):
    stream = f"jobs-{uuid.uuid4().hex[:8]}"
    with real_cluster(tmp_path) as cluster:
        connection = "esnode://" + ",".join(cluster.endpoints)
        with connect(connection) as admin:
            admin.create_group(stream, "workers", start_from="start", message_timeout=3.0,
                               max_retry_count=1000)
            wait_for(lambda: admin.group_info(stream, "workers").live, 10,
                     message="the group to run")
        files = [tmp_path / f"consumer{i}.jsonl" for i in range(3)]
        consumers = [subprocess.Popen(
            [sys.executable, "-m", "tests.cluster.group_consumer", connection, stream,
             "workers", str(f)], cwd=ROOT, stdin=subprocess.DEVNULL,
            stderr=open(tmp_path / f"consumer{i}.stderr", "wb")) for i, f in enumerate(files)]
        written: set[int] = set()
        unknown: list[str] = []
        stop = threading.Event()

        def write() -> None:
            with connect(connection) as client:
                n = 0
                while not stop.is_set():
                    events = [new_event("Job", {"n": n + i}) for i in range(5)]
                    try:
                        done = client.append(stream, events)
                        written.update(range(done.first_version, done.last_version + 1))
                    except EsError as exc:
                        unknown.append(f"{exc.code}: {exc}")
                    n += 5
                    stop.wait(0.02)

        writer = threading.Thread(target=write, name="group-writer", daemon=True)
        try:
            wait_for(lambda: all(facts(f) for f in files), 20, message="consumers to start")
            writer.start()

            def acked() -> int:
                return sum(1 for f in files for x in facts(f) if "acked" in x)

            for round_ in range(2):
                wait_for(lambda: acked() >= 50 * (round_ + 1), 30, message="acks")
                leader = cluster.wait_for_leader(timeout=20, settled=True)
                cluster.kill(leader)
                cluster.wait_for_leader(timeout=20, among=[n for n in cluster.names
                                                          if n != leader])
                cluster.start(leader)
            leader = cluster.wait_for_leader(timeout=20, settled=True)
            follower = next(n for n in cluster.names if n != leader)
            cluster.stop(follower)
            cluster.start(follower)
            wait_for(lambda: acked() >= 300, 60, message="more acks after the faults")
            stop.set()
            writer.join(timeout=30)
            # every event in the stream (written, or unknown and made) must be acked
            with connect(connection) as reader:
                in_log = {e.position: e.version for e in reader.iter_stream(stream)}
            positions = set(in_log)

            def all_acked() -> bool:
                done = {x["acked"] for f in files for x in facts(f) if "acked" in x}
                return positions <= done

            wait_for(all_acked, 60, message="every event in the stream to be acked")
        finally:
            stop.set()
            for p in consumers:
                p.terminate()
            for p in consumers:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        summary = check_group_history(files, positions)
        assert {in_log[p] for p in positions} >= written
        with connect(connection) as admin:
            assert admin.group_info(stream, "workers").parked == 0
        print(f"group through 2 leader kills and a follower restart: {summary}; "
              f"{len(unknown)} append(s) with an unknown outcome")
