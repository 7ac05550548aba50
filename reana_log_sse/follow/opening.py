"""A new stream's opening read, shared by the streams of a workflow that open together.

Each new stream used to make two reads of its own before it was live: its opening
snapshot (the workflow's status, its jobs' latest statuses, where the stream starts) and
a first catch-up read of the lines after `since`. 5,000 streams opening at once were
10,000 transactions, and the service spent most of its time in psycopg round trips
(docs/performance.md, "What changed for issue 22"). Now a stream's opening is one read,
which also holds the first chunk of its lines, in one statement (store/sql/opening.sql), and
the streams of one workflow that open with the same `since` and filters while a read of
theirs is running share the NEXT read: it starts only once every one of them has
subscribed (stream.stream_logs subscribes before it asks), so each gets a snapshot taken
after its subscription, exactly what its own read would have given it. Anything
committed after that snapshot reaches it from its feed, or from a catch-up when the
feed's next item is ahead of it (hub.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

from reana_log_sse.store.snapshot import Filters, Snapshot
from reana_log_sse.store.store import Store


@dataclasses.dataclass(frozen=True, slots=True)
class OpeningKey:
    workflow_id: uuid.UUID
    since: int
    filters: Filters
    limit: int  # lines of the first chunk


class OpeningReads:
    """Single flight per OpeningKey: at most one read running and one waiting to start;
    a stream that asks while a read is running joins the waiting one."""

    def __init__(self, store: Store, metrics: Any) -> None:
        self.store = store
        self.metrics = metrics
        self._running: dict[OpeningKey, asyncio.Future[Snapshot | None]] = {}
        self._next: dict[OpeningKey, asyncio.Future[Snapshot | None]] = {}

    async def read(self, key: OpeningKey) -> Snapshot | None:
        """The opening snapshot of `key`, read after this call began (see the module
        docstring): the workflow's status and jobs' statuses, the status cursor, and the
        frames of up to `key.limit` lines after `key.since`. None: unknown workflow."""
        fut = self._next.get(key)
        if fut is None:
            fut = self._next[key] = asyncio.ensure_future(self._start(key))
            fut.add_done_callback(_retrieve)  # every stream that asked may have gone
        # shielded: a stream whose client went away must not cancel the others' read
        return await asyncio.shield(fut)

    async def _start(self, key: OpeningKey) -> Snapshot | None:
        me = self._next[key]  # read() put this task there before it first ran
        try:
            running = self._running.get(key)
            if running is not None:  # meanwhile, the streams that ask join this read
                await asyncio.wait([running])
        finally:
            # from here on a stream that asks waits for the next read: this one's
            # snapshot may be taken before that stream subscribed
            if self._next.get(key) is me:
                del self._next[key]
        self._running[key] = me
        try:
            self.metrics.opening_reads.inc()
            return await self.store.opening(key.workflow_id, after=key.since,
                                            limit=key.limit, filters=key.filters)
        finally:
            if self._running.get(key) is me:
                del self._running[key]


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
