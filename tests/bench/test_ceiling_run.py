"""``esnode bench --ceiling``: the stack ceiling's RESULT lines become per-phase figures that
line up with esnode's phase names, and esnode's figures read as ratios of them."""

from __future__ import annotations

import subprocess

import pytest

from esnode.bench import ceiling_run


def test_the_ceilings_results_map_onto_esnodes_phases(monkeypatch):
    out = "\n".join([
        'RESULT {"name": "stack_zmq_lmdb.a_single.ops_per_s", "value": 2000.0, "unit": "ops/s"}',
        'RESULT {"name": "stack_zmq_lmdb.a_single.p50", "value": 0.5, "unit": "ms"}',
        'RESULT {"name": "stack_zmq_lmdb.a_single.p99", "value": 0.9, "unit": "ms"}',
        'RESULT {"name": "stack_zmq_lmdb.c_batch100.ops_per_s", "value": 700.0, "unit": "ops/s"}',
        'RESULT {"name": "stack_zmq_lmdb.c_batch100.events_per_s", "value": 70000.0, '
        '"unit": "events/s"}',
        'RESULT {"name": "stack_zmq_lmdb.d_read_all.events_per_s", "value": 1e6, '
        '"unit": "events/s"}',
        "some other line",
    ])

    def fake_run(*args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout=out, stderr="")

    monkeypatch.setattr(ceiling_run.subprocess, "run", fake_run)
    figures = ceiling_run.run_ceiling(1.0)
    assert figures == {
        "a single": {"events_per_s": 2000.0, "p50_ms": 0.5, "p99_ms": 0.9},
        "c batch 100": {"events_per_s": 70000.0, "p50_ms": None, "p99_ms": None},
        "d scan $all": {"events_per_s": 1e6, "p50_ms": None, "p99_ms": None},
    }
    esnode = [{"phase": "a single", "events_per_s": 1000.0, "p50_ms": 0.8},
              {"phase": "g catch-up subscription", "events_per_s": 5.0, "p50_ms": None},
              {"phase": "d scan $all", "events_per_s": 4e5, "p50_ms": 2.0}]
    rows = ceiling_run.ratios(esnode, [figures, figures])
    assert [(r["phase"], r["ratio"]) for r in rows] == [("a single", 0.5), ("d scan $all", 0.4)]
    assert rows[0]["ceiling_p50_ms"] == 0.5 and rows[1]["ceiling_p50_ms"] is None


def test_a_failing_ceiling_is_reported_not_read_as_zero(monkeypatch):
    def fake_run(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, stdout="", stderr="Address already in use")

    monkeypatch.setattr(ceiling_run.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="Address already in use"):
        ceiling_run.run_ceiling(1.0)
