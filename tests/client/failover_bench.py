"""Failover pause benchmark (Issue 14): a client with DEFAULT options (seeds = every node)
appends one event every 5 ms to a real 3-node cluster while the leader is SIGKILLed
``--kills`` times (restarted before the next kill); prints each pause (kill -> the end of the
first successful append started after it) and the median.

    .venv/bin/python -m tests.client.failover_bench --kills 5

A measurement, not a test: the figures depend on the machine's load (say so when quoting)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from tests.client.cluster_support import host_port
from tests.client.test_real_cluster import kill_leader_under_load, real_cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="esnode-failover-") as tmp, \
            real_cluster(Path(tmp)) as cluster:
        connection = "esnode://" + ",".join(host_port(e) for e in cluster.endpoints)
        pauses = kill_leader_under_load(cluster, connection, args.kills)
    print(f"failover pauses (ms): {[round(p * 1000) for p in pauses]}; median "
          f"{statistics.median(pauses) * 1000:.0f} ms, worst {max(pauses) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
