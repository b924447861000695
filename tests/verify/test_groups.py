"""Rule G1 of ``esnode verify`` (verify/groups.py): the checker on hand-made records, and a
real group run (writer + two consumers) against an in-process node."""

from __future__ import annotations

from esnode.actors.node import Node
from esnode.verify.groups import G1, GroupRun, check_group, save_facts
from tests.conftest import single_node_topology, wait_for


def test_g1_flags_a_delivery_after_a_confirmed_ack_and_missing_acks():
    ok = [{"t": 1, "consumer": 0, "delivered": 5}, {"t": 2, "consumer": 0, "acked": 5},
          # received before the cut, handed out late, its ack failed with the connection
          {"t": 3, "consumer": 1, "delivered": 5},
          {"t": 4, "consumer": 1, "ack_failed": 5, "error": "outcome_unknown: gone"}]
    assert check_group(ok, {5}) == []
    bad = ok + [{"t": 5, "consumer": 2, "delivered": 5},
                {"t": 6, "consumer": 2, "ack_failed": 5, "error": "bad_request: not in flight"}]
    [v] = check_group(bad, {5})
    assert v.invariant == G1 and "after its ack was confirmed" in v.message
    [v] = check_group(ok, {5, 6})
    assert "never processed" in v.message and v.evidence["positions"] == [6]
    unknown = ok + [{"t": 7, "consumer": 2, "delivered": 6},
                    {"t": 8, "consumer": 2, "ack_failed": 6, "error": "outcome_unknown: x"}]
    assert check_group(unknown, {5, 6}) == []  # may have been made durable: processed
    assert check_group([], set(), ["consumer 0: boom"])[0].message.endswith("boom")


def test_a_group_run_against_a_node_passes_g1():
    node = Node(single_node_topology(), "node1").start()
    try:
        run = GroupRun(node.transport.external_endpoint, "t1", consumers=2)
        run.start()
        wait_for(lambda: len(run.acked()) >= 50, 10, message="50 acks")
        positions = run.finish(settle_timeout=20)
        assert len(positions) >= 50 and check_group(run.facts, positions, run.errors) == []
        assert {f["consumer"] for f in run.facts if "acked" in f} == {0, 1}
    finally:
        node.stop()


def test_a_saved_history_keeps_the_group_facts_and_check_rechecks_g1(tmp_path):
    """``esnode verify --check`` finds G1's facts in the saved history: a clean one passes,
    one with a delivery after a confirmed ack fails with exit code 1 and names G1."""
    from typer.testing import CliRunner

    from esnode.cli.main import app
    from esnode.verify.groups import check_saved
    from esnode.verify.history import History, load, save

    class Run:  # what save_facts reads of a finished GroupRun
        stream, group, errors = "s", "g", []
        facts = [{"t": 1, "consumer": 0, "delivered": 5}, {"t": 2, "consumer": 0, "acked": 5}]

    history = History([], {})
    save_facts(history.meta, Run, {5})
    assert check_saved(History([], {}).meta) is None and check_saved(history.meta) == []
    runner = CliRunner()
    clean = tmp_path / "clean.jsonl"
    save(history, None, clean)
    assert check_saved(load(clean)[0].meta) == []
    done = runner.invoke(app, ["verify", "--check", str(clean)])
    assert done.exit_code == 0, done.output
    assert G1 in done.output
    Run.facts = Run.facts + [{"t": 3, "consumer": 1, "delivered": 5},
                             {"t": 4, "consumer": 1, "acked": 5}]
    save_facts(history.meta, Run, {5})
    bad = tmp_path / "bad.jsonl"
    save(history, None, bad)
    done = runner.invoke(app, ["verify", "--check", str(bad)])
    assert done.exit_code == 1, done.output
    assert G1 in done.output and "after its ack was confirmed" in done.output
