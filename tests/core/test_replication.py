"""when_<situation>: leader and replica replication cores fed messages, effects asserted."""

from esnode.core.cluster_messages import (
    Heartbeat,
    RecordsRead,
    ReplicaAck,
    ReplicaSubscribed,
    ReplicateRecords,
    SubscribeReplica,
)
from esnode.core.effects import (
    Alarm,
    Committed,
    PersistCommit,
    ReadRecords,
    Send,
    Truncate,
    WriteRecords,
)
from esnode.core.replication import LeaderReplication, ReplicaReplication, Sub
from esnode.core.types import Epoch

from .helpers import config, log

E1 = Epoch(1, 0, "n1")
E2 = Epoch(2, 50, "n1")


def leader(durable=100, commit=-1, **kw):
    lv = log(durable, commit, [E1, E2])
    core = LeaderReplication(config(**kw), lv, 2, 0.0)
    core.epoch_written(50, 0.0)
    return core


def subscribe(core, peer="n2", sub=1, writer=-1, epochs=()):
    return core.on_subscribe(SubscribeReplica(2, peer, sub, writer, epochs), 0.0)


class TestLeaderSide:
    def test_when_a_replica_subscribes_it_gets_its_subscription_point(self):
        core = leader()
        effects = subscribe(core, writer=30, epochs=(E1,))
        assert effects == [Send("n2", ReplicaSubscribed(2, "n1", 1, 30, 100))]

    def test_shipping_reads_then_sends_within_the_window(self):
        core = leader(max_inflight_records=3, batch_records=2)
        subscribe(core, writer=30, epochs=(E1,))
        read = core.ship("n2", 0.0)
        assert read == [ReadRecords("n2", 1, 30, 2, core.config.batch_bytes)]
        effects = core.on_records_read(RecordsRead("n2", 1, 30, ((40, b"a"), (50, b"e"))), 0.0)
        batch = effects[0].message
        assert isinstance(batch, ReplicateRecords) and batch.epochs == (E2,)
        assert effects[1] == ReadRecords("n2", 1, 50, 1, core.config.batch_bytes)
        core.on_records_read(RecordsRead("n2", 1, 50, ((60, b"x"),)), 0.0)
        assert core.ship("n2", 0.0) == []  # 3 records in flight: window full

    def test_commit_needs_a_majority_and_our_own_epoch(self):
        core = leader()
        subscribe(core, "n2", writer=30, epochs=(E1,))
        below_epoch = core.on_ack(ReplicaAck(2, "n2", 1, 40), 0.0)
        assert not any(isinstance(e, (PersistCommit, Committed)) for e in below_epoch)
        effects = core.on_ack(ReplicaAck(2, "n2", 1, 80), 0.0)
        assert effects[:2] == [PersistCommit(80), Committed(80)]
        assert core.epoch_committed

    def test_acks_of_an_old_subscription_are_ignored(self):
        core = leader()
        subscribe(core, "n2", sub=1)
        subscribe(core, "n2", sub=2)
        assert core.on_ack(ReplicaAck(2, "n2", 1, 100), 0.0) == []
        assert core.log.commit == -1

    def test_unacked_records_are_resent_after_the_timeout(self):
        core = leader(resend_timeout=0.5)
        subscribe(core, writer=30, epochs=(E1,))
        core.ship("n2", 0.0)
        core.on_records_read(RecordsRead("n2", 1, 30, ((40, b"a"),)), 0.0)
        effects = core.tick(0.6)
        assert ReadRecords("n2", 1, 30, core.config.batch_records,
                           core.config.batch_bytes) in effects


def replica(written=100, commit=-1, **kw):
    ids = iter(range(1, 100))
    lv = log(written, commit, [E1])
    r = ReplicaReplication(config("n2", **kw), lv, 2, "n1", ids.__next__)
    r.subscribe(0.0)
    return r


def subscribed_replica():
    """A replica subscribed at its own end (100), truncation done."""
    r = replica(100)
    r.on_subscribed(ReplicaSubscribed(2, "n1", 1, 100, 200), 0.0)
    r.log.truncated(100)
    r.on_truncated(0.0)
    return r


