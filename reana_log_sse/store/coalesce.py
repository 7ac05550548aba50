"""The live tap's writer: the chunks of every follow stored together, at most one
transaction (and one NOTIFY) per window, however many follows there are.

Each follow (kubernetes/tap.py) stores a chunk the apiserver sent before it reads the
next. One transaction per chunk made 100 follows of 20 lines/s up to 2,000 NOTIFYing
commits/s (docs/design.md, "the live tap, as built"); group commit (group.py) alone joins
only the chunks that come while a transaction is in flight, so its commits/s follow the
commit's duration, not the load. Here a chunk waits for the window instead: the first
chunk after a quiet window goes at once, later ones wait until `window` seconds after the
previous flush. So flushes come at most 1/window a second, and a chunk waits at most one
window, plus the group in flight if its flush queues in group.py.

A quiet follow beside busy ones (a job that writes a line now and then, while others
write many) would still wait for the window: 12 ms on average and up to 25, most of what
its line took from the pod to the browser (docs/performance.md, "The tap's quiet line").
So a chunk whose source (the follow, `submit(source=)`) sent nothing for `quiet` seconds
goes at once, taking what waits with it, and at most one such express flush goes per
`quiet` seconds; a quiet chunk that finds it spent waits for the next one or the window,
whichever comes first. Flushes then come at most 1/window + 1/quiet a second (50 at the
defaults, 25 ms and 100 ms), still whatever the number of follows.

A flush merges its chunks into one batch and stores it through Store.ingest (group commit
when on) with of_record=False: one transaction with one NOTIFY, the direct COPY, or the
staged path when a line is stored already (a new follow's lookback re-reads lines Vector
stored), which skips exactly those lines in that same one transaction. Ids: a follow has
at most one chunk in flight (it awaits its answer), the merge puts each chunk's lines
after the previous chunks' in their workflows, and the allocation row-locks the workflows
until commit, so ids still increase per workflow in commit order. A flush that fails for
any reason but the database being out is stored again chunk by chunk, side by side, so a
chunk's answer never depends on the chunks it was merged with (as group.py does); each
follow resumes from its own cursor on its own failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

from reana_log_sse.store.errors import DatabaseUnavailable
from reana_log_sse.store.group import fail, retrieve
from reana_log_sse.store.rows import IngestResult, PreparedLine

logger = logging.getLogger("reana_log_sse")


class Ingester(Protocol):
    """What the coalescer needs of its Store (store.py)."""

    async def ingest(
        self, lines: Sequence[PreparedLine], rejected: Sequence[tuple[str, str]] = (),
        *, of_record: bool = True,
    ) -> IngestResult: ...

    async def ingest_alone(
        self, lines: Sequence[PreparedLine], rejected: Sequence[tuple[str, str]] = (),
        *, of_record: bool = True,
    ) -> IngestResult: ...


@dataclasses.dataclass(eq=False, slots=True)
class _Chunk:
    lines: Sequence[PreparedLine]
    future: asyncio.Future[None]


class Coalescer:
    """submit() a follow's chunk; it returns once the chunk is committed (or raises what
    storing it raised). window: seconds between flushes (0: each loop pass flushes what
    it got); max_lines: a flush goes at once when this many lines wait; quiet: a source
    silent this long has its next chunk flushed at once, at most once per `quiet` seconds
    (module docstring; 0: no express flushes); stored: called with the number of lines
    each commit stored (duplicates skipped)."""

    def __init__(self, store: Ingester, *, window: float, max_lines: int, quiet: float = 0.0,
                 stored: Callable[[int], object] | None = None) -> None:
        self.store = store
        self.window = window
        self.max_lines = max_lines
        self.quiet = quiet
        self.stored = stored
        self.flushes = 0  # merged batches handed to the store
        self.express = 0  # of which went early for a quiet source
        self._pending: list[_Chunk] = []
        self._lines = 0
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._due = float("inf")  # loop time the timer fires at
        self._last = float("-inf")  # loop time of the last flush
        self._express_at = float("-inf")  # loop time the next express flush may go
        self._express_due = False  # the timer is a quiet chunk's express flush
        # source -> loop time of its last chunk; pruned of those quiet for `quiet`
        self._seen: dict[Hashable, float] = {}
        self._prune_at = 64
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Chunks waiting for the next flush (not those in flight)."""
        return len(self._pending)

    async def submit(self, lines: Sequence[PreparedLine], *,
                     source: Hashable | None = None) -> None:
        """source: who sent the chunk (a follow); one silent for `quiet` seconds has its
        chunk go early (module docstring)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append(_Chunk(lines, future))
        self._lines += len(lines)
        due = max(now, self._last + self.window)
        express = False
        if source is not None and self.quiet > 0 and self._was_quiet(source, now):
            early = max(now, self._express_at)
            if early < due:
                due, express = early, True
        if self._lines >= self.max_lines:
            self._flush()
        elif self._timer is None or due < self._due:
            if self._timer is not None:
                self._timer.cancel()
            # call_soon, not a flush here: the chunks other follows parse in this same
            # loop pass join this one
            self._timer = (loop.call_soon(self._flush) if due <= now
                           else loop.call_at(due, self._flush))
            self._due, self._express_due = due, express
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # a follow cancelled (its workflow unfollowed, the pod gone) leaves its chunk
            # in the flush, as group.py leaves a batch in its group; the answer nobody
            # awaits now is retrieved when it comes
            future.add_done_callback(retrieve)
            raise

    async def close(self) -> None:
        """Flush what waits and wait for every flush (before the pool closes)."""
        if self._pending:
            self._flush()
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def _was_quiet(self, source: Hashable, now: float) -> bool:
        """Whether `source` sent nothing for `quiet` seconds (or never); notes it sent now."""
        last = self._seen.get(source)
        self._seen[source] = now
        if len(self._seen) > self._prune_at:  # forget the quiet ones: bounded by the busy
            self._seen = {k: t for k, t in self._seen.items() if now - t < self.quiet}
            self._prune_at = max(64, 2 * len(self._seen))
        return last is None or now - last >= self.quiet

    def _flush(self) -> None:
        express = self._express_due
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due, self._express_due = float("inf"), False
        if not self._pending:
            return
        chunks, self._pending, self._lines = self._pending, [], 0
        self._last = asyncio.get_running_loop().time()
        if express:
            self._express_at = self._last + self.quiet
            self.express += 1
        self.flushes += 1
        task = asyncio.create_task(self._store(chunks), name="tap-flush")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _store(self, chunks: list[_Chunk]) -> None:
        try:
            try:
                result = await self.store.ingest(merge([c.lines for c in chunks]), (),
                                                 of_record=False)
            except DatabaseUnavailable as exc:  # out for every chunk alike: no split
                for chunk in chunks:
                    fail(chunk.future, exc)
                return
            except Exception as exc:  # noqa: BLE001 - any other failure: each chunk alone
                if len(chunks) == 1:
                    fail(chunks[0].future, exc)
                    return
                logger.debug("tap flush of %d chunks failed (%s): storing each alone",
                             len(chunks), type(exc).__name__)
                await asyncio.gather(*(self._alone(chunk) for chunk in chunks))
                return
            self._count(result)
            for chunk in chunks:
                _answer(chunk)
        except BaseException as exc:  # cancelled (the loop ends): nobody is left waiting
            for chunk in chunks:
                fail(chunk.future, exc)
            raise

    async def _alone(self, chunk: _Chunk) -> None:
        try:
            result = await self.store.ingest_alone(chunk.lines, of_record=False)
        except Exception as exc:  # noqa: BLE001 - this chunk's own failure
            fail(chunk.future, exc)
            return
        self._count(result)
        _answer(chunk)

    def _count(self, result: IngestResult) -> None:
        if self.stored is not None and result.accepted:
            self.stored(result.accepted)


def merge(batches: Sequence[Sequence[PreparedLine]]) -> list[PreparedLine]:
    """One batch of several: each batch's ords follow the previous batches' in their
    workflows (ord is a line's 1-based position among its workflow's lines in a batch,
    counting up; rows.PreparedLine), so ids keep the batches' order."""
    if len(batches) == 1:
        return list(batches[0])
    before: dict[uuid.UUID, int] = {}
    merged: list[PreparedLine] = []
    for lines in batches:
        bases = dict(before)
        for line in lines:
            base = bases.get(line.workflow_id, 0)
            merged.append(line._replace(ord=base + line.ord) if base else line)
            before[line.workflow_id] = base + line.ord  # ords count up: the last is the top
    return merged


def _answer(chunk: _Chunk) -> None:
    if not chunk.future.done():
        chunk.future.set_result(None)
