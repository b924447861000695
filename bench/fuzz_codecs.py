"""Coverage-guided fuzzing of every decode path with atheris (libFuzzer), the long run that
docs/security.md documents:

    .venv/bin/pip install 'atheris>=2.3'
    .venv/bin/python -m esnode.bench.fuzz_codecs -atheris_runs=1000000

The first input byte picks the target (client codec, internal codec, connection string,
topology TOML, ZAP request); the rest is that target's input. A target may return a value or
raise its one documented error; anything else is a crash that libFuzzer reports with the input.
"""

from __future__ import annotations

import logging
import sys

import zmq

from esnode.client.settings import InvalidConnectionString, parse_connection_string
from esnode.core.cluster_messages import WIRE_MESSAGES
from esnode.core.config import TopologyError, loads_topology
from esnode.core.forwarding import FORWARD_MESSAGES
from esnode.core.types import BadRequest
from esnode.transport.codec import DecodeError, decode_request
from esnode.transport.internal_codec import InternalCodec
from esnode.transport.security import INTERNAL_DOMAIN, NetworkSecurity, RefusalLog, ZapHandler

CODEC = InternalCodec(WIRE_MESSAGES + FORWARD_MESSAGES)
_public, _secret = zmq.curve_keypair()
ZAP = ZapHandler(None, NetworkSecurity(INTERNAL_DOMAIN, _public, _secret, {_public: "n2"}),
                 RefusalLog(logging.getLogger("fuzz"), max_lines=0), "internal")


def _client(data: bytes) -> None:
    try:
        decode_request(data, 1 << 16)
    except DecodeError:
        pass


def _internal(data: bytes) -> None:
    try:
        CODEC.decode(data)
    except BadRequest:
        pass


def _connection_string(data: bytes) -> None:
    try:
        parse_connection_string(data.decode("utf-8", "replace"))
    except InvalidConnectionString:
        pass


def _topology(data: bytes) -> None:
    try:
        loads_topology(data.decode("utf-8", "replace"))
    except TopologyError:
        pass


def _zap(data: bytes) -> None:
    reply = ZAP.answer(data.split(b"\x00"))
    assert len(reply) == 6 and reply[2] in (b"200", b"400"), reply


TARGETS = (_client, _internal, _connection_string, _topology, _zap)


def one_input(data: bytes) -> None:
    if data:
        TARGETS[data[0] % len(TARGETS)](data[1:])


def main() -> None:
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: .venv/bin/pip install 'atheris>=2.3'")
    logging.disable(logging.CRITICAL)
    atheris.instrument_all()  # coverage of every Python function loaded, esnode's included
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
