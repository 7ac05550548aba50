"""POST /ingest/vector: decode, validate, store, answer only after commit."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from typing import Any

import pydantic
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from .body import BodyTooLarge, dump_rejected, parse_events, read_body
from .errors import PartitionMissing
from .models import LogEvent
from .partitions import Window
from .store import PreparedLine

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


def prepare(
    events: list[Any], *, max_line_bytes: int, window: Window
) -> tuple[list[PreparedLine], list[tuple[str, str]]]:
    """Validate events; returns the lines to store and (reason, raw event) rejections."""
    lines: list[PreparedLine] = []
    rejected: list[tuple[str, str]] = []
    ords: dict[int, int] = {}  # keyed by the UUID's int: uuid.UUID hashes in Python
    names: dict[int, str] = {}
    seen: set[bytes] = set()
    start, end = window.epoch_bounds
    validate = LogEvent.model_validate
    blake2b = hashlib.blake2b
    for raw in events:
        if not isinstance(raw, dict):
            rejected.append(("event is not a JSON object", dump_rejected(raw)))
            continue
        try:
            event = validate(raw)
        except pydantic.ValidationError as exc:
            rejected.append((_reason(exc), dump_rejected(raw)))
            continue
        ts = event.timestamp
        if ts.tzinfo is None:  # CRI timestamps carry a zone; a bare one is taken as UTC
            ts = ts.replace(tzinfo=dt.UTC)
        if not start <= ts.timestamp() < end:
            rejected.append((f"timestamp outside the stored window {window.first} .. "
                             f"{window.last}", dump_rejected(raw)))
            continue
        collected = event.collected_at
        if collected is not None and collected.tzinfo is None:
            collected = collected.replace(tzinfo=dt.UTC)
        message = event.message
        if "\x00" in message:  # PostgreSQL text cannot hold NUL
            message = message.replace("\x00", "\ufffd")
        message, cut = truncate(message, max_line_bytes)
        # nor any other text field (a NUL there used to fail the whole batch)
        job_id, step, pod, container = event.job_id, event.step, event.pod, event.container
        if job_id is not None and "\x00" in job_id:
            job_id = job_id.replace("\x00", "\ufffd")
        if step is not None and "\x00" in step:
            step = step.replace("\x00", "\ufffd")
        if pod is not None and "\x00" in pod:
            pod = pod.replace("\x00", "\ufffd")
        if container is not None and "\x00" in container:
            container = container.replace("\x00", "\ufffd")
        wid = event.workflow_id
        key_int = wid.int
        name = names.get(key_int)
        if name is None:
            name = names[key_int] = str(wid)
        key = "\x1f".join((name, event.kind, job_id or "", pod or "",
                           container or "", event.stream, str(raw.get("timestamp")),
                           message)).encode("utf-8", "replace")
        digest = blake2b(key, digest_size=16).digest()
        occurrence = 0
        while digest in seen:  # the same line twice in one batch is two lines
            occurrence += 1
            digest = blake2b(key + b"\x1f%d" % occurrence, digest_size=16).digest()
        seen.add(digest)
        n = ords[key_int] = ords.get(key_int, 0) + 1
        lines.append(PreparedLine(
            wid, n, ts, uuid.UUID(bytes=digest), event.kind, job_id, step,
            pod, container, event.stream, message, cut, collected,
        ))
    return lines, rejected


async def ingest_vector(request: Request) -> JSONResponse:
    state = request.app.state
    metrics = state.metrics
    try:
        state.ingest_auth.check(request)
        try:
            body = await read_body(request, state.settings.max_body_bytes,
                                   state.settings.body_timeout_seconds)
        except BodyTooLarge:
            raise HTTPException(413, f"body larger than {state.settings.max_body_bytes} bytes "
                                "(REANA_LOG_SSE_MAX_BODY_BYTES)") from None
        events, unparsed = parse_events(body)
    except HTTPException as exc:
        metrics.ingest_requests.labels(str(exc.status_code)).inc()
        raise
    window = state.window()
    lines, rejected = prepare(events, max_line_bytes=state.settings.max_line_bytes,
                              window=window)
    rejected = unparsed + rejected
    try:
        result = await state.store.ingest(lines, rejected)
    except PartitionMissing:
        await state.maintain()
        result = await state.store.ingest(lines, rejected)
    _observe(metrics, lines, result.committed_at)
    metrics.lines_ingested.inc(result.accepted)
    metrics.duplicates.inc(result.duplicates)
    metrics.ingest_requests.labels("200").inc()
    if rejected:
        for reason, _ in rejected:
            metrics.rejected.labels(reason.split(":", 1)[0][:60]).inc()
        logger.warning("ingest: rejected %d of %d events (first: %s)", len(rejected),
                       len(events) + len(unparsed), rejected[0][0])
    return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates,
                         "rejected": result.rejected})


def _observe(metrics: Any, lines: list[PreparedLine], committed_at: float) -> None:
    written = metrics.stage_delay.labels("written_to_collected")
    committed = metrics.stage_delay.labels("collected_to_committed")
    for line in lines:
        if line.collected_at is not None:
            collected = line.collected_at.timestamp()
            written.observe(max(0.0, collected - line.ts.timestamp()))
            committed.observe(max(0.0, committed_at - collected))
