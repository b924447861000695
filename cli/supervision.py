"""How ``esnode stop/restart --node`` and ``esnode status`` reach a running supervisor: a small
folder next to the topology file (``.esnode/<topology name>/``) holding ``run.json`` (the
supervisor's and each node's PID) and one request file per asked-for action, which the
supervisor picks up within 0.2 s. Files, not sockets: nothing more to bind or secure, and a
stale folder from a killed supervisor is recognised by its dead PID."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

ACTIONS = ("stop", "restart")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class RunState:
    folder: Path

    @classmethod
    def for_config(cls, config: Path) -> RunState:
        config = Path(config).resolve()
        return cls(config.parent / ".esnode" / config.stem)

    @property
    def _file(self) -> Path:
        return self.folder / "run.json"

    # --- the supervisor's side ---------------------------------------------------------------
    def save(self, supervisor: int, nodes: dict[str, int]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.folder / "run.json.tmp"
        temporary.write_text(json.dumps({"supervisor": supervisor, "nodes": nodes}))
        temporary.replace(self._file)

    def clear_requests(self) -> None:
        for action in ACTIONS:
            for path in self.folder.glob(f"*.{action}"):
                path.unlink(missing_ok=True)

    def take_requests(self) -> list[tuple[str, str]]:
        """``(node, action)`` asked for since the last call, oldest first."""
        if not self.folder.is_dir():
            return []
        found = sorted((p for a in ACTIONS for p in self.folder.glob(f"*.{a}")),
                       key=lambda p: p.stat().st_mtime_ns)
        for path in found:
            path.unlink(missing_ok=True)
        return [(p.stem, p.suffix[1:]) for p in found]

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            shutil.rmtree(self.folder)
            self.folder.parent.rmdir()  # only when no other topology's state is there

    # --- the commands' side ------------------------------------------------------------------
    def load(self) -> dict | None:
        """``{"supervisor": pid, "nodes": {name: pid}}`` of a live supervisor, else None."""
        try:
            state = json.loads(self._file.read_text())
        except (OSError, ValueError):
            return None
        return state if alive(state.get("supervisor", 0)) else None

    def request(self, node: str, action: str) -> None:
        (self.folder / f"{node}.{action}").touch()
