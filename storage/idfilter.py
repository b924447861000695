"""An in-memory filter in front of the durable event-id index: a Bloom filter over event ids.

``may_contain(event_id)`` is False only for an id that was never ``add``ed: a "no" is
certain, a "maybe" sends the caller to the durable index. Almost every appended id is a fresh
UUID, so almost every idempotency lookup ends here, without an LMDB transaction lookup.

- Hashing: Python's ``hash(str)`` (SipHash, computed once and cached on the string object;
  the ids are hashed anyway as dict keys of the write path). It is seeded per process, so the
  filter lives only in memory and is rebuilt on open (``LmdbEventStore``: from the keys of
  the ``event_ids`` database). Ids that are not random (or chosen to collide) only make
  "maybe" more frequent; they never make a "no" wrong.
- Size: 16 bits per id and 2 probes (the two halves of the hash; about 1.4 % false "maybe"
  when a layer is full, 0.4 % when half full): 2 MiB per million ids, up to twice that just after growing. It grows as a scalable Bloom filter: when a
  layer is full, a new one twice as large takes the new ids and lookups probe every layer (one
  layer after a rebuild; one more per doubling).
- No deletion: a truncation leaves the removed ids in the filter, which is still correct (a
  superset only costs a durable lookup).
"""

from __future__ import annotations

from collections.abc import Iterable

BITS_PER_ID = 16
MIN_CAPACITY = 1 << 21


class _Layer:
    __slots__ = ("bits", "mask", "capacity", "count")

    def __init__(self, capacity: int):
        nbits = 1 << max(capacity * BITS_PER_ID - 1, 7).bit_length()  # a power of two
        self.bits = bytearray(nbits >> 3)
        self.mask = nbits - 1
        self.capacity = nbits // BITS_PER_ID
        self.count = 0


class IdFilter:
    """Bloom filter of event ids (see the module docstring)."""

    __slots__ = ("_layers", "_top", "_probes")

    def __init__(self, capacity: int = MIN_CAPACITY):
        self._top = _Layer(capacity)
        self._layers: tuple[_Layer, ...] = (self._top,)
        self._probes = ((self._top.bits, self._top.mask),)

    def add_all(self, event_ids: Iterable[str]) -> None:
        top = self._top
        bits, mask, room = top.bits, top.mask, top.capacity - top.count
        added = 0
        for event_id in event_ids:
            if added == room:
                top.count += added
                top = self._grow()
                bits, mask, room, added = top.bits, top.mask, top.capacity, 0
            h = hash(event_id)
            i = h & mask
            bits[i >> 3] |= 1 << (i & 7)
            i = (h >> 32) & mask
            bits[i >> 3] |= 1 << (i & 7)
            added += 1
        top.count += added

    def may_contain(self, event_id: str) -> bool:
        h = hash(event_id)
        for bits, mask in self._probes:
            i = h & mask
            if bits[i >> 3] >> (i & 7) & 1:
                i = (h >> 32) & mask
                if bits[i >> 3] >> (i & 7) & 1:
                    return True
        return False

    def _grow(self) -> _Layer:
        self._top = _Layer(self._top.capacity * 2)
        self._layers = (self._top,) + self._layers
        self._probes = tuple((layer.bits, layer.mask) for layer in self._layers)
        return self._top

    @property
    def count(self) -> int:
        """Ids added (with repetitions)."""
        return sum(layer.count for layer in self._layers)

    @property
    def nbytes(self) -> int:
        return sum(len(layer.bits) for layer in self._layers)
