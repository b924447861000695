"""msgpack codec for the internal (cluster) network.

A cluster message is a frozen dataclass registered on the internal allow-list; on the wire it
is ``["esnode-cluster", version, type_name, [field values...]]``. Decoding rebuilds the
dataclass (running its own validation) and converts fields typed as NamedTuples (epochs,
member infos) or tuples of them back from arrays. Anything else, including a client frame
sent to the internal port, is rejected with ``BadRequest``.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import msgpack
from esnode.core.types import BadRequest
from esnode.transport.codec import CLUSTER_MAGIC as MAGIC

INTERNAL_VERSION = 1

_packb = msgpack.Packer(use_bin_type=True).pack


def _converter(hint: Any):
    """A function turning a decoded msgpack value back into ``hint``'s type, or None."""
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and issubclass(hint, tuple) and hasattr(hint, "_fields"):
        return lambda v: hint._make(v)  # NamedTuple
    if origin is tuple:
        args = typing.get_args(hint)
        inner = _converter(args[0]) if args else None
        if inner is None:
            return tuple
        return lambda v: tuple(inner(x) for x in v)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            inner = _converter(args[0])
            if inner is not None:
                return lambda v: None if v is None else inner(v)
    return None


class InternalCodec:
    """Encodes and decodes the cluster messages on one allow-list."""

    def __init__(self, types: typing.Iterable[type]):
        self._by_name: dict[str, tuple[type, list]] = {}
        for cls in types:
            hints = typing.get_type_hints(cls)
            fields = dataclasses.fields(cls)
            converters = [(f.name, _converter(hints[f.name])) for f in fields]
            self._by_name[cls.__name__] = (cls, converters)

    def encode(self, message: Any) -> bytes:
        cls = type(message)
        if cls.__name__ not in self._by_name:
            raise TypeError(f"{cls.__name__} is not an internal message")
        values = [getattr(message, f.name) for f in dataclasses.fields(cls)]
        return _packb([MAGIC, INTERNAL_VERSION, cls.__name__, values])

    def decode(self, frame: bytes) -> Any:
        try:
            raw = msgpack.unpackb(frame, raw=False, strict_map_key=True)
        except Exception as exc:
            raise BadRequest(f"malformed msgpack: {type(exc).__name__}") from None
        if type(raw) is not list or len(raw) != 4 or raw[0] != MAGIC:
            raise BadRequest("not a cluster message: the internal endpoint accepts only "
                             "cluster traffic; clients must use the external endpoint")
        _, version, name, values = raw
        if version != INTERNAL_VERSION:
            raise BadRequest(f"unsupported cluster protocol version {version!r}")
        entry = self._by_name.get(name) if type(name) is str else None
        if entry is None:
            raise BadRequest(f"unknown cluster message {name!r}")
        cls, converters = entry
        if type(values) is not list or len(values) != len(converters):
            raise BadRequest(f"{name}: expected {len(converters)} fields")
        try:
            return cls(**{name: c(v) if c is not None and v is not None else v
                          for (name, c), v in zip(converters, values)})
        except Exception as exc:  # validation in the dataclass, or a bad nested shape
            raise BadRequest(f"{name}: bad fields ({exc})") from None
