"""A stored log line and its wire forms (JSON object, SSE frame, text line)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson


class Line:
    """One stored line. Its SSE frame is encoded once and shared by every follower.
    workflow_id is the UUID's text, made once per read rather than once per line."""

    __slots__ = ("seq", "workflow_id", "kind", "job_id", "step", "stream", "ts", "message",
                 "truncated", "_frame")

    def __init__(
        self, seq: int, workflow_id: str, kind: str, job_id: str | None, step: str | None,
        stream: str, ts: dt.datetime, message: str, truncated: bool,
    ) -> None:
        self.seq = seq
        self.workflow_id = workflow_id
        self.kind = kind
        self.job_id = job_id
        self.step = step
        self.stream = stream
        self.ts = ts
        self.message = message
        self.truncated = truncated
        self._frame: bytes | None = None

    @classmethod
    def from_row(cls, workflow_id: str, row: tuple[Any, ...]) -> Line:
        seq, kind, job_id, step, stream, ts, message, truncated = row
        return cls(seq, workflow_id, kind, job_id, step, stream, ts, message, truncated)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.seq,
            "workflow_id": self.workflow_id,
            "kind": self.kind,
            "job_id": self.job_id,
            "step": self.step,
            "stream": self.stream,
            "timestamp": self.ts,
            "message": self.message,
        }
        if self.truncated:
            data["truncated"] = True
        return data

    def json(self) -> bytes:
        return orjson.dumps(self.as_dict(), option=orjson.OPT_UTC_Z)

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = b"event: log\nid: %d\ndata: %s\n\n" % (self.seq, self.json())
        return self._frame

    def text(self, prefix: str = "none") -> str:
        """The line for format=text; prefix "step" or "job" as `reana-log-sse logs` prints
        it (`[fitdata] `, `[fitdata:stderr] `; a line of no job is `[workflow] `)."""
        end = (" [truncated]" if self.truncated else "") + "\n"
        if prefix == "none":
            return self.message + end
        label = (self.step or self.job_id) if prefix == "step" else self.job_id
        label = label or ("workflow" if self.kind == "workflow" else self.kind)
        stream = ":stderr" if self.stream == "stderr" else ""
        return f"[{label}{stream}] {self.message}{end}"


def event_frame(event: str, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event.encode(), orjson.dumps(data))
