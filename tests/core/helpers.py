from __future__ import annotations

import random

from esnode.core.cluster_state import CoreConfig, LogView, PersistedState
from esnode.core.effects import Send
from esnode.core.node_core import NodeCore

MEMBERS = ("n1", "n2", "n3")


def config(node: str = "n1", members=MEMBERS, **kw) -> CoreConfig:
    return CoreConfig(node_id=node, members=members, **kw)


def log(durable: int = -1, commit: int = -1, epochs=()) -> LogView:
    return LogView(written=durable, durable=durable, commit=commit, epochs=list(epochs))


def node(name: str = "n1", persisted: PersistedState = PersistedState(), seed: int = 1,
         **kw) -> NodeCore:
    core = NodeCore(config(name, **kw), persisted, random.Random(seed), 0.0)
    core.start(0.0)
    return core


def sent(effects, kind=None) -> list:
    return [(e.to, e.message) for e in effects
            if isinstance(e, Send) and (kind is None or isinstance(e.message, kind))]


def kinds(effects) -> list[str]:
    return [type(e).__name__ for e in effects]