class TestReplicaSide:
    def test_a_diverged_tail_is_truncated_on_line(self):
        r = replica(100, commit=20)
        assert r.on_subscribed(ReplicaSubscribed(2, "n1", 1, 60, 200), 0.0) == [Truncate(60)]
        assert r.status is Sub.TRUNCATING and r.log.truncating
        r.log.truncated(55)  # the last record at or below 60
        acks = r.on_truncated(0.0)
        assert acks == [Send("n1", ReplicaAck(2, "n2", 1, 55))]

    def test_truncation_below_the_commit_position_is_refused_loudly(self):
        r = replica(100, commit=80)
        effects = r.on_subscribed(ReplicaSubscribed(2, "n1", 1, 60, 200), 0.0)
        assert [type(e) for e in effects] == [Alarm] and effects[0].code == "truncation_refused"
        assert r.status is Sub.REFUSED and "below our commit position" in r.error

    def test_truncation_larger_than_the_limit_is_refused_loudly(self):
        r = replica(100, max_truncation=30)
        effects = r.on_subscribed(ReplicaSubscribed(2, "n1", 1, 60, 200), 0.0)
        assert effects[0].code == "truncation_refused" and "max_truncation" in r.error

    def test_records_are_acked_only_once_durable(self):
        r = subscribed_replica()
        batch = ReplicateRecords(2, "n1", 1, 100, ((110, b"a"), (120, b"b")), (), 120)
        effects = r.on_records(batch, 0.0)
        # no ack and no commit beyond what is durable (100) before the fsync report
        assert effects == [WriteRecords(((110, b"a"), (120, b"b"))), PersistCommit(100)]
        r.log.durable_report(120)
        effects = r.on_durable(0.0)
        assert effects == [Send("n1", ReplicaAck(2, "n2", 1, 120)), PersistCommit(120)]

    def test_the_commit_position_exposed_never_passes_the_durable_log(self):
        r = subscribed_replica()
        r.on_heartbeat(Heartbeat(2, "n1", 500, 500, 1), 0.0)
        assert r.log.commit == 100

    def test_a_heartbeat_for_another_subscription_makes_it_resubscribe(self):
        r = subscribed_replica()
        effects = r.on_heartbeat(Heartbeat(2, "n1", 0, 200, 77), 0.0)
        assert isinstance(effects[0].message, SubscribeReplica)
        assert effects[0].message.subscription_id == 2

    def test_duplicates_and_gaps_are_ignored(self):
        r = subscribed_replica()
        assert r.on_records(ReplicateRecords(2, "n1", 1, 90, ((100, b"x"),), (), -1), 0.0) == []
        assert r.on_records(ReplicateRecords(2, "n1", 1, 130, ((140, b"x"),), (), -1), 0.0) == []


class TestShippingBeforeTheLeadersFsync:
    def test_when_records_are_prepared_caught_up_followers_get_them_at_once(self):
        core = leader(durable=100)
        subscribe(core, "n2", writer=100, epochs=(E1, E2))
        core.log.written = 100
        effects = core.ship_prepared(((101, b"a"), (102, b"b")), 0.0)
        [send] = [e for e in effects if isinstance(e, Send)]
        assert send.to == "n2" and send.message.after_position == 100
        assert [r[0] for r in send.message.records] == [101, 102]
        assert core.peers["n2"].sent == 102

    def test_a_follower_behind_gets_nothing_early_and_catches_up_by_reading(self):
        core = leader(durable=100)
        subscribe(core, "n2", writer=30, epochs=(E1,))
        core.log.written = 100
        assert core.ship_prepared(((101, b"a"),), 0.0) == []
        assert core.peers["n2"].sent == 30

    def test_an_early_ack_counts_but_our_own_copy_only_once_durable(self):
        core = leader(durable=100)
        subscribe(core, "n2", writer=100, epochs=(E1, E2))
        subscribe(core, "n3", sub=7, writer=100, epochs=(E1, E2))
        core.log.written = 100
        core.ship_prepared(((101, b"a"),), 0.0)
        first = core.on_ack(ReplicaAck(2, "n2", 1, 101), 0.0)
        # n2 and our own log (durable only to 100): the majority holds 100, not 101
        assert Committed(101) not in first
        second = core.on_ack(ReplicaAck(2, "n3", 7, 101), 0.0)
        assert Committed(101) in second  # two followers are a majority of three
