"""Five hosts: the leader and one follower cut off (2 | 3), with the client writer."""

from __future__ import annotations

from tests.netns.test_partitions import split_leader_off


def test_five_hosts_leader_and_a_follower_in_the_minority(hosts_cluster5):
    def fault(leader: str, others: list[str]) -> list[str]:
        hosts_cluster5.partition(others[1:], [leader, others[0]])
        return others[1:]

    split_leader_off(hosts_cluster5, "5 nodes, partition 3 | 2 (leader in the 2)", fault)
