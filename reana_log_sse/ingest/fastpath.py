"""A strict fast decoder for canonical ingest batches (what vector/vector.yaml emits).

models.LogEvent stays the one definition of a valid event. This path accepts a strict
subset of what the model accepts, decodes it with msgspec (no Python per field), and
hands each event to the same ingest.Preparer as the model path. Whenever a batch holds
anything outside that subset (another shape, a number where text is expected, a
non-canonical UUID or timestamp, an event to reject), `prepare_fast` returns None and
the batch goes through the model path, whole, exactly as before.

Timestamps are parsed here, not by msgspec: msgspec rounds a nanosecond fraction to the
nearest microsecond (".123456789" -> .123457, and 23:59:59.999999999 becomes the next
second, even the next day's partition), where pydantic, which stored every line so far,
truncates it (.123456). A stored `ts` is part of the dedupe key `(dedupe, ts)`, so a
rounded one would store a batch retried across this change twice. The digest covers the
raw timestamp text, which both paths pass on unchanged.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import re
import uuid
from collections.abc import Generator
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

if TYPE_CHECKING:
    from reana_log_sse.ingest.prepare import Preparer
    from reana_log_sse.store.rows import PreparedLine

_Name = Annotated[str, msgspec.Meta(max_length=253)]  # as LogEvent's Field(max_length=253)

# The canonical UUID text (pydantic also takes braces, urn:uuid: and bare hex: the model
# path handles those).
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# RFC 3339 with a `T`, seconds, up to 9 fraction digits and `Z`, `+HH:MM` or nothing
# (naive: taken as UTC). Everything else pydantic accepts goes to the model path.
_TS = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)?")


class _Event(msgspec.Struct, frozen=True):
    """LogEvent's fields, with the two timestamps kept as text (parsed by _Timestamps)."""

    workflow_id: str
    stream: Literal["stdout", "stderr"]
    timestamp: str
    message: str
    kind: Literal["job", "workflow", "service"] = "job"
    job_id: _Name | None = None
    step: _Name | None = None
    pod: _Name | None = None
    container: _Name | None = None
    collected_at: str | None = None


_DECODER = msgspec.json.Decoder(list[_Event])
# A \uD800-\uDFFF escape: the model path replaces lone surrogates; keep that one place.
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


_datetime = dt.datetime


class _NotCanonical(Exception):
    pass


class _Timestamps:
    """Parses canonical timestamps as pydantic does (fraction truncated to microseconds,
    `Z` and offsets kept, naive left naive). The whole-second part and the zone are
    checked once per batch and cached (a batch's lines share a few seconds); per line,
    only the fraction is read."""

    __slots__ = ("_seconds", "_whole")

    def __init__(self) -> None:
        self._seconds: dict[str, tuple[int, int, int, int, int, int, dt.tzinfo | None,
                                       int | None]] = {}
        self._whole: dict[str, dt.datetime] = {}  # collected_at often repeats

    def parse(self, text: str) -> dt.datetime:
        return self.parse_exact(text)[0]

    def parse_exact(self, text: str) -> tuple[dt.datetime, int | None]:
        """The datetime, and the time in integer nanoseconds exactly as identity.parse_ns
        reads the same text (None for a naive one), from one reading of it."""
        n = len(text)
        if n and text[-1] == "Z":
            cut = n - 1
        elif n >= 25 and text[-6] in "+-":
            cut = n - 6
        else:
            cut = n
        key = text[:19] + text[cut:]
        parts = self._seconds.get(key)
        if parts is None:
            parts = self._seconds[key] = self._second(key)
        year, month, day, hour, minute, second, tz, whole_ns = parts
        frac = text[19:cut]
        if not frac:
            return _datetime(year, month, day, hour, minute, second, 0, tz), whole_ns
        if not (frac[0] == "." and 2 <= len(frac) <= 10 and frac[1:].isdigit()
                and frac.isascii()):
            raise _NotCanonical(text)
        nanos = int(frac[1:].ljust(9, "0"))  # parse_ns's reading; the first 6: pydantic's
        return (_datetime(year, month, day, hour, minute, second, nanos // 1000, tz),
                None if whole_ns is None else whole_ns + nanos)

    def parse_repeated(self, text: str) -> dt.datetime:
        when = self._whole.get(text)
        if when is None:
            when = self._whole[text] = self.parse(text)
        return when

    @staticmethod
    def _second(key: str) -> tuple[int, int, int, int, int, int, dt.tzinfo | None,
                                   int | None]:
        m = _TS.fullmatch(key)
        if m is None or m.group(7) is not None:
            raise _NotCanonical(key)
        zone = m.group(8) or ""
        tz: dt.tzinfo | None = None
        offset = dt.timedelta(0)
        if zone == "Z":
            tz = dt.UTC
        elif zone:
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if minutes > 59 or hours > 23:  # (+99:00 raised ValueError here: a 500)
                raise _NotCanonical(zone)
            offset = dt.timedelta(hours=hours, minutes=minutes)
            if zone[0] == "-":
                offset = -offset
            tz = dt.timezone(offset)
        fields = (int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)),
                  int(m.group(5)), int(m.group(6)))
        try:
            dt.datetime(*fields, tzinfo=tz)
        except ValueError as exc:  # Feb 30, 24:00, leap seconds...: the model decides
            raise _NotCanonical(key) from exc
        # identity.parse_ns: calendar.timegm of the fields, less the offset; naive: None
        whole_ns = (None if tz is None else
                    (calendar.timegm((*fields, 0, 0, 0)) - int(offset.total_seconds()))
                    * 1_000_000_000)
        return (*fields, tz, whole_ns)


def prepare_fast(body: bytes, batch: Preparer) -> list[PreparedLine] | None:
    """The lines of a canonical JSON-array batch whose every event is valid and inside
    the window, prepared by `batch` (a fresh ingest.Preparer); None for any other batch
    (the caller then takes the model path, with a fresh Preparer)."""
    steps = _prepare(body, batch, len(body) + 1)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def prepare_fast_yielding(body: bytes, batch: Preparer,
                                every: int = 200) -> list[PreparedLine] | None:
    """prepare_fast, giving the event loop a turn after each `every` events: a 1,000-line
    batch is ~5 ms of CPU, and each round trip of the group commit in flight (group.py)
    waits for a turn; without them a group's latency grows by a batch's CPU per round
    trip. The caller decodes one batch at a time (ingest.py)."""
    steps = _prepare(body, batch, every)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        await asyncio.sleep(0)


def _prepare(body: bytes, batch: Preparer, every: int
             ) -> Generator[None, None, list[PreparedLine] | None]:
    """prepare_fast's work, pausing (yield) after each `every` events."""
    if _SURROGATE.search(body):
        return None
    try:
        events = _DECODER.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # deep nesting too
        return None
    stamps = _Timestamps()
    ids: dict[str, uuid.UUID] = {}
    add = batch.add
    for start in range(0, len(events), every):
        if start:
            yield
        try:
            for e in events[start:start + every]:
                wid = ids.get(e.workflow_id)
                if wid is None:
                    if not _UUID.fullmatch(e.workflow_id):
                        return None
                    wid = ids[e.workflow_id] = uuid.UUID(e.workflow_id)
                collected = (None if e.collected_at is None
                             else stamps.parse_repeated(e.collected_at))
                ts, ns = stamps.parse_exact(e.timestamp)
                if add(wid, e, ts, collected, e.timestamp, ns) is not None:
                    return None  # a rejection: the model path stores it with its raw event
        except _NotCanonical:
            return None
    return batch.lines
