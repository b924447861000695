"""Issue 9: reads never show what is not committed, deletes and metadata included.

A leader whose followers are gone (SIGKILL: a paused follower would still take the leader's
bytes into its socket buffers and commit them on resume) writes a soft delete, a tombstone and
a metadata change that can never commit. Reads on it must show none of them; once it is killed
and the followers restarted, the new leader shows none of them, and neither does the old leader
once it has rejoined (and truncated them)."""

from __future__ import annotations

import pytest

from esnode.core.types import TRUNCATE_BEFORE_DELETED
from esnode.storage import LmdbEventStore
from tests.cluster.conftest import FAST
from tests.cluster.harness import Cluster, new_event, wait_until

pytestmark = pytest.mark.slow

SOFT, TOMB, META = "gone-soft", "gone-tomb", "capped"
EVENTS = 4


def committed_view(cluster: Cluster, name: str) -> dict:
    """What reads on ``name`` answer for the three streams (raw protocol, exact outcomes)."""
    raw = cluster.raw(name)
    out = {}
    for stream in (SOFT, TOMB, META):
        kind, body = raw.call("read_stream", {"stream": stream, "max_count": 100})
        out[stream] = ([e[2] for e in body["events"]] if kind == "ok" else body["code"])
        kind, body = raw.call("get_metadata", {"stream": stream})
        out[stream + " metadata"] = ((body["version"], body["metadata"]) if kind == "ok"
                                     else body["code"])
    kind, body = raw.call("read_stream", {"stream": META, "from_version": -1, "max_count": 100,
                                          "backwards": True})
    out[META + " backwards"] = [e[2] for e in body["events"]] if kind == "ok" else body["code"]
    return out


def test_uncommitted_deletes_and_metadata_are_never_read(make_cluster):
    cluster = make_cluster(3, **{**FAST, "election_timeout_ms": 1000})
    cluster.start()
    leader = cluster.wait_for_leader(timeout=20, settled=True)
    followers = [n for n in cluster.names if n != leader]
    for stream in (SOFT, TOMB, META):
        kind, body = cluster.append(leader, stream, [new_event() for _ in range(EVENTS)], -1)
        assert kind == "ok", body
    whole = list(range(EVENTS))
    before = {SOFT: whole, SOFT + " metadata": (-1, {}), TOMB: whole,
              TOMB + " metadata": (-1, {}), META: whole, META + " metadata": (-1, {}),
              META + " backwards": whole[::-1]}
    logs = cluster.wait_converged(cluster.names, at_least=3 * EVENTS)
    committed_length = len(logs[leader])
    assert committed_view(cluster, leader) == before

    for name in followers:
        cluster.kill(name)
    raw = cluster.raw(leader)
    # one burst, before the leader notices it lost its majority and steps down
    corrs = [raw.send("delete", {"stream": SOFT, "expected_version": EVENTS - 1}),
             raw.send("delete", {"stream": TOMB, "tombstone": True}),
             raw.send("set_metadata", {"stream": META, "metadata": {"$maxCount": 1, "k": "v"}})]
    replies = raw.collect(corrs, timeout=cluster.write_timeout + 5)
    # never acknowledged: the leader wrote them but no follower can take them
    assert [replies.get(c, ("none", {}))[1].get("code") for c in corrs] == [
        "outcome_unknown"] * 3, replies
    assert committed_view(cluster, leader) == before
    assert len(cluster.read_all(leader)) == committed_length

    cluster.kill(leader)
    store = LmdbEventStore(cluster.dir / "data" / leader)
    try:  # the old leader did write all three, past its commit position
        tail = store.read_all(store.commit_position + 1, 100).events
        assert {(e.stream, e.event_type) for e in tail} >= {
            ("$$" + SOFT, "$metadata"), (TOMB, "$streamDeleted"), ("$$" + META, "$metadata")}
        assert store.get_metadata(SOFT).truncate_before == TRUNCATE_BEFORE_DELETED
    finally:
        store.close()

    cluster.start(*followers)
    new_leader = cluster.wait_for_leader(timeout=20, among=followers)
    for name in followers:
        wait_until(lambda name=name: committed_view(cluster, name) == before, 10,
                   f"{name} serving the committed streams", cluster)
    # the new leader takes writes again: the streams are whole and writable
    kind, body = cluster.append(new_leader, TOMB, [new_event()], EVENTS - 1)
    assert kind == "ok" and body["first_version"] == EVENTS, body

    cluster.start(leader)
    logs = cluster.wait_converged(cluster.names, timeout=30, at_least=committed_length + 1)
    assert not [e for e in logs[leader] if e[1] in ("$$" + SOFT, "$$" + META)
                or e[3] == "$streamDeleted"]
    after = {**before, TOMB: whole + [EVENTS]}
    for name in cluster.names:
        assert committed_view(cluster, name) == after, name
