"""A persistent-subscription group consumer in its own process, for failover tests:
``python -m tests.cluster.group_consumer CONNECTION STREAM GROUP OUTFILE``.

It writes one JSON line per fact, with the system-wide monotonic time (comparable across
processes on one host): ``{"t", "delivered": position, "retry": n}`` when an event arrives,
``{"t", "acked": position}`` once its ack was CONFIRMED (the call returned), and
``{"t", "ack_failed": position, "error"}`` when the ack was not confirmed. SIGTERM stops it.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

from esnode.client import EsError, connect


def main(connection: str, stream: str, group: str, outfile: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with open(outfile, "a", buffering=1) as out, connect(connection) as client:
        def note(**fact) -> None:
            out.write(json.dumps({"t": time.monotonic(), **fact}) + "\n")

        sub = client.subscribe_group(stream, group, window=20)
        note(started=True)
        while not stop.is_set():
            try:
                item = sub.get(0.2)
            except EsError as exc:
                note(error=f"{exc.code}: {exc}")
                return
            if item is None:
                continue
            note(delivered=item.position, retry=item.retry_count, id=item.event.event_id)
            try:
                confirmed = sub.ack(item)
            except EsError as exc:
                note(ack_failed=item.position, error=f"{exc.code}: {exc}")
                continue
            if confirmed:
                note(acked=item.position)
            else:  # delivered before a reconnection: the group delivers it again
                note(ack_failed=item.position, error="stale")


if __name__ == "__main__":
    main(*sys.argv[1:5])
