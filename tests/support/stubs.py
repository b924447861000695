"""Actor doubles that tests swap in through ``Factories`` (``overrides={"storage_actor":
gated_storage(gate)}``): no product code knows about them."""

from __future__ import annotations

import threading

from esnode.actors.messages import ClusterInbound
from esnode.actors.storage import StorageActor
from esnode.core.cluster_messages import ReplicateRecords


class FsyncGate:
    """Holds back replicated writes on closed nodes until opened (or 10 s, so a failing test
    cannot hang its teardown)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.closed: set[str] = set()
        self.waiting: set[str] = set()

    def close(self, *names: str) -> None:
        with self.cond:
            self.closed |= set(names)

    def open(self, *names: str) -> None:
        with self.cond:
            self.closed -= set(names) if names else set(self.closed)
            self.cond.notify_all()

    def pass_through(self, name: str) -> None:
        with self.cond:
            if name in self.closed:
                self.waiting.add(name)
                self.cond.notify_all()
                self.cond.wait_for(lambda: name not in self.closed, timeout=10)
                self.waiting.discard(name)

    def held(self) -> set[str]:
        with self.cond:
            return set(self.waiting)


def gated_storage(gate: FsyncGate) -> type[StorageActor]:
    """The real storage actor, except that records replicated to it wait at ``gate`` first:
    a follower whose disk has not answered yet."""

    class GatedStorageActor(StorageActor):
        def __init__(self, store, transport, clock, board, topology, node_name, **kw) -> None:
            super().__init__(store, transport, clock, board, topology, node_name, **kw)
            self.gate_name = node_name

        def on_receive(self, message: object) -> None:
            if type(message) is ClusterInbound and any(
                    type(m) is ReplicateRecords for _, m in message.messages):
                self.gate.pass_through(self.gate_name)
            super().on_receive(message)

    GatedStorageActor.gate = gate
    return GatedStorageActor
