"""POST /ingest/vector: decode, validate, store, answer only after commit."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import logging
import uuid
from typing import Any

import orjson
import pydantic
import zstandard
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from .errors import PartitionMissing
from .fastpath import prepare_fast
from .identity import LineKeys, parse_ns
from .models import LogEvent
from .partitions import Window
from .store import PreparedLine

logger = logging.getLogger("reana_log_sse")


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed, at most `limit` bytes (else BodyTooLarge)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    raw = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding == "gzip":
        reader: Any = gzip.GzipFile(fileobj=io.BytesIO(raw))
    elif encoding == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw))
    else:
        raise HTTPException(415, f"unsupported Content-Encoding {encoding!r}: use gzip, zstd "
                            "or none")
    try:
        body = reader.read(limit + 1)
    except (OSError, EOFError, zstandard.ZstdError) as exc:
        raise HTTPException(400, f"body is not valid {encoding}: {exc}") from exc
    if len(body) > limit:
        raise BodyTooLarge
    return body


def parse_events(body: bytes, content_type: str) -> list[Any]:
    """A JSON array (Vector's json codec) or NDJSON; invalid UTF-8 is replaced, not fatal."""
    ndjson = _is_ndjson(content_type)
    try:
        return _parse(body, ndjson, orjson.loads)
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        pass
    # Slow path: invalid UTF-8 or lone surrogates. Replace them instead of refusing.
    text = body.decode("utf-8", errors="replace")
    try:
        events = _parse(text.encode("utf-8", "replace"), ndjson, json.loads)
    except ValueError as exc:
        raise HTTPException(400, f"body is not JSON or NDJSON: {exc}") from exc
    return [_scrub(e) for e in events]


def _is_ndjson(content_type: str) -> bool:
    return "ndjson" in content_type or "jsonlines" in content_type


def _parse(body: bytes, ndjson: bool, loads: Any) -> list[Any]:
    if ndjson:
        return [loads(line) for line in body.splitlines() if line.strip()]
    data = loads(body)
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        return [data]
    raise ValueError("expected a JSON array of events")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


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


def _uuid(digest: bytes) -> uuid.UUID:
    """uuid.UUID(bytes=digest) without its Python-level argument checks (a third of the
    cost): the two slots UUID.__init__ sets."""
    u = object.__new__(uuid.UUID)
    object.__setattr__(u, "int", int.from_bytes(digest))
    object.__setattr__(u, "is_safe", uuid.SafeUUID.unknown)
    return u


class Preparer:
    """Turns one batch's valid events into lines to store: the window check, NUL and
    length handling, the dedupe digest and the per-workflow ordinal. Both decoders (the
    pydantic model below and the msgspec fast path, fastpath.py) feed it, so what is
    stored, and its digest, cannot depend on which of them decoded the batch."""

    __slots__ = ("lines", "max_line_bytes", "window", "_start", "_end", "_ords", "_names",
                 "_seen", "_keys")

    def __init__(self, *, max_line_bytes: int, window: Window) -> None:
        self.lines: list[PreparedLine] = []
        self.max_line_bytes = max_line_bytes
        self.window = window
        self._start, self._end = window.epoch_bounds
        self._ords: dict[int, int] = {}  # keyed by the UUID's int: uuid.UUID hashes in Python
        self._names: dict[int, str] = {}
        self._seen: set[bytes] = set()
        self._keys = LineKeys()  # line_key: the identity the live tap can reproduce

    def add(self, wid: uuid.UUID, event: Any, ts: dt.datetime, collected: dt.datetime | None,
            ts_text: str) -> str | None:
        """Append the line of a valid event; or return why it cannot be stored.
        `event` has LogEvent's text attributes; ts_text is the raw timestamp text, which
        the digest covers (nanoseconds included)."""
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
        message, cut = truncate(message, self.max_line_bytes)
        key_int = wid.int
        name = self._names.get(key_int)
        if name is None:
            name = self._names[key_int] = str(wid)
        key = "\x1f".join((name, event.kind, event.job_id or "", event.pod or "",
                           event.container or "", event.stream, ts_text,
                           message)).encode("utf-8", "replace")
        digest = hashlib.blake2b(key, digest_size=16).digest()
        seen = self._seen
        occurrence = 0
        while digest in seen:  # the same line twice in one batch is two lines
            occurrence += 1
            digest = hashlib.blake2b(key + b"\x1f%d" % occurrence, digest_size=16).digest()
        seen.add(digest)
        n = self._ords[key_int] = self._ords.get(key_int, 0) + 1
        line_key = None
        if event.pod and event.container:  # identity.py: what Vector and the tap agree on
            ns = parse_ns(ts_text)
            if ns is not None:
                line_key = self._keys.key(name, event.pod, event.container, ns, message)
        self.lines.append(PreparedLine(
            wid, n, ts, _uuid(digest), event.kind, event.job_id, event.step,
            event.pod, event.container, event.stream, message, cut, collected, line_key,
        ))
        return None


def prepare(
    events: list[Any], *, max_line_bytes: int, window: Window
) -> tuple[list[PreparedLine], list[tuple[str, str]]]:
    """Validate events with the model (the one definition of a valid event); returns the
    lines to store and (reason, raw event) rejections."""
    batch = Preparer(max_line_bytes=max_line_bytes, window=window)
    rejected: list[tuple[str, str]] = []
    validate = LogEvent.model_validate
    add = batch.add
    for raw in events:
        if not isinstance(raw, dict):
            rejected.append(("event is not a JSON object", _dump(raw)))
            continue
        try:
            event = validate(raw)
        except pydantic.ValidationError as exc:
            rejected.append((_reason(exc), _dump(raw)))
            continue
        reason = add(event.workflow_id, event, event.timestamp, event.collected_at,
                     str(raw.get("timestamp")))
        if reason is not None:
            rejected.append((reason, _dump(raw)))
    return batch.lines, rejected


def _dump(raw: Any) -> str:
    try:
        text = orjson.dumps(raw).decode()
    except TypeError:
        text = repr(raw)
    return text[:100_000]


async def ingest_vector(request: Request) -> JSONResponse:
    state = request.app.state
    metrics = state.metrics
    try:
        state.ingest_auth.check(request)
        try:
            body = await read_body(request, state.settings.max_body_bytes)
        except BodyTooLarge:
            raise HTTPException(413, f"body larger than {state.settings.max_body_bytes} bytes "
                                "(REANA_LOG_SSE_MAX_BODY_BYTES)") from None
        content_type = request.headers.get("content-type", "")
        window = state.window()
        max_line = state.settings.max_line_bytes
        lines: list[PreparedLine] | None = None
        rejected: list[tuple[str, str]] = []
        if not _is_ndjson(content_type):  # canonical batches skip the model (fastpath.py)
            lines = prepare_fast(body, Preparer(max_line_bytes=max_line, window=window))
        if lines is None:
            events = parse_events(body, content_type)
    except HTTPException as exc:
        metrics.ingest_requests.labels(str(exc.status_code)).inc()
        raise
    if lines is None:
        lines, rejected = prepare(events, max_line_bytes=max_line, window=window)
        metrics.ingest_batches.labels("model").inc()
    else:
        metrics.ingest_batches.labels("fast").inc()
    try:
        result = await state.store.ingest(lines, rejected)
    except PartitionMissing:
        await state.maintain()
        result = await state.store.ingest(lines, rejected)
    _observe(metrics, lines, result.committed_at)
    metrics.lines_ingested.inc(result.accepted)
    metrics.duplicates.inc(result.duplicates)
    metrics.tap_duplicates.inc(result.adopted)
    metrics.ingest_requests.labels("200").inc()
    if rejected:
        for reason, _ in rejected:
            metrics.rejected.labels(reason.split(":", 1)[0][:60]).inc()
        logger.warning("ingest: rejected %d of %d events (first: %s)", len(rejected),
                       len(rejected) + len(lines), rejected[0][0])
    return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates,
                         "rejected": result.rejected})


def _observe(metrics: Any, lines: list[PreparedLine], committed_at: float) -> None:
    """One observation per stage per batch (not per line: two per line cost as much as
    validating it): the batch's largest delay, i.e. its slowest line. The histogram then
    counts batches, and its quantiles bound every line's delay from above."""
    collected = [line.collected_at for line in lines if line.collected_at is not None]
    if not collected:
        return
    written = max(c - line.ts for line in lines if (c := line.collected_at) is not None)
    metrics.stage_delay.labels("written_to_collected").observe(
        max(0.0, written.total_seconds()))
    metrics.stage_delay.labels("collected_to_committed").observe(
        max(0.0, committed_at - min(collected).timestamp()))
