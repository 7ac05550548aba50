"""What a log stream says, decoded: the text/event-stream parser and the events it yields.

Sans I/O and with no dependency but orjson: `SSEDecoder` turns byte chunks into (event,
data, id) triples; `LogLine`, `StatusChange` and `End` are what `client.LogFollower`
yields for them. Used by the client, the CLI, the benchmark's followers and the tests.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

__all__ = ["End", "Event", "LogLine", "RawEvent", "SSEDecoder", "StatusChange"]

# -- events --------------------------------------------------------------------------------

class LogLine:
    """One log line. `data` is the server's JSON object, parsed only when a field is read."""

    __slots__ = ("id", "_data", "_fields")

    def __init__(self, id: int, data: bytes | None = None,
                 fields: dict[str, Any] | None = None) -> None:
        self.id = id
        self._data = data
        self._fields = fields

    @property
    def data(self) -> bytes:
        """The line as one JSON object (the stream's `data:`), e.g. for `--json`."""
        if self._data is None:
            self._data = orjson.dumps(self._fields)
        return self._data

    @property
    def fields(self) -> dict[str, Any]:
        if self._fields is None:
            self._fields = orjson.loads(self._data)  # type: ignore[arg-type]
        return self._fields

    @property
    def workflow_id(self) -> str | None:
        return self.fields.get("workflow_id")

    @property
    def kind(self) -> str | None:
        """"job" or "workflow" (engine logs)."""
        return self.fields.get("kind")

    @property
    def job_id(self) -> str | None:
        return self.fields.get("job_id")

    @property
    def step(self) -> str | None:
        return self.fields.get("step")

    @property
    def stream(self) -> str | None:
        """"stdout" or "stderr"."""
        return self.fields.get("stream")

    @property
    def timestamp(self) -> str | None:
        """When the container wrote the line (RFC 3339, UTC)."""
        return self.fields.get("timestamp")

    @property
    def message(self) -> str:
        return self.fields.get("message") or ""

    @property
    def truncated(self) -> bool:
        return bool(self.fields.get("truncated"))

    def __repr__(self) -> str:
        return f"LogLine(id={self.id}, data={self.data!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogLine) and (self.id, self.fields) == (other.id, other.fields)

    __hash__ = None  # type: ignore[assignment]


@dataclasses.dataclass(frozen=True, slots=True)
class StatusChange:
    """The workflow (job_id and step None) or one of its jobs changed status."""

    workflow_id: str | None
    job_id: str | None
    step: str | None
    status: str

    @property
    def is_workflow(self) -> bool:
        return self.job_id is None and self.step is None


@dataclasses.dataclass(frozen=True, slots=True)
class End:
    """The workflow reached a terminal status and every line before it was sent."""

    workflow_id: str | None
    status: str


Event = LogLine | StatusChange | End


# -- the SSE parser ------------------------------------------------------------------------

RawEvent = tuple[bytes, bytes, bytes | None]  # (event name, data, last event id)


class SSEDecoder:
    """An incremental text/event-stream parser (WHATWG rules) over byte chunks, sans I/O.

    `feed(chunk)` returns the events completed by that chunk as (event, data, id); the
    event name defaults to b"message"; comments (`: ping`) are skipped; `retry:` is kept in
    `self.retry`; LF, CRLF and CR line ends are all accepted, split anywhere.
    """

    __slots__ = ("_tail", "last_id", "retry", "_started", "_skip_lf")

    def __init__(self) -> None:
        self._tail = b""  # the start of an event whose blank line has not come yet
        self.last_id: bytes | None = None
        self.retry: int | None = None
        self._started = False
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[RawEvent]:
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":  # the second half of a CRLF split between two chunks
                chunk = chunk[1:]
        if b"\r" in chunk:
            # a CR at the very end may be the first half of a CRLF: skip that LF next time
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._tail + chunk if self._tail else chunk
        if not self._started:
            if len(buf) < 3 and b"\xef\xbb\xbf".startswith(buf):
                self._tail = buf
                return []
            self._started = True
            buf = buf.removeprefix(b"\xef\xbb\xbf")
        events = buf.split(b"\n\n")  # whole events: each ended by a blank line
        self._tail = events.pop()
        out: list[RawEvent] = []
        for frame in events:
            # the frames reana-log-sse writes, the hot path: event, id, one data line
            if frame[:15] == b"event: log\nid: ":
                head, sep, data = frame.partition(b"\ndata: ")
                eid = head[15:]
                if sep and b"\n" not in data and b"\n" not in eid and b"\0" not in eid:
                    self.last_id = eid
                    out.append((b"log", data, self.last_id))
                    continue
            self._frame(frame, out)
        return out

    def _frame(self, frame: bytes, out: list[RawEvent]) -> None:
        """The general rules, for one event's lines (the blank line that ends it excluded)."""
        event, data = b"", []
        for line in frame.split(b"\n"):
            if not line:  # a blank line inside: an (empty) event boundary
                if data:
                    out.append((event or b"message", b"\n".join(data), self.last_id))
                event, data = b"", []
                continue
            if line[0] == 58:  # b":" a comment
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
            elif name == b"event":
                event = value
            elif name == b"id":
                if b"\0" not in value:
                    self.last_id = value
            elif name == b"retry" and value.isdigit():
                self.retry = int(value)
        if data:
            out.append((event or b"message", b"\n".join(data), self.last_id))
