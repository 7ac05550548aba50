"""What a follower's stream is handed: batches of lines, statuses, `end`, pings and
`leave`, queued per follower in a Subscription bounded in lines and bytes; and how many
lines a read asks for (ReadSize). hub.py's feeds fill the queues; stream.py drains them."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Protocol

from reana_log_sse.follow.direct import Direct
from reana_log_sse.metrics import Metrics
from reana_log_sse.store.lines import Line
from reana_log_sse.store.snapshot import StatusRow


class Feed(Protocol):
    """What a subscription needs of its feed (hub.py Feed)."""

    @property
    def hub(self) -> Any: ...  # hub.Hub: its metrics

    def unsubscribe(self, sub: Subscription) -> None: ...


@dataclasses.dataclass(slots=True)
class Batch:
    after: int
    upto: int
    lines: list[Line]
    notified_at: float  # monotonic time the NOTIFY arrived
    committed_at: float | None  # wall-clock epoch the ingest sent with the NOTIFY
    _frames: bytes | None = None
    _nbytes: int = -1
    pending: int = 0  # followers that have yet to write it (or drop it): see settle()

    @property
    def nbytes(self) -> int:
        """The size of its lines' frames: what a follower's queue holds for it."""
        if self._nbytes < 0:
            self._nbytes = sum([len(line.frame) for line in self.lines])
        return self._nbytes

    def settle(self, metrics: Metrics) -> None:
        """One follower is done with this batch (written, filtered out or dropped). When
        the last one is, the batch's delays are observed once: the delay to its slowest
        follower (metrics per batch, not per follower per batch)."""
        self.pending -= 1
        if self.pending == 0 and self.lines:
            metrics.notify_to_send.observe(time.monotonic() - self.notified_at)
            if self.committed_at is not None:
                metrics.stage_delay.labels("committed_to_sent").observe(
                    max(0.0, time.time() - self.committed_at))

    def frames(self) -> bytes:
        """Every line's frame in one bytes object, joined once for all the followers."""
        if self._frames is None:
            self._frames = b"".join([line.frame for line in self.lines])
        return self._frames


@dataclasses.dataclass(frozen=True, slots=True)
class StatusItem:
    after: int
    status: StatusRow


@dataclasses.dataclass(frozen=True, slots=True)
class End:
    after: int
    status: str


@dataclasses.dataclass(frozen=True, slots=True)
class Ping:
    """Keep-alive for an idle follower: the hub's one ping timer queues it (Hub._pings)."""

    after: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Leave:
    """The server is shutting down: finish the stream cleanly; the client resumes."""

    after: int = 0


PING = Ping()
Item = Batch | StatusItem | End | Ping | Leave


def read_bytes(lines: list[Line]) -> int:
    """What a read of these lines weighs against its budget (ReadSize): their text and
    about 256 bytes each."""
    return sum([len(line.message) for line in lines]) + 256 * len(lines)


