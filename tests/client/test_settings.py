"""Connection strings: every accepted form, errors that name the bad part, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esnode.client import ConnectionSettings, InvalidConnectionString, parse_connection_string


@pytest.mark.parametrize(("text", "endpoints"), [
    ("tcp://127.0.0.1:2113", (("127.0.0.1", 2113),)),
    ("localhost:4000", (("localhost", 4000),)),
    ("node1", (("node1", 2113),)),
    ("esnode://a:1,b:2,c", (("a", 1), ("b", 2), ("c", 2113))),
    ("esnode://[::1]:7/", (("::1", 7),)),
    ("ESNODE://h.example.com:9", (("h.example.com", 9),)),
    ("esnode+dns://cluster.example.com", (("cluster.example.com", 2113),)),
    ("esnode+dns://cluster.example.com:4000?dnsServer=127.0.0.1:5353",
     (("cluster.example.com", 4000),)),
])
def test_accepted_forms(text, endpoints):
    assert parse_connection_string(text).endpoints == endpoints


def test_the_form_decides_how_the_node_is_found():
    assert parse_connection_string("tcp://a:1").direct
    assert parse_connection_string("a:1").direct
    assert not parse_connection_string("esnode://a:1").direct
    assert parse_connection_string("esnode://a:1?directConnection=true").direct
    dns = parse_connection_string("esnode+dns://c.example?dnsServer=10.0.0.2&keepAliveInterval=0")
    assert dns.dns and dns.dns_server == ("10.0.0.2", 53) and dns.keepalive_interval == 0
    assert parse_connection_string(dns.to_uri()) == dns


def test_options_are_case_insensitive_and_in_milliseconds():
    s = parse_connection_string(
        "esnode://a:1?NodePreference=Follower&requiresleader=true&maxDiscoverAttempts=7"
        "&discoveryInterval=250&gossipTimeout=1500&operationTimeout=3000&maxRetries=0"
        "&retryDelay=20")
    assert s == ConnectionSettings(endpoints=(("a", 1),), node_preference="follower",
                                   requires_leader=True, discovery_attempts=7,
                                   discovery_interval=0.25, gossip_timeout=1.5,
                                   operation_timeout=3.0, max_retries=0, retry_delay=0.02)
    assert parse_connection_string("esnode://a?defaultDeadline=100").operation_timeout == 0.1


@pytest.mark.parametrize(("text", "named"), [
    ("", "empty"),
    ("esnode://a:70000", "'70000'"),
    ("esnode://a:x", "'x'"),
    ("esnode://a,,b", "empty host"),
    ("esnode://a b", "'a b'"),
    ("esnode://a?colour=red", "'colour'"),
    ("esnode://a?nodePreference=nearest", "nearest"),
    ("esnode://a?requiresLeader=yes", "requiresLeader"),
    ("esnode://a?gossipTimeout=soon", "gossipTimeout"),
    ("esnode://a?gossipTimeout=0", "gossipTimeout"),
    ("esnode://a?maxDiscoverAttempts=0", "maxDiscoverAttempts"),
    ("esnode://a?maxRetries=1&maxRetries=2", "twice"),
    ("esnode://a:1,a:1", "twice"),
    ("esnode://u@a", "a user and a password"),
    ("esnode+dns://a,b", "one DNS name"),
    ("esnode+dns://a?dnsServer=localhost", "IP address"),
    ("esnode+dns://a?dnsServer=1.2.3.4:0", "bad port '0'"),
    ("esnode+dns://a?directConnection=true", "directConnection"),
    ("esnode://a,b?directConnection=true", "one host"),
    ("esnode://a?keepAliveTimeout=0", "keepAliveTimeout"),
    ("http://a:1", "'http://'"),
    ("tcp://a:1,b:2", "esnode://"),
    ("esnode://[::1", "'['"),
])
def test_bad_strings_name_the_bad_part(text, named):
    with pytest.raises(InvalidConnectionString) as info:
        parse_connection_string(text)
    assert named in str(info.value)


hosts = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True) | st.just("127.0.0.1")
settings = st.builds(
    ConnectionSettings,
    endpoints=st.lists(st.tuples(hosts, st.integers(1, 65535)), min_size=1, max_size=4,
                       unique=True).map(tuple),
    node_preference=st.sampled_from(["leader", "follower", "random"]),
    requires_leader=st.booleans(),
    discovery_attempts=st.integers(1, 100),
    discovery_interval=st.integers(0, 10_000).map(lambda ms: ms / 1000),
    gossip_timeout=st.integers(1, 10_000).map(lambda ms: ms / 1000),
    operation_timeout=st.integers(1, 100_000).map(lambda ms: ms / 1000),
    max_retries=st.integers(0, 20),
    retry_delay=st.integers(0, 10_000).map(lambda ms: ms / 1000),
    keepalive_interval=st.integers(0, 10_000).map(lambda ms: ms / 1000),
    keepalive_timeout=st.integers(1, 10_000).map(lambda ms: ms / 1000),
    dns_server=st.none() | st.tuples(st.just("127.0.0.1"), st.integers(1, 65535)),
)


@given(settings)
def test_settings_round_trip_through_their_connection_string(s):
    assert parse_connection_string(s.to_uri()) == s


@given(st.text(max_size=60))
def test_any_text_parses_or_fails_with_invalid_connection_string(text):
    try:
        parse_connection_string(text)
    except InvalidConnectionString:
        pass


@given(st.text(alphabet="esnod:/?&=,[]1234567890abc.", max_size=40))
def test_near_miss_strings_fail_cleanly(text):
    try:
        parse_connection_string("esnode://" + text)
    except InvalidConnectionString:
        pass
