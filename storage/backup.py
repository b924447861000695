"""Backup and restore of a node's data directory, while the node runs.

A backup is LMDB's own copy with compaction (``mdb_env_copy2`` with ``MDB_CP_COMPACT``), made
from a read transaction in another process: it is one consistent snapshot of the whole
environment (log, indexes, checkpoints), it does not stop the node's writer, and it leaves out
free pages, so it is also how the space scavenge freed gets back to the file system. A restore
puts such a copy in an empty data directory; the node started on it catches up from the
cluster (docs/operations.md).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lmdb

DATA_FILE = "data.mdb"
MAX_DBS = 8


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why."""


def _folders(source: str | os.PathLike, not_data: str, target: str | os.PathLike,
             what: str) -> tuple[Path, Path]:
    """A source folder holding LMDB data, and an empty (created) target folder."""
    source, target = Path(source), Path(target)
    if not (source / DATA_FILE).exists():
        raise BackupError(f"{source} {not_data} ({DATA_FILE} missing)")
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{what} {target} is not empty; give an empty or new folder")
    target.mkdir(parents=True, exist_ok=True)
    return source, target


def backup(data_dir: str | os.PathLike, dest: str | os.PathLike) -> dict:
    """Copy the environment at ``data_dir`` (running or not) to the new folder ``dest``."""
    source, target = _folders(data_dir, "holds no esnode data", dest, "the backup folder")
    env = lmdb.open(str(source), readonly=True, max_dbs=MAX_DBS, lock=True)
    try:
        env.copy(str(target), compact=True)
    finally:
        env.close()
    return {"from": str(source), "to": str(target),
            "source_bytes": (source / DATA_FILE).stat().st_size,
            "backup_bytes": (target / DATA_FILE).stat().st_size}


def restore(backup_dir: str | os.PathLike, data_dir: str | os.PathLike) -> dict:
    """Put the backup at ``backup_dir`` in the empty (or new) ``data_dir`` of a stopped node."""
    source, target = _folders(backup_dir, "is not a backup", data_dir, "the data folder")
    shutil.copyfile(source / DATA_FILE, target / DATA_FILE)
    return {"from": str(source), "to": str(target),
            "bytes": (target / DATA_FILE).stat().st_size}
