"""Committed lines handed from this process's ingest to its feeds, without a read.

A feed reads a workflow's new lines when a NOTIFY names it (hub.py Feed.refresh, one
statement: store/live.py). When the commit came from this same process, the lines are
already here: the ingest offers them (Store.handoff) before its COMMIT under a token that
goes out in the NOTIFY payload (`"h"`), and the hub, dispatching that NOTIFY, hands each
feed its workflow's lines instead of waking it to read them (Feed.take).

A feed takes them only when nothing can be out of order: the NOTIFYs arrive in commit
order on the one LISTEN connection, so a feed that has no NOTIFY pending (not dirty), is
not reading, and has delivered exactly up to the first id of this commit in its workflow
(`last == base`: the commit's ids for a workflow are one run, base+1..upto, allocated
under the workflow's row lock) has every earlier line and status already. Anything else
(a status or another commit whose NOTIFY came first, a feed behind or ahead, a batch
larger than a feed reads at once) wakes the feed to read, as before. Other replicas do
not know the token and read. A token whose NOTIFY never comes (a rolled-back
transaction withdraws its own; a LISTEN reconnect reads everything anyway) is dropped
with the oldest once MAX_HELD offers, or two feed reads' worth of bytes, are held.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import itertools
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from reana_log_sse.follow.queue import read_bytes
from reana_log_sse.store.lines import Line
from reana_log_sse.store.rows import PreparedLine

MAX_HELD = 256  # offers whose NOTIFY has not come yet


@dataclasses.dataclass(frozen=True, slots=True)
class Handed:
    """One workflow's lines of one commit: ids base+1 .. upto, in order; nbytes: their
    size as a feed's read counts it (queue.read_bytes)."""

    base: int
    upto: int
    lines: list[Line]
    nbytes: int


class Handoffs:
    """The hub's side of Store.handoff (store/store.py calls offer and withdraw). feeds:
    the hub's feeds by workflow (hub.py Feed, each with its read_size); budget: the most
    bytes a feed's read holds (its ReadSize budget)."""

    def __init__(self, feeds: Mapping[uuid.UUID, Any], budget: int) -> None:
        self.feeds = feeds
        self.budget = budget
        self.held_bytes = 0  # of the offers whose NOTIFY has not come yet
        self._prefix = uuid.uuid4().hex[:12]  # this process's tokens
        self._count = itertools.count(1)
        self._held: collections.OrderedDict[str, dict[uuid.UUID, Handed]] = (
            collections.OrderedDict())

    def offer(self, parts: Sequence[tuple[Sequence[PreparedLine], dict[uuid.UUID, int]]],
              steps: dict[tuple[uuid.UUID, str], str], last: dict[uuid.UUID, int],
              counts: dict[uuid.UUID, int]) -> str | None:
        """The lines of a transaction about to commit (parts: batches with each
        workflow's base id; steps: the steps the COPY filled in), as stored, for the
        workflows followed here; returns the token to send with its NOTIFY, or None when
        no feed here would take any."""
        feeds = self.feeds
        # the workflows followed here whose lines one read of their feed would hold
        by: dict[uuid.UUID, list[Line]] = {
            w: [] for w, n in counts.items()
            if (feed := feeds.get(w)) is not None and n <= feed.read_size.lines}
        if not by:
            return None
        names = {w: str(w) for w in by}
        utc = dt.UTC
        for lines, bases in parts:
            for line in lines:
                w = line.workflow_id
                out = by.get(w)
                if out is None:
                    continue
                step = line.step
                if step is None and line.job_id is not None:
                    step = steps.get((w, line.job_id))
                # as a read gives it back: the COPY's step, the time in UTC
                out.append(Line(bases[w] + line.ord, names[w], line.kind, line.job_id, step,
                                line.stream, line.ts.astimezone(utc), line.message,
                                line.truncated))
        handed: dict[uuid.UUID, Handed] = {}
        for w, lines in by.items():
            nbytes = read_bytes(lines)
            if nbytes <= self.budget:
                handed[w] = Handed(last[w] - counts[w], last[w], lines, nbytes)
        if not handed:
            return None
        token = f"{self._prefix}-{next(self._count)}"
        self._held[token] = handed
        self.held_bytes += sum(h.nbytes for h in handed.values())
        # offers whose NOTIFY does not come (LISTEN down) go, oldest first: what waits
        # here is bounded in bytes, as a feed's read is
        while len(self._held) > MAX_HELD or self.held_bytes > 2 * self.budget:
            self._drop(next(iter(self._held)))
        return token

    def withdraw(self, token: str) -> None:
        """The transaction did not commit, or its NOTIFY went without the token."""
        self._drop(token)

    def take(self, token: object) -> dict[uuid.UUID, Handed] | None:
        """The lines offered under a NOTIFY's token, if this process offered them."""
        if not isinstance(token, str):
            return None
        return self._drop(token)

    def clear(self) -> None:
        """The LISTEN connection was lost: every feed reads what it missed."""
        self._held.clear()
        self.held_bytes = 0

    def _drop(self, token: str) -> dict[uuid.UUID, Handed] | None:
        handed = self._held.pop(token, None)
        if handed is not None:
            self.held_bytes -= sum(h.nbytes for h in handed.values())
        return handed
