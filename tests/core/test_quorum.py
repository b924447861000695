from esnode.core.quorum import majority, quorum_position, subscription_point
from esnode.core.types import Epoch

E1, E2, E3 = Epoch(1, 0, "a"), Epoch(2, 100, "b"), Epoch(3, 200, "c")
E2_OTHER = Epoch(2, 150, "x")


def test_majority_counts_the_configured_size():
    assert [majority(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]


def test_quorum_position_is_the_majority_th_highest():
    assert quorum_position([50, 10, 30], 3) == 30
    assert quorum_position([50, 10, 30, 5, 70], 5) == 30
    assert quorum_position([50], 3) == -1  # members that never reported do not count


def test_when_the_common_epoch_is_the_leaders_last_the_replica_keeps_its_log():
    assert subscription_point([E1, E2], 180, [E1, E2], 150) == 150


def test_a_replica_ahead_of_the_leader_is_cut_at_the_leaders_end():
    assert subscription_point([E1, E2], 120, [E1, E2], 150) == 120


def test_when_the_replica_diverged_it_keeps_up_to_the_next_epoch_on_either_side():
    # replica wrote epoch 2 at 150 (a deposed leader); leader has epoch 2 at 100, 3 at 200
    assert subscription_point([E1, E2, E3], 300, [E1, E2_OTHER], 190) == 99
    assert subscription_point([E1, E3], 300, [E1, E2], 190) == 99


def test_with_no_common_epoch_the_replica_keeps_nothing():
    assert subscription_point([E2], 300, [E2_OTHER], 190) == -1
