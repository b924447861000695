"""Backup (LMDB's compacting copy) of an open store, and restore into an empty folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from esnode.storage import LmdbEventStore
from esnode.storage.backup import BackupError, backup, restore
from esnode.storage.scavenge import Scavenger
from tests.storage.conftest import NOW
from tests.storage.scavenge_fixture import build


def everything(store) -> list:
    return store.read_all(0, 100_000).events


def test_a_backup_of_an_open_store_restores_identically_and_compacts(tmp_path):
    store = LmdbEventStore(str(tmp_path / "db"))
    try:
        build(store)
        scavenger = Scavenger(store, lambda: NOW)
        scavenger.start()
        scavenger.wait(30)
        # Another process (LMDB opens an environment once per process), the store open here.
        made = subprocess.run([sys.executable, "-m", "esnode.cli", "backup", "--db",
                               str(tmp_path / "db"), "--to", str(tmp_path / "backup"),
                               "--json"], capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        first = json.loads(made.stdout)
        assert first["backup_bytes"] < first["source_bytes"]  # free pages left out
        restore(tmp_path / "backup", tmp_path / "restored")
        again = LmdbEventStore(str(tmp_path / "restored"))
        try:
            assert everything(again) == everything(store)
            assert again.commit_position == store.commit_position
        finally:
            again.close()
        with pytest.raises(BackupError, match="not empty"):
            restore(tmp_path / "backup", tmp_path / "restored")
        with pytest.raises(BackupError, match="not empty"):
            backup(tmp_path / "restored", tmp_path / "backup")
        with pytest.raises(BackupError, match="not a backup"):
            restore(tmp_path / "nothing", tmp_path / "new")
    finally:
        store.close()
