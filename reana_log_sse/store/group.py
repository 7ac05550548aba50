"""Group commit: ingest batches that arrive while a transaction is in flight share the next.

One group at a time per process: the first batch runs alone; the batches that arrive
meanwhile wait, then go together into one transaction (one id allocation over all their
workflows, one COPY straight into log_lines, one rejected_events insert, one NOTIFY, one
commit), up to a cap on lines. Each caller is answered after that commit, with its own
IngestResult. The 4 senders of one pod no longer queue one after the other on the
workflow row locks (allocation, COPY, NOTIFY, commit + fsync each): they pay one of each.

A group that fails for any reason (a line already stored, a missing partition, a value the
database refuses, the database gone) left nothing: each of its batches is then stored
alone (side by side) through Store.ingest_alone, the path every batch took before grouping (direct
COPY, the staged path on a unique violation, the partition retry), so a batch's answer
never depends on the batches it was grouped with. Ids still strictly increase per
workflow in commit order across processes: the allocation row-locks the workflows until
commit, as for one batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from reana_log_sse.metrics import Metrics
from reana_log_sse.store.errors import DatabaseUnavailable
from reana_log_sse.store.rows import IngestResult, PreparedLine


class Committer(Protocol):
    """What a group commit needs of its Store (store.py): the two transactions."""

    async def ingest_together(
        self, batches: Sequence[tuple[Sequence[PreparedLine], Sequence[tuple[str, str]]]],
    ) -> float: ...

    async def ingest_alone(
        self, lines: Sequence[PreparedLine], rejected: Sequence[tuple[str, str]] = (),
        *, of_record: bool = True,
    ) -> IngestResult: ...

logger = logging.getLogger("reana_log_sse")


@dataclasses.dataclass(eq=False)
class _Batch:
    lines: Sequence[PreparedLine]
    rejected: Sequence[tuple[str, str]]
    of_record: bool
    future: asyncio.Future[IngestResult]


class GroupCommit:
    """The committer of one Store: submit() a batch, get its IngestResult after commit."""

    def __init__(self, store: Committer, *, max_lines: int, metrics: Metrics | None = None) -> None:
        self.store = store
        self.max_lines = max_lines
        self.metrics = metrics
        self._waiting: list[_Batch] = []
        self._runner: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Batches queued for the next group (not the one in flight)."""
        return len(self._waiting)

    async def submit(self, lines: Sequence[PreparedLine], rejected: Sequence[tuple[str, str]],
                     of_record: bool) -> IngestResult:
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Batch(lines, rejected, of_record, future))
        self._gauge()
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="group-commit")
        # a caller cancelled leaves its batch in the group: the group commits or rolls
        # back whole
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError as exc:
            # the answer nobody awaits now is retrieved when it comes (shield() does not:
            # its outer future, cancelled, unhooks it from the inner one)
            future.add_done_callback(retrieve)
            task = asyncio.current_task()
            if task is None or not any("graceful shutdown" in str(a) for a in exc.args):
                raise
            # uvicorn's shutdown cancels a request still running after its graceful
            # timeout (uvicorn/server.py Server.shutdown), which uvicorn would answer 500:
            # the sender is told to retry instead (a retry stores nothing twice)
            task.uncancel()
            raise DatabaseUnavailable("shutting down while this batch waited") from None

    async def close(self) -> None:
        """Wait for the group in flight and those queued (before the pool closes)."""
        while (runner := self._runner) is not None:
            await asyncio.wait([runner])  # its outcome is its callers'; never raises here

    async def _run(self) -> None:
        group: list[_Batch] = []
        try:
            while self._waiting:
                group = self._take()
                down = await self._commit(group)
                if down is not None:
                    # the database is out: the batches queued meanwhile get its 503 now,
                    # not after a pool timeout of their own (each answer comes within
                    # one pool timeout of its arrival, never behind several)
                    for batch in self._waiting:
                        fail(batch.future, down)
                    self._waiting = []
                    self._gauge()
        except BaseException as exc:  # cancelled (the loop ends): nobody is left waiting
            for batch in group + self._waiting:
                fail(batch.future, exc)
            self._waiting = []
            self._gauge()
            raise
        finally:
            self._runner = None

    def _take(self) -> list[_Batch]:
        """The next group: the oldest batch, and those after it while under the cap."""
        waiting = self._waiting
        n, lines = 1, len(waiting[0].lines)
        while n < len(waiting) and lines + len(waiting[n].lines) <= self.max_lines:
            lines += len(waiting[n].lines)
            n += 1
        group, self._waiting = waiting[:n], waiting[n:]
        self._gauge()
        return group

    async def _commit(self, group: list[_Batch]) -> DatabaseUnavailable | None:
        """Commit a group; the DatabaseUnavailable its batches were answered, if any."""
        if len(group) > 1:
            try:
                committed_at = await self.store.ingest_together(
                    [(batch.lines, batch.rejected) for batch in group])
            except DatabaseUnavailable as exc:  # out for every batch alike: no split
                self._count("unavailable", len(group))
                for batch in group:
                    fail(batch.future, exc)
                return exc
            except Exception as exc:  # noqa: BLE001 - any failure: each batch alone
                logger.debug("group of %d batches failed (%s): storing each alone",
                             len(group), type(exc).__name__)
                self._count("split", len(group))
            else:
                self._count("together", len(group))
                for batch in group:
                    _answer(batch, IngestResult(len(batch.lines), 0, len(batch.rejected),
                                                committed_at))
                return None
        else:
            self._count("alone", 1)
        # side by side, as they would have run without grouping (the row locks order
        # them): one after the other, with the database gone, the last would wait for
        # as many pool timeouts as the group has batches
        outcomes = await asyncio.gather(*(self._alone(batch) for batch in group))
        return next((o for o in outcomes if o is not None), None)

    async def _alone(self, batch: _Batch) -> DatabaseUnavailable | None:
        try:
            result = await self.store.ingest_alone(batch.lines, batch.rejected,
                                                   of_record=batch.of_record)
        except Exception as exc:  # this batch's own answer (503, 400, ...)
            fail(batch.future, exc)
            return exc if isinstance(exc, DatabaseUnavailable) else None
        _answer(batch, result)
        return None

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.ingest_group_waiting.set(len(self._waiting))

    def _count(self, how: str, batches: int) -> None:
        if self.metrics is not None:
            self.metrics.ingest_groups.labels(how).inc()
            self.metrics.ingest_grouped_batches.labels(how).inc(batches)


def retrieve(future: asyncio.Future[Any]) -> None:
    """A done callback: a future nobody awaits any more leaves no "exception never
    retrieved" (its caller was cancelled; the group it joined still commits or fails)."""
    if not future.cancelled():
        future.exception()


def _answer(batch: _Batch, result: IngestResult) -> None:
    if not batch.future.done():
        batch.future.set_result(result)


def fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    """Answer a caller's future with what storing its lines raised (a cancel, cancelled)."""
    if future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(exc)
