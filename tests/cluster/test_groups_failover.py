"""A persistent subscription group through leader failures, with REAL processes: three
consumer processes on one group, a writer, the leader SIGKILLed twice and a follower
restarted. Every event written is processed by some consumer (acked, or acked with an
unknown outcome); no event whose ack was confirmed is delivered again afterwards (to any
consumer); nothing is parked (no consumer nacks and the retry limit is high). The checker
rule is ``esnode verify``'s G1 (verify/groups.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from esnode.client import EsError, connect, new_event
from esnode.verify.groups import check_group

from tests.client.test_real_cluster import real_cluster
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def facts(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def check_group_history(files: list[Path], positions: set[int]) -> dict:
    """Rule G1 (verify/groups.py) over the consumer processes' records."""
    all_facts = [f | {"consumer": i} for i, path in enumerate(files) for f in facts(path)]
    violations = check_group(all_facts, positions,
                             [f["error"] for f in all_facts if "error" in f
                              and "ack_failed" not in f])
    assert not violations, [str(v) for v in violations[:5]]
    return {"acked": sum(1 for f in all_facts if "acked" in f),
            "redelivered": sum(1 for f in all_facts if f.get("retry", 0) > 0),
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

            def all_acked() -> bool:  # or acked with an unknown outcome (rule G1)
                done = {x.get("acked", x.get("ack_failed")) for f in files for x in facts(f)
                        if "acked" in x or str(x.get("error", "")).startswith(
                            "outcome_unknown")}
                return positions <= done

            try:
                wait_for(all_acked, 60, message="every event in the stream to be acked")
            except AssertionError:
                with connect(connection) as admin:
                    info = admin.group_info(stream, "workers")
                missing = check_group([f | {"consumer": i} for i, p in enumerate(files)
                                       for f in facts(p)], positions)
                raise AssertionError(f"{[str(v) for v in missing]} {missing[-1].evidence}; "
                                     f"group {info}") from None
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
