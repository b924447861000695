"""Each invariant the cores assert (``esnode.core.invariants``) stops the simulated node, and
so fails the run with its seed, instead of being repaired quietly: a broken part is swapped
in (a core, the shell, the store) and the simulator must catch it."""

from __future__ import annotations

import pytest

from esnode.actors.messages import ClusterInbound
from esnode.actors.replica import Replica
from esnode.core.cluster_messages import Truncated
from esnode.core.effects import Truncate
from esnode.core.election import ElectionCore
from esnode.core.forwarding import ForwardReply
from esnode.core.invariants import InvariantViolation
from esnode.core.node_core import NodeCore

from .cluster import SimCluster
from .scenario import stable_leader, write
from .simstore import SimStore
from .swarm import SimFailure, run_seed


class ForgetfulElection(ElectionCore):
    """Forgets whom it voted for in the current term (and any leader lease): two candidates
    can both win it."""

    def on_vote_request(self, m, now):
        if m.term == self.term:
            self.voted_for = None
        return super().on_vote_request(m, now)

    def in_lease(self, now):
        return False


class ForgetfulVoterNode(NodeCore):
    election_class = ForgetfulElection


def test_two_leaders_in_one_term_stop_the_run():
    with pytest.raises(SimFailure, match=r"(?s)seed \d+ .*two leaders in term"):
        for seed in range(40):
            run_seed(seed, 5, core_class=ForgetfulVoterNode)


def test_a_message_the_core_cannot_handle_stops_the_node():
    """A shell that routed a gateway's message into the core (production sends
    ``ForwardReply`` to the gateway) would stop the node at once."""
    c = SimCluster(1)
    lead = stable_leader(c)
    other = next(n for n in c.nodes.values() if n is not lead)
    c.post(lead, ClusterInbound([(other.name, ForwardReply(other.name, 1, "ok", {}))]))
    with pytest.raises(InvariantViolation, match="not a cluster message"):
        c.run_until(c.now + 1.0)


class ReportsTruncationsTwice(Replica):
    """A shell bug: every truncation is reported a second time."""

    def _run(self, effects):
        super()._run(effects)
        if any(type(e) is Truncate for e in effects):
            super()._run(self.core.step(Truncated(self._store.writer_position),
                                        self._clock.monotonic()))


def test_a_truncation_reported_that_nobody_asked_for_stops_the_node():
    c = SimCluster(2, replica_class=ReportsTruncationsTwice)
    with pytest.raises(InvariantViolation, match="nobody asked for"):
        stable_leader(c)


class PhantomStore(SimStore):
    """A store bug: replicated writes come back with one record more than was given."""

    def write_raw(self, records, commit_position=None):
        super().write_raw(records, commit_position)
        if records:
            super().write_raw([(self.next_position(), b"phantom")])


def test_storage_reporting_more_than_it_was_given_stops_the_node():
    c = SimCluster(3, store_class=PhantomStore)
    with pytest.raises(InvariantViolation, match="past everything it was given"):
        stable_leader(c)
        write(c, 5)
