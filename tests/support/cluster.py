"""``InProcessCluster``: N real nodes (every real actor) in this process, wired to one
in-process network (``inproc.py``), on memory or LMDB stores.

    with InProcessCluster(3, store="lmdb", data_root=tmp_path) as cluster:
        leader = cluster.wait_for_leader()
        cluster.network.isolate(leader.name)
        ...
        cluster.network.recover()
        cluster.wait_converged()

Each node is built by the production composition root (``Node(topology, name, factories)``)
with ``Factories().replace(transport=...)`` pointing at the network; ``overrides`` swaps any
other part (a stub actor class, a store) for every node or for named ones. ``stop()`` (also
on ``__exit__``, also when ``start`` fails half way) stops every node, joins their ticker
threads and the network thread, stops any actor left behind, and then raises if the network
saw an encode/decode failure or a handler error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pykka

from esnode.actors.node import Factories, Node
from esnode.core.config import Topology, parse_topology
from esnode.core.states import VNodeState
from esnode.core.types import EventData, RecordedEvent
from tests.conftest import wait_for
from tests.support.inproc import FaultyNetwork, InProcClient, InProcNetwork

FAST_TIMERS = {"election_timeout_ms": 500, "heartbeat_interval_ms": 50,
               "gossip_interval_ms": 100, "gossip_timeout_ms": 500, "dead_member_ms": 1000,
               "write_timeout_ms": 2000}
"""Timers scaled down so that elections and step-downs take a fraction of a second."""


def cluster_topology(size: int, store: str = "memory", data_root: Path | str | None = None,
                     timers: dict | None = None, priorities: dict[str, int] | None = None,
                     ) -> Topology:
    """Nodes ``n1``..``nN``; the ports are never bound (the network is in-process)."""
    if store not in ("memory", "lmdb"):
        raise ValueError(f"store is 'memory' or 'lmdb', not {store!r}")
    if store == "lmdb" and data_root is None:
        raise ValueError("an LMDB cluster needs data_root (e.g. tmp_path)")
    nodes = []
    for i in range(1, size + 1):
        name = f"n{i}"
        entry: dict[str, Any] = {
            "name": name, "internal_host": "inproc", "internal_port": 10000 + i,
            "external_host": "inproc", "external_port": 20000 + i,
            "priority": (priorities or {}).get(name, 0)}
        if store == "lmdb":
            entry["data_dir"] = str(Path(data_root) / name)
        else:
            entry["mem_db"] = True
        nodes.append(entry)
    return parse_topology({"cluster": {"name": "inproc", "size": size},
                           "timers": {**FAST_TIMERS, **(timers or {})}, "nodes": nodes})


def new_event(event_id: str | None = None, event_type: str = "Tested",
              data: bytes = b'{"a":1}') -> EventData:
    import uuid

    return EventData(event_id or str(uuid.uuid4()), event_type, data, b"", True)


class InProcessCluster:
    def __init__(self, size: int = 3, *, store: str = "memory",
                 data_root: Path | str | None = None, seed: int = 0,
                 network: InProcNetwork | None = None, timers: dict | None = None,
                 priorities: dict[str, int] | None = None,
                 overrides: dict[str, Any] | None = None,
                 node_overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self.topology = cluster_topology(size, store, data_root, timers, priorities)
        self.names = [n.name for n in self.topology.nodes]
        self.network = network if network is not None else FaultyNetwork(seed)
        base = Factories().replace(transport=self.network.transport_factory(),
                                   **(overrides or {}))
        self.factories = {name: base.replace(**(node_overrides or {}).get(name, {}))
                          for name in self.names}
        self.nodes: dict[str, Node] = {}
        self._stopped = False

    # --- lifecycle -----------------------------------------------------------------------
    def start(self, names: Iterable[str] | None = None) -> InProcessCluster:
        try:
            for name in names or self.names:
                self.start_node(name)
        except BaseException:
            self.stop(check=False)
            raise
        return self

    def start_node(self, name: str) -> Node:
        """Start (or restart, on the same store directory) node ``name``."""
        old = self.nodes.get(name)
        if old is not None and not old.stopped:
            raise RuntimeError(f"{name} is running")
        node = Node(self.topology, name, self.factories[name])
        self.nodes[name] = node  # before start: stop() cleans up a half-started node too
        node.start()
        return node

    def stop_node(self, name: str) -> None:
        node = self.nodes[name]
        node.stop()
        ticker = getattr(node, "_ticker", None)
        if ticker is not None:
            ticker.join(timeout=5)

    def __enter__(self) -> InProcessCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(check=exc[0] is None)

    def stop(self, check: bool = True) -> None:
        """Stop everything (idempotent). With ``check``, then raise what the network saw."""
        if self._stopped:
            return
        self._stopped = True
        errors: list[str] = []
        stoppers = [threading.Thread(target=self._stop_quietly, args=(name, errors),
                                     name=f"stop-{name}") for name in self.nodes]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(timeout=30)
        self.network.close()
        # A node whose start failed half way, or whose stop timed out, may leave actors.
        for node in self.nodes.values():
            for attr in ("gateway", "storage", "subscriptions"):
                ref = getattr(node, attr, None)
                if ref is not None and ref.is_alive():
                    ref.stop(timeout=5)
        alive = [t.name for t in stoppers if t.is_alive()]
        if alive:
            errors.append(f"node stop did not finish: {alive}")
        if check:
            self.network.check()
            if errors:
                raise AssertionError("; ".join(errors))

    def _stop_quietly(self, name: str, errors: list[str]) -> None:
        try:
            self.stop_node(name)
        except Exception as exc:
            errors.append(f"stopping {name}: {exc!r}")

    # --- who is who ------------------------------------------------------------------------
    def running(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.stopped]

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def leaders(self, among: Iterable[str] | None = None) -> list[Node]:
        names = set(among) if among is not None else set(self.nodes)
        return [n for n in self.running()
                if n.config.name in names and n.state is VNodeState.Leader]

    def leader(self, among: Iterable[str] | None = None) -> Node | None:
        """The one node in Leader state (None when there is none or more than one)."""
        leaders = self.leaders(among)
        return leaders[0] if len(leaders) == 1 else None

    def followers(self, leader: Node | None = None) -> list[Node]:
        leader = leader or self.leader()
        return [n for n in self.running() if n is not leader]

    def wait_for_leader(self, timeout: float = 10.0, among: Iterable[str] | None = None,
                        followers: int | None = None) -> Node:
        """Wait for exactly one Leader among ``among`` (default: every running node) that the
        others of ``among`` follow (``followers`` of them at least; default all)."""
        names = list(among) if among is not None else [n.config.name for n in self.running()]
        want = len(names) - 1 if followers is None else followers

        def settled() -> Node | None:
            leader = self.leader(names)
            if leader is None:
                return None
            following = [n for n in names if n != leader.config.name
                         and self.nodes[n].state is VNodeState.Follower
                         and self.nodes[n].board.leader == leader.config.name]
            return leader if len(following) >= want else None

        return wait_for(settled, timeout, message=f"one leader followed by {want} of {names}")

    def client(self, name: str, principal: Any = None) -> InProcClient:
        return self.network.client(name, principal)

    # --- what each node holds --------------------------------------------------------------
    def raw_log(self, name: str) -> list[tuple[int, bytes]]:
        store = self.nodes[name].store
        records: list[tuple[int, bytes]] = []
        after = -1
        while True:
            page = store.read_raw(after, 1000, 1 << 24)
            if not page:
                return records
            records += page
            after = page[-1][0]

    def events(self, name: str) -> list[RecordedEvent]:
        """Every committed event of node ``name`` in ``$all`` order (its own store)."""
        node = self.nodes[name]
        events: list[RecordedEvent] = []
        position = 0
        while True:
            page = node.store.read_all(position, 1000,
                                       up_to_position=node.board.readable_position)
            events += page.events
            if page.is_end or not page.events:
                return events
            position = page.next_position

    def converged(self, names: Iterable[str] | None = None) -> bool:
        """Same log on every node, all of it readable (committed)."""
        nodes = [self.nodes[n] for n in names] if names is not None else self.running()
        positions = {(n.store.writer_position, n.board.readable_position) for n in nodes}
        if len(positions) != 1:
            return False
        writer, readable = positions.pop()
        if writer != readable:
            return False
        logs = [self.raw_log(n.config.name) for n in nodes]
        return all(log == logs[0] for log in logs[1:])

    def wait_converged(self, timeout: float = 15.0, names: Iterable[str] | None = None) -> None:
        def describe() -> str:
            return ", ".join(f"{n.config.name}: {n.state.name} term {n.board.term} writer "
                             f"{n.store.writer_position} readable "
                             f"{n.board.readable_position}" for n in self.running())
        try:
            wait_for(lambda: self.converged(names), timeout, message="identical committed logs")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {describe()}") from None
