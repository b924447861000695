"""A node's data folder is backed up while the node runs and writes go on; after a crash
its folder is replaced by the backup, and the node, started, catches up from the cluster."""

from __future__ import annotations

import shutil

from typer.testing import CliRunner

from esnode.cli.main import app
from tests.cluster.harness import new_event


def esnode(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def test_backup_while_running_then_restore_and_catch_up(cluster, tmp_path):
    leader = cluster.wait_for_leader(timeout=20, settled=True)
    for i in range(40):
        assert cluster.append(leader, f"before-{i % 4}", [new_event()])[0] == "ok"
    victim = next(n for n in cluster.names if n != leader)
    cluster.wait_converged(cluster.names, at_least=40)
    data = cluster.dir / "data" / victim
    esnode("backup", "--db", str(data), "--to", str(tmp_path / "backup"))  # node running
    for i in range(40):
        assert cluster.append(leader, f"after-{i % 4}", [new_event()])[0] == "ok"

    cluster.kill(victim)
    shutil.rmtree(data)  # the disk is lost
    esnode("restore", "--from", str(tmp_path / "backup"), "--db", str(data))
    cluster.start(victim)
    logs = cluster.wait_converged(cluster.names, at_least=80)
    assert len({len(log) for log in logs.values()}) == 1
    assert cluster.read_stream(victim, "after-3") == cluster.read_stream(leader, "after-3")
