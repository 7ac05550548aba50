"""GET /api/workflows/{id}/logs (json, text) and POST /api/workflows/{id}/status."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pydantic
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .auth import authorized_workflow
from .body import BodyTooLarge, read_body
from .models import StatusUpdate
from .reana_logs import is_reana_request, reana_server_logs
from .store import Store
from .stream import filters_param, int_param, workflow_id_param

MAX_LIMIT = 10_000
TEXT_CHUNK = 5_000


async def read_logs(request: Request) -> Response:
    state = request.app.state
    server = getattr(state.reader_auth, "server", None)
    if server is not None and is_reana_request(request):
        # REANA's own logs path routed here: reana-server's answer, with our lines in it
        return await reana_server_logs(request, server)
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
        first = await store.snapshot(workflow_id, after=since, limit=TEXT_CHUNK,
                                     filters=filters, tail=tail)
        if first is None:
            raise HTTPException(404, f"unknown workflow {workflow_id}")

        async def body_chunks() -> AsyncIterator[bytes]:
            snap = first
            while True:
                if snap.lines:
                    yield "".join(line.text() for line in snap.lines).encode("utf-8")
                if tail is not None or snap.horizon >= first.last_seq:
                    return
                nxt = await store.snapshot(workflow_id, after=snap.horizon, limit=TEXT_CHUNK,
                                           filters=filters, upto=first.last_seq)
                if nxt is None:
                    return
                snap = nxt

        return StreamingResponse(body_chunks(), media_type="text/plain; charset=utf-8")
    if fmt == "reana":
        from .reana_format import reana_logs

        return await reana_logs(request, workflow_id, filters)
    raise HTTPException(400, "format must be json, text or reana")


async def post_status(request: Request) -> JSONResponse:
    state = request.app.state
    any_status = state.status_auth.check(request)
    workflow_id = workflow_id_param(request)
    settings = state.settings
    try:
        body = await read_body(request, settings.max_status_body_bytes,
                               settings.body_timeout_seconds)
    except BodyTooLarge:
        raise HTTPException(413, f"status body larger than {settings.max_status_body_bytes} "
                            "bytes (REANA_LOG_SSE_MAX_STATUS_BODY_BYTES)") from None
    try:
        update = StatusUpdate.model_validate_json(body)
    except pydantic.ValidationError as exc:
        raise HTTPException(422, str(exc).replace("\x00", "\\x00")[:2000]) from None
    if not any_status and (update.is_workflow_level or update.status == "deleted"):
        raise HTTPException(403, "a workflow's status and `deleted` take a status token "
                            "(REANA_LOG_SSE_STATUS_TOKENS); an ingest token may post only "
                            "a job's status")
    details = update.model_dump(mode="json", exclude={"status", "job_id", "step"},
                                exclude_none=True)
    event_id = await state.store.set_status(
        workflow_id, status=update.status, job_id=update.job_id, step=update.step,
        details=details, workflow_level=update.is_workflow_level,
    )
    return JSONResponse({"workflow_id": str(workflow_id), "status": update.status,
                         "job_id": update.job_id, "step": update.step, "id": event_id})
