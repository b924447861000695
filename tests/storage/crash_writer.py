"""Child process of the SIGKILL test: appends batches forever and prints each acknowledged
one (after ``write`` returned, i.e. after the fsync) as a JSON line on stdout.

usage: python -m tests.storage.crash_writer PATH
"""

from __future__ import annotations

import json
import random
import sys
import uuid

from esnode.core.types import ANY, AppendRequest, AppendSuccess, EventData
from esnode.storage import LmdbEventStore


def main(path: str) -> None:
    store = LmdbEventStore(path, map_size=256 * 1024)  # small: growth happens under the kills
    store.ids_merge_threshold = 200  # and merges of the event-id index, in steps that a kill
    store.ids_merge_step = 1  # can interrupt
    rng = random.Random()
    print(json.dumps({"ready": store.writer_position}), flush=True)
    while True:
        requests = []
        for _ in range(rng.randint(1, 8)):
            size = rng.randint(1, 6)
            tag = str(uuid.uuid4())
            evs = tuple(EventData(str(uuid.uuid4()), "T", b"x" * rng.randint(0, 3000),
                                  json.dumps({"batch": tag, "size": size}).encode(), True)
                        for _ in range(size))
            requests.append(AppendRequest(f"s{rng.randint(0, 9)}", ANY, evs))
        outcomes = store.write(requests, 1)
        for request, outcome in zip(requests, outcomes):
            assert isinstance(outcome, AppendSuccess), outcome
            print(json.dumps({"stream": request.stream, "ids": [e.event_id for e in request.events],
                              "first": outcome.first_version, "position": outcome.position}))
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
