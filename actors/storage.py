"""Storage actor: the node's only writer. Group-commits every queued write in one transaction.

Group commit works with the actor's FIFO inbox: a write batch that finds more messages queued
schedules a ``Flush`` note to itself; the note lands behind every batch already queued, so all
of them go into one LMDB transaction and one fsync. A batch that finds the inbox empty is
committed at once. Outcomes are sent straight to the transport from this
thread (no extra hop), and subscribers are told the new commit position.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pykka

from esnode.actors.messages import Committed, Flush, PendingWrite, Shutdown, WriteBatch
from esnode.actors.replies import reply_for
from esnode.core.clock import Clock
from esnode.core.types import StorageFull
from esnode.storage.port import EventStore
from esnode.transport.port import Transport

log = logging.getLogger("esnode.storage")

_FLUSH = Flush()


class StorageActor(pykka.ThreadingActor):
    def __init__(self, store: EventStore, transport: Transport, clock: Clock,
                 on_committed: Callable[[Committed], None],
                 on_failure: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self._store = store
        self._transport = transport
        self._clock = clock
        self._on_committed = on_committed
        self._on_fatal = on_failure
        self._pending: list[PendingWrite] = []
        self._flush_scheduled = False

    def on_receive(self, message: object) -> None:
        cls = type(message)
        if cls is WriteBatch:
            self._pending.extend(message.writes)
            if self.actor_inbox.empty():
                self._flush()  # nothing else queued: commit now, skip a thread hop
            elif not self._flush_scheduled:
                self._flush_scheduled = True
                self.actor_ref.tell(_FLUSH)
        elif cls is Flush:
            self._flush()
        elif cls is Shutdown:
            self._flush()
        else:
            log.error("storage actor got an unknown message %r", message)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            outcomes = self._store.write([p.request for p in pending], self._clock.now_us())
        except StorageFull as exc:
            log.error("write of %d requests failed: %s", len(pending), exc)
            outcomes = [exc] * len(pending)
        # The transaction is durable (fsynced) before any reply leaves; readers learn the new
        # commit position before the writer can read its own write.
        self._on_committed(Committed(self._store.writer_position))
        self._transport.send_client(
            [(p.peer, p.corr, reply_for(o)) for p, o in zip(pending, outcomes)])

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        log.critical("storage actor crashed: %s: %s", exception_type.__name__, exception_value)
        if self._on_fatal is not None:
            self._on_fatal(f"storage actor crashed: {exception_value}")
