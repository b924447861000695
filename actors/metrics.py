"""A node's figures, for Prometheus (``prometheus_client``, docs/operations.md) and for
``esnode stats``.

Two kinds: counters and histograms of the write path, taken by ``MeteredStore`` around the
store's ``write``/``write_raw`` (one call per group commit, so the cost is per batch, not
per event, and no actor needs to know); and gauges read from the node at scrape time
(``Node.stats``: state, positions, members, queues, storage, scavenge). Each node has its own
registry, so several nodes in one process (tests) do not mix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from esnode.core.types import AppendRequest, EsError

COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self, stats: Callable[[], dict] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("esnode_write_requests", "Write requests (appends, deletes, "
                                "metadata) the writer decided, by outcome.",
                                ["outcome"], registry=r)
        self.events = Counter("esnode_events_written", "Events written by successful appends "
                              "on this node as leader.", registry=r)
        self.commit_seconds = Histogram("esnode_commit_seconds", "One group commit: the write "
                                        "transaction of a batch, fsync included.",
                                        buckets=COMMIT_BUCKETS, registry=r)
        self.batch = Histogram("esnode_commit_batch_requests", "Write requests per group "
                               "commit.", buckets=BATCH_BUCKETS, registry=r)
        self.replica_seconds = Histogram("esnode_replica_write_seconds", "One batch of "
                                         "replicated records written by a follower, fsync "
                                         "included.", buckets=COMMIT_BUCKETS, registry=r)
        self.replicated = Counter("esnode_replicated_records", "Records written as a "
                                  "follower.", registry=r)
        if stats is not None:
            r.register(NodeCollector(stats))

    def routes(self, app, api) -> None:  # noqa: ARG002 - httpapi's extra_routes signature
        """``GET /metrics`` on the HTTP API (httpapi.api.build_app's ``extra_routes``)."""
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        app.router.add_get("/metrics", metrics)


class MeteredStore:
    """The node's store, with the write path counted and timed; everything else passes
    through unchanged."""

    def __init__(self, store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def write(self, requests, now_us, before_commit=None):
        started = time.perf_counter()
        outcomes = self._store.write(requests, now_us, before_commit)
        m = self._metrics
        m.commit_seconds.observe(time.perf_counter() - started)
        m.batch.observe(len(requests))
        failed = sum(isinstance(o, EsError) for o in outcomes)
        m.requests.labels("ok").inc(len(outcomes) - failed)
        if failed:
            m.requests.labels("error").inc(failed)
        m.events.inc(sum(len(r.events) for r, o in zip(requests, outcomes)
                         if type(r) is AppendRequest and not isinstance(o, EsError)))
        return outcomes

    def write_raw(self, records, commit_position=None):
        started = time.perf_counter()
        self._store.write_raw(records, commit_position)
        if records:
            self._metrics.replica_seconds.observe(time.perf_counter() - started)
            self._metrics.replicated.inc(len(records))


GAUGES = {
    "term": "The node's election term (Event Store's epoch number follows it).",
    "is_leader": "1 on the leader.",
    "writer_position": "Last durable log position on this node.",
    "commit_position": "Last position committed on a majority, as this node knows it.",
    "subscriptions": "Catch-up subscriptions served by this node.",
    "subscriptions_all_lag_max": "Most committed records an $all subscription has yet to "
                                 "be sent.",
    "clients": "Client connections that sent a request in the last minute.",
    "storage_live_bytes": "Bytes of the pages holding the log and its indexes.",
    "storage_file_bytes": "Size of the LMDB data file.",
    "storage_map_bytes": "LMDB map size (grows by doubling).",
    "scavenge_running": "1 while a scavenge runs.",
    "scavenge_percent": "Progress of the current or last scavenge.",
    "scavenge_records": "Records the current or last scavenge reclaimed.",
    "scavenge_bytes_reclaimed": "Bytes the current or last scavenge reclaimed.",
    "gc_frozen_objects": "Objects of the node's start the garbage collector no longer walks "
                         "(gc.freeze() by `esnode run`; 0 for a node inside another program).",
}


class NodeCollector:
    """Gauges read from ``stats()`` (``Node.stats``) at each scrape."""

    def __init__(self, stats: Callable[[], dict]) -> None:
        self._stats = stats

    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        s = self._stats()
        for key, text in GAUGES.items():
            if s.get(key) is not None:
                yield GaugeMetricFamily(f"esnode_{key}", text, value=float(s[key]))
        state = GaugeMetricFamily("esnode_node_state", "1 for the node's current state.",
                                  labels=["state"])
        state.add_metric([s["state"]], 1.0)
        yield state
        queues = GaugeMetricFamily("esnode_queue_depth", "Messages waiting in an actor's "
                                   "inbox.", labels=["actor"])
        for actor, depth in s["queues"].items():
            queues.add_metric([actor], float(depth))
        yield queues
        families = {
            "member_writer_position": "Each member's last durable position, from gossip.",
            "member_alive": "1 while gossip hears from the member.",
            "replication_lag_records": "On the leader: records each member is behind it.",
            "replication_lag_seconds": "On the leader: how long ago it held the first record "
                                       "a member still lacks (0.1 s resolution).",
        }
        for key, text in families.items():
            family = GaugeMetricFamily(f"esnode_{key}", text, labels=["member"])
            for member in s["members"]:
                if member.get(key) is not None:
                    family.add_metric([member["name"]], float(member[key]))
            yield family
