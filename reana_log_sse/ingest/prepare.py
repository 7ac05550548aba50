"""One batch's events -> lines to store: the Preparer both decoders feed, and the model path
(pydantic, the one definition of a valid event; fastpath.py is the other decoder)."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from types import EllipsisType
from typing import Any

import pydantic

from reana_log_sse.ingest.body import (
    dump_rejected,
)
from reana_log_sse.ingest.models import LogEvent
from reana_log_sse.store.identity import LineKeys, parse_ns, uuid_of
from reana_log_sse.store.partitions import Window
from reana_log_sse.store.rows import PreparedLine

logger = logging.getLogger("reana_log_sse")


def truncate(message: str, limit: int) -> tuple[str, bool]:
    if len(message) * 4 <= limit:  # cannot exceed the limit in UTF-8
        return message, False
    encoded = message.encode("utf-8")
    if len(encoded) <= limit:
        return message, False
    return encoded[:limit].decode("utf-8", errors="ignore"), True


def _reason(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


_line = tuple.__new__  # PreparedLine(...) without NamedTuple's Python-level __new__
_BLAKE2B_16 = hashlib.blake2b(digest_size=16)  # copied per line, never updated itself


class Preparer:
    """Turns one batch's valid events into lines to store: the window check, NUL and
    length handling, the dedupe digest and the per-workflow ordinal. Both decoders (the
    pydantic model below and the msgspec fast path, fastpath.py) feed it, so what is
    stored, and its digest, cannot depend on which of them decoded the batch."""

    __slots__ = ("lines", "max_line_bytes", "window", "_start", "_end", "_ords", "_names",
                 "_seen", "_keys")

    def __init__(self, *, max_line_bytes: int, window: Window,
                 keys: LineKeys | None = None) -> None:
        self.lines: list[PreparedLine] = []
        self.max_line_bytes = max_line_bytes
        self.window = window
        self._start, self._end = window.epoch_bounds
        self._ords: dict[int, int] = {}  # keyed by the UUID's int: uuid.UUID hashes in Python
        self._names: dict[int, str] = {}
        self._seen: set[bytes] = set()
        # line_key: the identity the live tap can reproduce. A batch counts identical
        # lines within itself; the tap passes the counts its follow carries (identity.py)
        self._keys = LineKeys() if keys is None else keys

    def add(self, wid: uuid.UUID, event: Any, ts: dt.datetime, collected: dt.datetime | None,
            ts_text: str, ns: int | None | EllipsisType = ...) -> str | None:
        """Append the line of a valid event; or return why it cannot be stored.
        `event` has LogEvent's text attributes; ts_text is the raw timestamp text, which
        the digest covers (nanoseconds included); ns, if the caller read it already:
        identity.parse_ns(ts_text)."""
        if ts.tzinfo is None:  # CRI timestamps carry a zone; a bare one is taken as UTC
            ts = ts.replace(tzinfo=dt.UTC)
        if not self._start <= ts.timestamp() < self._end:
            return (f"timestamp outside the stored window {self.window.first} .. "
                    f"{self.window.last}")
        if collected is not None and collected.tzinfo is None:
            collected = collected.replace(tzinfo=dt.UTC)
        message = event.message
        if "\x00" in message:  # PostgreSQL text cannot hold NUL
            message = message.replace("\x00", "\ufffd")
        cut = False
        if len(message) * 4 > self.max_line_bytes:  # else it fits (truncate's first test)
            message, cut = truncate(message, self.max_line_bytes)
        # nor any other text field (a NUL there used to fail the whole batch with a 500)
        job_id, step, pod, container = event.job_id, event.step, event.pod, event.container
        if job_id is not None and "\x00" in job_id:
            job_id = job_id.replace("\x00", "\ufffd")
        if step is not None and "\x00" in step:
            step = step.replace("\x00", "\ufffd")
        if pod is not None and "\x00" in pod:
            pod = pod.replace("\x00", "\ufffd")
        if container is not None and "\x00" in container:
            container = container.replace("\x00", "\ufffd")
        key_int = wid.int
        name = self._names.get(key_int)
        if name is None:
            name = self._names[key_int] = str(wid)
        key = "\x1f".join((name, event.kind, job_id or "", pod or "",
                           container or "", event.stream, ts_text,
                           message)).encode("utf-8", "replace")
        h = _BLAKE2B_16.copy()  # = hashlib.blake2b(key, digest_size=16), 20% cheaper
        h.update(key)
        digest = h.digest()
        seen = self._seen
        occurrence = 0
        while digest in seen:  # the same line twice in one batch is two lines
            occurrence += 1
            digest = hashlib.blake2b(key + b"\x1f%d" % occurrence, digest_size=16).digest()
        seen.add(digest)
        n = self._ords[key_int] = self._ords.get(key_int, 0) + 1
        line_key = None
        if pod and container:  # identity.py: what Vector and the tap agree on
            if ns is ...:
                ns = parse_ns(ts_text)
            if ns is not None:
                line_key = self._keys.key(name, pod, container, ns, message)
        self.lines.append(_line(PreparedLine, (
            wid, n, ts, uuid_of(digest), event.kind, job_id, step,
            pod, container, event.stream, message, cut, collected, line_key,
        )))
        return None


def prepare(
    events: list[Any], *, max_line_bytes: int, window: Window, keys: LineKeys | None = None,
    cut_at: int = -1,
) -> tuple[list[PreparedLine], list[tuple[str, str]]]:
    """Validate events with the model (the one definition of a valid event); returns the
    lines to store and (reason, raw event) rejections. `keys` counts identical lines for
    line_key across calls (the tap's follow); by default the batch counts them alone. The
    event at `cut_at` had its message cut before it came here (body.salvage): its line is
    marked truncated."""
    batch = Preparer(max_line_bytes=max_line_bytes, window=window, keys=keys)
    rejected: list[tuple[str, str]] = []
    validate = LogEvent.model_validate
    add = batch.add
    for index, raw in enumerate(events):
        if not isinstance(raw, dict):
            rejected.append(("event is not a JSON object", dump_rejected(raw)))
            continue
        try:
            event = validate(raw)
        except pydantic.ValidationError as exc:
            rejected.append((_reason(exc), dump_rejected(raw)))
            continue
        reason = add(event.workflow_id, event, event.timestamp, event.collected_at,
                     str(raw.get("timestamp")))
        if reason is not None:
            rejected.append((reason, dump_rejected(raw)))
        elif index == cut_at:
            batch.lines[-1] = batch.lines[-1]._replace(truncated=True)
    return batch.lines, rejected
