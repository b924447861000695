"""Test keys and secured topologies: fresh CURVE key pairs per test, in ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import zmq

from esnode.core.config import Topology, parse_topology
from esnode.transport.security import generate_keypair, load_secret_key
from tests.conftest import free_port


def make_keys(root: Path, *names: str) -> Path:
    key_dir = root / "keys"
    for name in names:
        generate_keypair(key_dir / name)
    return key_dir


def keypair(key_dir: Path, name: str) -> tuple[bytes, bytes]:
    return load_secret_key(key_dir / f"{name}.key_secret")


def secure_topology(root: Path, names: tuple[str, ...] = ("node1",), internal: bool = True,
                    external: bool = True, client_keys: bool = False) -> Topology:
    """A mem-db cluster on 127.0.0.1 with every key it needs under ``root/keys``."""
    key_dir = make_keys(root, *names, "external", "stranger")
    security: dict = {}
    if internal:
        security["key_dir"] = str(key_dir)
    if external:
        security["external_key"] = str(key_dir / "external")
    if client_keys:
        (root / "clients").mkdir()
        generate_keypair(root / "clients" / "alice")
        security["client_key_dir"] = str(root / "clients")
    nodes = [{"name": n, "mem_db": True, "internal_host": "127.0.0.1",
              "internal_port": free_port(), "external_host": "127.0.0.1",
              "external_port": free_port()} for n in names]
    return parse_topology({"cluster": {"name": "secure", "size": len(names),
                                       "allow_even_size": True},
                           "security": security, "nodes": nodes})


def curve_dealer(ctx: zmq.Context, endpoint: str, server_key: bytes,
                 keys: tuple[bytes, bytes] | None, routing_id: bytes = b"") -> zmq.Socket:
    """A raw DEALER: CURVE client of ``server_key`` with ``keys`` (None: plaintext)."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if routing_id:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    if keys is not None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, keys[0])
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys[1])
    sock.connect(endpoint)
    return sock
