"""GET /api/workflows/{id}/logs: json and text, and any other format an adapter passes in
(reana/logs.py adds `reana`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from reana_log_sse.auth import authorized_workflow
from reana_log_sse.params import filters_param, int_param, prefix_param
from reana_log_sse.store.snapshot import Filters
from reana_log_sse.store.store import Store

MAX_LIMIT = 10_000
TEXT_CHUNK = 5_000


Format = Callable[[Request, uuid.UUID, Filters], Awaitable[Response]]


async def read_logs(request: Request, formats: Mapping[str, Format] | None = None) -> Response:
    """The stored lines of a workflow; `formats` answers the formats other than json and
    text (reana/logs.py passes REANA's)."""
    state = request.app.state
    workflow_id = await authorized_workflow(request)
    filters = filters_param(request)
    since = int_param(request, "since") or 0
    tail = int_param(request, "tail")
    limit = min(int_param(request, "limit", minimum=1) or 1000, MAX_LIMIT)
    fmt = request.query_params.get("format") or "json"
    store: Store = state.store
    if fmt == "json":
        snap = await store.snapshot(workflow_id, after=since, limit=limit, filters=filters,
                                    tail=tail)
        if snap is None:
            raise HTTPException(404, f"unknown workflow {workflow_id}")
        lines = [line.as_dict() for line in snap.lines]
        body = {"workflow_id": str(workflow_id), "status": snap.status, "lines": lines,
                "next_since": snap.lines[-1].seq if snap.lines else None}
        return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z),
                        media_type="application/json")
    if fmt == "text":
        prefix = prefix_param(request)
        first = await store.snapshot(workflow_id, after=since, limit=TEXT_CHUNK,
                                     filters=filters, tail=tail)
        if first is None:
            raise HTTPException(404, f"unknown workflow {workflow_id}")

        async def body_chunks() -> AsyncIterator[bytes]:
            snap = first
            while True:
                if snap.lines:
                    yield "".join(line.text(prefix) for line in snap.lines).encode("utf-8")
                if tail is not None or snap.horizon >= first.last_seq:
                    return
                nxt = await store.snapshot(workflow_id, after=snap.horizon, limit=TEXT_CHUNK,
                                           filters=filters, upto=first.last_seq)
                if nxt is None:
                    return
                snap = nxt

        return StreamingResponse(body_chunks(), media_type="text/plain; charset=utf-8")
    other = (formats or {}).get(fmt)
    if other is not None:
        return await other(request, workflow_id, filters)
    names = ["json", "text", *(formats or {})]
    raise HTTPException(400, f"format must be {', '.join(names[:-1])} or {names[-1]}")
