"""Safety checkers run on every step of the simulation (raft / VOPR style).

* at most one leader per term;
* a leader's commit is held durably by a majority when it claims it;
* committed records are never lost or changed on any node that has them: every node's
  committed prefix equals the canonical committed log (incremental comparison);
* no node's commit position moves backwards (on disk; in memory within one incarnation);
* followers never expose (readable position) beyond what a leader committed;
* every acknowledged client write is in the canonical committed log at its acked position;
  at the end, exactly once.
"""

from __future__ import annotations

from esnode.core.quorum import majority
from esnode.core.states import VNodeState


class Violation(AssertionError):
    pass


class Checker:
    def __init__(self, cluster_size: int):
        self.cluster_size = cluster_size
        self.leaders: dict[int, str] = {}
        self.canonical: list[tuple[int, bytes]] = []
        self.canonical_at: dict[int, bytes] = {}
        self.commit_terms: list[int] = []  # the term of the leader that committed each record
        self.verified: dict[str, int] = {}
        self.commit_seen: dict[str, int] = {}
        self.acked: dict[bytes, int] = {}
        self.elections = 0
        self.max_term = 0

    def fail(self, message: str) -> None:
        raise Violation(message)

    # --- hooks ------------------------------------------------------------------------------------
    def on_state(self, name: str, state: VNodeState, term: int, log) -> None:
        if not state.is_leader_role:
            return
        holder = self.leaders.setdefault(term, name)
        if holder != name:
            self.fail(f"two leaders in term {term}: {holder} and {name}")
        if state is VNodeState.PreLeader:
            self.elections += 1
            self.max_term = max(self.max_term, term)
            # Leader completeness: a leader of term T holds every record committed in terms
            # before T (a stale leader of an older term may lack later commits: it cannot
            # commit anything itself, since a majority has moved on).
            n = next((i for i, t in enumerate(self.commit_terms) if t >= term),
                     len(self.canonical))
            mine = list(zip(log.positions[:min(n, log.synced)], log.data[:min(n, log.synced)]))
            if mine != self.canonical[:len(mine)] or len(mine) < n:
                self.fail(f"{name} elected in term {term} without every committed record "
                          f"(has {len(mine)} of {n} committed records, or different ones)")

    def on_commit(self, name: str, position: int, term: int | None, log, logs: dict) -> None:
        """``term``: the committing leader's term, None for a replica."""
        is_leader = term is not None
        last = self.commit_seen.get(name, -1)
        if position < last:
            self.fail(f"{name}: commit position moved back from {last} to {position}")
        self.commit_seen[name] = position
        k = log.index_after(position)
        if k > log.synced:
            self.fail(f"{name}: commit {position} beyond its durable log {log.writer_position}")
        if is_leader and k > 0:
            tip = (log.positions[k - 1], log.data[k - 1])
            holders = sum(1 for other in logs.values()
                          if other.synced >= k and (other.positions[k - 1], other.data[k - 1]) == tip)
            if holders < majority(self.cluster_size):
                self.fail(f"{name} committed up to {position} but only {holders} node(s) hold "
                          f"it durably (majority is {majority(self.cluster_size)})")
        for i in range(self.verified.get(name, 0), k):
            record = (log.positions[i], log.data[i])
            if i < len(self.canonical):
                if self.canonical[i] != record:
                    self.fail(f"{name}: committed record #{i} is {record}, but the committed "
                              f"log has {self.canonical[i]}")
            elif is_leader:
                self.canonical.append(record)
                self.commit_terms.append(term)
                self.canonical_at[record[0]] = record[1]
            else:
                self.fail(f"{name}: follower exposes record #{i} {record} that no leader "
                          "committed")
        self.verified[name] = max(self.verified.get(name, 0), k)

    def on_restart(self, name: str, log) -> None:
        # The node's disk keeps its commit and everything below (checked as it advances).
        # The commit position is persisted lazily: a restarted node starts from the persisted
        # one, which may lag what it exposed before (it never leads it: checked per step).
        self.verified[name] = min(self.verified.get(name, 0), log.index_after(log.commit))
        if name in self.commit_seen:
            self.commit_seen[name] = log.commit

    def on_ack(self, write_id: bytes, position: int) -> None:
        if write_id in self.acked:
            self.fail(f"write {write_id!r} acknowledged twice")
        if self.canonical_at.get(position) != write_id:
            self.fail(f"write {write_id!r} acknowledged at {position}, but the committed log "
                      f"has {self.canonical_at.get(position)!r} there")
        self.acked[write_id] = position

    def final(self) -> None:
        ids = [data for _, data in self.canonical if data.startswith(b"w:")]
        if len(ids) != len(set(ids)):
            self.fail("a client write appears twice in the committed log")
        for write_id, position in self.acked.items():
            if self.canonical_at.get(position) != write_id:
                self.fail(f"acknowledged write {write_id!r} lost from position {position}")
