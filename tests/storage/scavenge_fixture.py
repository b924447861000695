"""A store with everything scavenge reclaims, and what it must keep: shared by the in-process
tests and the process that is killed mid-scavenge (``python -m tests.storage.scavenge_fixture
PATH``)."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid

from esnode.core.types import ANY, AppendRequest, DeleteRequest, EventData
from esnode.storage.rules import encode_record
from tests.storage.conftest import NOW

BIG = 3000
"""Bytes of data per event: more than half an LMDB page, so each event has its own overflow
page and the pages scavenge frees can be counted."""

HOUR_US = 3_600 * 1_000_000


def big_event(i: int, stream: str) -> EventData:
    data = json.dumps({"i": i, "stream": stream, "pad": "x" * BIG}).encode()
    return EventData(str(uuid.uuid5(uuid.NAMESPACE_URL, f"{stream}/{i}")), "Big", data,
                     b'{"m":1}', True)


def build(store) -> dict[str, int]:
    """Write the streams; returns how many events of each scavenge should take."""
    def write(stream: str, n: int, now: int = NOW) -> None:
        for start in range(0, n, 50):
            store.write([AppendRequest(stream, ANY, tuple(
                big_event(i, stream) for i in range(start, min(n, start + 50))))], now)

    write("capped", 60)
    store.set_metadata("capped", ANY, {"$maxCount": 10}, NOW)
    write("soft", 30)
    store.write([DeleteRequest("soft", ANY, False)], NOW)
    write("tomb", 20)
    store.write([DeleteRequest("tomb", ANY, True)], NOW)
    write("truncated", 25)
    store.set_metadata("truncated", ANY, {"$tb": 5}, NOW)
    write("old", 10, now=NOW - HOUR_US)
    store.set_metadata("old", ANY, {"$maxAge": 60}, NOW)
    write("live", 40)
    store.set_commit_position(store.writer_position)
    return {"capped": 50, "soft": 30, "tomb": 20, "truncated": 5, "old": 10, "live": 0}


def stub_saving(store, counts: dict[str, int]) -> int:
    """Bytes the stubs of the expected records save, computed from the records themselves."""
    saved, position = 0, 0
    seen = {stream: 0 for stream in counts}
    while True:
        page = store.read_all(position, 1000)
        for rec in page.events:
            if seen.get(rec.stream, counts.get(rec.stream, 0)) < counts.get(rec.stream, 0):
                seen[rec.stream] += 1
                saved += len(encode_record(rec)) - len(encode_record(
                    rec._replace(data=None, metadata=b"")))
        if page.is_end:
            return saved
        position = page.next_position


def main(path: str) -> None:
    """Build the store, then scavenge in small slow chunks while appending, reporting each
    acknowledged append and the scavenge's progress on stdout, until killed."""
    from esnode.storage import LmdbEventStore
    from esnode.storage.scavenge import Scavenger

    said = threading.Lock()

    def say(doc: dict) -> None:  # one whole line at a time, from either thread
        with said:
            sys.stdout.write(json.dumps(doc) + "\n")
            sys.stdout.flush()

    store = LmdbEventStore(path)
    build(store)
    say({"ready": store.commit_position})
    scavenger = Scavenger(store, lambda: NOW, pause_s=0.02, chunk=5)

    def appender() -> None:
        for i in range(10**6):
            store.write([AppendRequest("during", i - 1, (big_event(i, "during"),))], NOW)
            say({"acked": i})
            time.sleep(0.002)  # a steady client; a tight loop can starve the scavenge of
            # LMDB's write lock (it is not fair)

    scavenger.start()
    threading.Thread(target=appender, daemon=True).start()
    while True:
        p = scavenger.wait(0.05)
        say({"next": p.next_position, "state": p.state})


if __name__ == "__main__":
    main(sys.argv[1])