class ReadSize:
    """How many lines the next read of a workflow asks for, so that it holds about
    `budget` bytes rather than `most` lines of any size: it starts with what fits if
    every line is as long as allowed, doubles while full reads stay under half the
    budget, and shrinks to fit when a read was over it."""

    __slots__ = ("budget", "lines", "most")

    def __init__(self, most: int, budget: int, line_bytes: int) -> None:
        self.most = most
        self.budget = budget
        self.lines = max(16, min(most, budget // (line_bytes + 256)))

    def observe(self, lines: list[Line]) -> None:
        """A read of Line objects (the feed's)."""
        self.observe_size(len(lines), read_bytes(lines))

    def observe_frames(self, count: int, frames: list[tuple[int, bytes]]) -> None:
        """A read of `count` lines as frames joined by PostgreSQL (the catch-up's): their
        exact size."""
        self.observe_size(count, sum([len(frame) for _, frame in frames]))

    def observe_size(self, count: int, size: int) -> None:
        if not count:
            return
        if size > self.budget:
            self.lines = max(16, self.lines * self.budget // size)
        elif count >= self.lines and 2 * size <= self.budget:
            self.lines = min(self.most, 2 * self.lines)


class Subscription:
    """A follower's queue of items from its workflow's Feed, bounded in lines and in
    bytes of frames (a few long lines weigh as much as many short ones).

    The queue is a list, not a deque: a caught-up follower's queue is empty nearly
    always (live batches are written straight to it, direct.py), and an empty deque
    costs 624 bytes, a list 56 (docs/performance.md, "Memory per stream"); a queue is
    short, so taking from its head stays cheap."""

    __slots__ = ("feed", "limit", "limit_bytes", "items", "queued_lines", "queued_bytes",
                 "ending", "closed", "response", "direct", "_waiter")

    def __init__(self, feed: Feed, limit: int, limit_bytes: int) -> None:
        self.feed = feed
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.items: list[Item] = []
        self.queued_lines = 0
        self.queued_bytes = 0
        self.ending = False
        self.closed = False
        self.response: Any = None  # the stream's response (stream.FollowResponse)
        self.direct: Direct | None = None  # its way to write live batches (direct.py)
        self._waiter: asyncio.Future[None] | None = None

    def push(self, item: Item) -> None:
        if self.ending:  # nothing after `end` matters, and it must never be dropped
            if isinstance(item, Batch):
                item.settle(self.feed.hub.metrics)
            return
        self.ending = isinstance(item, End)
        lines, size = (len(item.lines), item.nbytes) if isinstance(item, Batch) else (0, 0)
        if self.queued_lines + lines > self.limit or self.queued_bytes + size > self.limit_bytes:
            # Too far behind: forget what is queued. The next item's `after` is then
            # ahead of the follower, which reads the gap from the database instead.
            self._settle_all()
            self.feed.hub.metrics.follower_overflows.inc()
            if lines > self.limit or size > self.limit_bytes:
                item.settle(self.feed.hub.metrics)  # type: ignore[union-attr]
                item = Batch(item.upto, item.upto, [], item.notified_at, item.committed_at)  # type: ignore[union-attr]
                lines = size = 0
        self.items.append(item)
        self.queued_lines += lines
        self.queued_bytes += size
        self._wake()

    def ping(self) -> None:
        """Queue a keep-alive if nothing else is queued (a busy stream needs none)."""
        if not self.items and not self.ending:
            self.items.append(PING)
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> Item | None:
        """The next item, or None if none is queued."""
        if not self.items:
            return None
        item = self.items.pop(0)
        if isinstance(item, Batch):
            self.queued_lines -= len(item.lines)
            self.queued_bytes -= item.nbytes
        return item

    def waiter(self) -> asyncio.Future[None]:
        """A future done when an item is queued (or the stream is to end). The stream
        awaits it itself (stream.follow): an idle stream holds no coroutine for its wait
        (docs/performance.md, "Memory per stream"). Until the next one, a woken waiter
        stays done, which tells direct.deliver that the task is about to run."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        return waiter

    def next_batch(self, cursor: int) -> Batch | None:
        """The next queued item if it is a batch that follows on from `cursor` (no gap
        to read first), without waiting: a follower that fell behind sends what queued
        up as one write."""
        items = self.items
        if items:
            item = items[0]
            if isinstance(item, Batch) and item.after <= cursor:
                del items[0]
                self.queued_lines -= len(item.lines)
                self.queued_bytes -= item.nbytes
                return item
        return None

    def _settle_all(self) -> None:
        metrics = self.feed.hub.metrics
        for queued in self.items:
            if isinstance(queued, Batch):
                queued.settle(metrics)
        self.items.clear()
        self.queued_lines = self.queued_bytes = 0

    def leave(self) -> None:
        """Shutdown: the follower's next item tells it to finish its stream now."""
        self.items.insert(0, Leave())
        self._wake()

    def close(self) -> None:
        """Leave the feed (idempotent: a stream that never ran is closed by its response)."""
        if not self.closed:
            self.closed = True
            self._settle_all()
            self.feed.unsubscribe(self)
        # the response holds this subscription: without this link back, a closed stream
        # is freed when its request ends, not by the next full cyclic GC (which, with
        # streams resuming every few seconds, let RSS creep up between collections)
        self.response = None
        self.direct = None
