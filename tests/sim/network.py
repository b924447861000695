"""A simulated network in the style of etcd-raft's test ``network``: loss, duplication,
delay (exponential, so messages reorder), and partitions with ``cut``/``isolate``/``recover``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class SimNetwork:
    rng: random.Random
    loss: float = 0.0
    duplicate: float = 0.0
    min_delay: float = 0.0005
    mean_delay: float = 0.002
    blocked: set[tuple[str, str]] = field(default_factory=set)

    def cut(self, a: str, b: str) -> None:
        self.blocked |= {(a, b), (b, a)}

    def cut_one_way(self, src: str, dst: str) -> None:
        self.blocked.add((src, dst))

    def isolate(self, node: str, members) -> None:
        for other in members:
            if other != node:
                self.cut(node, other)

    def recover(self) -> None:
        self.blocked.clear()

    def calm(self) -> None:
        """No more loss or duplication (liveness phase)."""
        self.loss = self.duplicate = 0.0

    def delays(self, src: str, dst: str) -> list[float]:
        """When copies of one message arrive (none if dropped)."""
        if (src, dst) in self.blocked or self.rng.random() < self.loss:
            return []
        copies = 2 if self.rng.random() < self.duplicate else 1
        return [self.min_delay + self.rng.expovariate(1 / self.mean_delay) for _ in range(copies)]
