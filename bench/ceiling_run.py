"""The stack ceiling (``bench/ceiling/stack_ceiling.py``) run from ``esnode bench --ceiling``,
interleaved with esnode's runs, so that esnode's figures read as ratios of what the bare
stack does on the same machine at the same time (the only comparison this noisy VM allows)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from esnode.transport.ports import free_port

SCRIPT = Path(__file__).parent / "ceiling" / "stack_ceiling.py"

PHASES = {"a single": "a_single", "b C=32": "b_conc32", "b C=64": "b_conc64",
          "c batch 100": "c_batch100", "d read stream": "d_read_stream",
          "d scan $all": "d_read_all"}
"""esnode's phase name -> the ceiling's (the ceiling has no subscription or HTTP phases)."""


def run_ceiling(seconds: float) -> dict[str, dict[str, float]]:
    """One run of the ceiling (all its phases): per esnode phase, ``events_per_s`` and, for
    the append phases, ``p50_ms`` and ``p99_ms``."""
    with tempfile.TemporaryDirectory(prefix="esnode-ceiling-") as data:
        done = subprocess.run([sys.executable, str(SCRIPT), str(seconds)], cwd=SCRIPT.parent,
                              env={**os.environ, "BENCH_DATA": data,
                                   "STACK_CEILING_ENDPOINT": f"tcp://127.0.0.1:{free_port()}"}, capture_output=True,
                              text=True, timeout=60 + 20 * seconds)
    if done.returncode != 0:
        raise RuntimeError(f"the stack ceiling failed (exit {done.returncode}): "
                           f"{done.stderr.strip()[-500:]}")
    raw: dict[str, dict[str, float]] = {}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            record = json.loads(line[len("RESULT "):])
            _, phase, metric = record["name"].split(".")
            raw.setdefault(phase, {})[metric] = record["value"]
    figures = {}
    for ours, theirs in PHASES.items():
        got = raw.get(theirs, {})
        rate = got.get("events_per_s", got.get("ops_per_s"))
        if rate is not None:
            figures[ours] = {"events_per_s": rate, "p50_ms": got.get("p50"),
                             "p99_ms": got.get("p99")}
    return figures


def ratios(esnode: list[dict], ceiling_runs: list[dict[str, dict[str, float]]]) -> list[dict]:
    """Per phase both products ran: the ceiling's medians and esnode's share of its rate."""
    rows = []
    for mine in esnode:
        runs = [run[mine["phase"]] for run in ceiling_runs if mine["phase"] in run]
        if not runs:
            continue
        rate = statistics.median(r["events_per_s"] for r in runs)
        p50s = [r["p50_ms"] for r in runs if r["p50_ms"] is not None]
        rows.append({"phase": mine["phase"], "esnode_events_per_s": mine["events_per_s"],
                     "ceiling_events_per_s": rate, "ratio": mine["events_per_s"] / rate,
                     "esnode_p50_ms": mine["p50_ms"],
                     "ceiling_p50_ms": statistics.median(p50s) if p50s else None})
    return rows
