"""Fuzzing every decode path with hypothesis: whatever the input, a decoder returns a value or
raises its one documented error; nothing else escapes (docs/security.md, "Fuzzing").

Short in CI. The long run is the same tests with a bigger budget:
    ESNODE_FUZZ_EXAMPLES=200000 .venv/bin/python -m pytest tests/security/test_fuzz.py -q
"""

from __future__ import annotations

import os
import string

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esnode.client import InvalidConnectionString, parse_connection_string
from esnode.core.cluster_messages import WIRE_MESSAGES
from esnode.core.config import TopologyError, loads_topology, parse_topology
from esnode.core.forwarding import FORWARD_MESSAGES
from esnode.core.types import BadRequest
from esnode.transport.codec import CLIENT_OPS, CLUSTER_MAGIC, DecodeError, decode_request
from esnode.transport.internal_codec import InternalCodec
from esnode.transport.security import (
    INTERNAL_DOMAIN,
    NetworkSecurity,
    RefusalLog,
    ZapHandler,
)

BUDGET = int(os.environ.get("ESNODE_FUZZ_EXAMPLES", "300"))
pytestmark = pytest.mark.timeout(max(120, BUDGET // 10))  # a long run may take its time
FUZZ = settings(max_examples=BUDGET, deadline=None, derandomize=BUDGET <= 300,
                suppress_health_check=list(HealthCheck))
CODEC = InternalCodec(WIRE_MESSAGES + FORWARD_MESSAGES)

# Any msgpack value, nested: what a hostile peer can put in a well-formed frame.
scalars = (st.none() | st.booleans() | st.integers(-2**64, 2**64 - 1) | st.floats()
           | st.text(max_size=20) | st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=20)


def packb(value) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return b"\xc1"


@FUZZ
@given(st.binary(max_size=512))
def test_client_codec_on_bytes(frame):
    try:
        decode_request(frame, 4096)
    except DecodeError:
        pass


@FUZZ
@given(st.sampled_from(sorted(CLIENT_OPS)) | st.text(max_size=10), values,
       st.dictionaries(st.sampled_from(["stream", "events", "expected_version", "from",
                                        "credit", "subscription", "n", "max_count",
                                        "from_version", "from_position", "backwards",
                                        "metadata", "tombstone", "requires_leader"]) | st.text(),
                       values, max_size=6))
def test_client_codec_on_requests(op, corr, args):
    try:
        decode_request(packb([1, op, corr, args]), 4096)
    except DecodeError:
        pass


@FUZZ
@given(st.binary(max_size=512))
def test_internal_codec_on_bytes(frame):
    try:
        CODEC.decode(frame)
    except BadRequest:
        pass


@FUZZ
@given(st.sampled_from([c.__name__ for c in WIRE_MESSAGES + FORWARD_MESSAGES]) | st.text(),
       st.lists(values, max_size=12), st.integers(0, 2))
def test_internal_codec_on_messages(name, fields, version):
    try:
        CODEC.decode(packb([CLUSTER_MAGIC, version, name, fields]))
    except BadRequest:
        pass


node_keys = st.sampled_from(["name", "mem_db", "data_dir", "internal_host", "internal_port",
                             "external_host", "external_port", "priority", "public_key",
                             "internal_advertise_host", "internal_advertise_port", "log_dir"])
toml_values = st.recursive(st.none() | st.booleans() | st.integers(-70000, 70000)
                           | st.text(max_size=45),
                           lambda inner: st.lists(inner, max_size=3), max_leaves=5)


@FUZZ
@given(st.dictionaries(st.sampled_from(["cluster", "discovery", "timers", "security", "nodes",
                                        "x"]),
                       st.dictionaries(st.text(max_size=12), toml_values, max_size=4)
                       | st.lists(st.dictionaries(node_keys, toml_values, max_size=8),
                                  max_size=3) | toml_values, max_size=5))
def test_topology_parsing(raw):
    try:
        parse_topology(raw)
    except TopologyError:
        pass


@FUZZ
@given(st.text(alphabet=string.printable, max_size=200)
       | st.builds(lambda n, rest: "a = " + "[" * n + rest, st.integers(0, 5000),
                   st.text(max_size=10)))
def test_topology_text(text):
    try:
        loads_topology(text)
    except TopologyError:
        pass


url_text = st.text(alphabet=string.printable, max_size=80)


@FUZZ
@given(url_text | st.builds(lambda scheme, hosts, query: f"{scheme}{hosts}?{query}",
                            st.sampled_from(["esnode://", "esnode+dns://", "tcp://", ""]),
                            url_text, url_text))
def test_connection_strings(text):
    try:
        parse_connection_string(text)
    except InvalidConnectionString:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=9))
def test_zap_requests(frames):
    public, secret = zmq.curve_keypair()
    import logging

    handler = ZapHandler(None, NetworkSecurity(INTERNAL_DOMAIN, public, secret),
                         RefusalLog(logging.getLogger("fuzz")), "internal")
    reply = handler.answer(frames)
    assert len(reply) == 6 and reply[2] in (b"200", b"400")
