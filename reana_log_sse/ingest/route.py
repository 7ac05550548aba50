"""POST /ingest/vector: decode, validate, store, answer only after commit."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from reana_log_sse.auth import IngestAuth
from reana_log_sse.ingest.body import BodyTooLarge, is_array, parse_events, read_body, salvage
from reana_log_sse.ingest.fastpath import prepare_fast_yielding
from reana_log_sse.ingest.prepare import Preparer, prepare
from reana_log_sse.store.rows import PreparedLine

logger = logging.getLogger("reana_log_sse")


async def ingest_vector(request: Request) -> JSONResponse:
    state = request.app.state
    metrics = state.metrics
    try:
        allowed = state.ingest_auth.check(request)  # None: every workflow
        settings = state.settings
        max_line = settings.max_line_bytes
        salvaged: tuple[list[Any], int] | None = None
        try:
            body = await read_body(request, settings.max_body_bytes,
                                   settings.body_timeout_seconds,
                                   keep_head=min(settings.max_body_bytes, 6 * max_line + 65536))
        except BodyTooLarge as exc:
            # One event over the cap (Vector sends such an event alone): cut, not dropped.
            salvaged = salvage(exc.edges) if exc.edges is not None else None
            if salvaged is None:
                raise HTTPException(413, f"body larger than {settings.max_body_bytes} bytes "
                                    "(REANA_LOG_SSE_MAX_BODY_BYTES)") from None
            logger.warning("ingest: one event over REANA_LOG_SSE_MAX_BODY_BYTES, cut")
            body = b""
        window = state.window()
        lines: list[PreparedLine] | None = None
        rejected: list[tuple[str, str]] = []
        if salvaged is not None:
            events, unparsed = salvaged[0], []
        elif is_array(body):  # canonical batches skip the model (fastpath.py)
            # one batch at a time, in arrival order, pausing for the loop's other work:
            # batches parsed round robin would all finish late, together, and leave the
            # loop idle while their group commits (fastpath.prepare_fast_yielding)
            async with state.parse_turn:
                lines = await prepare_fast_yielding(
                    body, Preparer(max_line_bytes=max_line, window=window))
        if lines is None and salvaged is None:
            events, unparsed = parse_events(body)  # told apart by content, not Content-Type
    except HTTPException as exc:
        metrics.ingest_requests.labels(str(exc.status_code)).inc()
        raise
    if lines is None:
        lines, rejected = prepare(events, max_line_bytes=max_line, window=window,
                                  cut_at=salvaged[1] if salvaged is not None else -1)
        rejected = unparsed + rejected  # NDJSON lines that were not even JSON
        metrics.ingest_batches.labels("model").inc()
    else:
        metrics.ingest_batches.labels("fast").inc()
    if allowed is not None:  # a workflow token: one line of another workflow refuses all
        for line in lines:   # (such a batch can never succeed; nothing of it is stored)
            if line.workflow_id != allowed:
                metrics.ingest_requests.labels("403").inc()
                IngestAuth.refuse_other_workflow(allowed, line.workflow_id)
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
