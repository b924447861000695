"""Node logging: one readable line per state change or client-visible error, to stderr and to
``<log_dir>/<node>.log``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-5s [{node}] %(name)s: %(message)s"


def setup_logging(node_name: str, log_dir: str = "", level: int = logging.INFO) -> list[logging.Handler]:
    """Attach stderr and file handlers for one node; returns them so they can be removed."""
    formatter = logging.Formatter(FORMAT.format(node=node_name))
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(log_dir) / f"{node_name}.log"))
    root = logging.getLogger("esnode")
    root.setLevel(level)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    return handlers


def remove_logging(handlers: list[logging.Handler]) -> None:
    root = logging.getLogger("esnode")
    for handler in handlers:
        root.removeHandler(handler)
        handler.close()
