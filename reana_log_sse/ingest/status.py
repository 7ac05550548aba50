"""POST /api/workflows/{id}/status: a workflow's or a job's status, from REANA or `ship`."""

from __future__ import annotations

import pydantic
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from reana_log_sse.auth import IngestAuth
from reana_log_sse.ingest.body import BodyTooLarge, read_body
from reana_log_sse.ingest.models import StatusUpdate
from reana_log_sse.params import workflow_id_param


async def post_status(request: Request) -> JSONResponse:
    state = request.app.state
    any_status, allowed = state.status_auth.check(request)
    workflow_id = workflow_id_param(request)
    IngestAuth.refuse_other_workflow(allowed, workflow_id)
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
                            "a job's status (and so may a workflow token)")
    details = update.model_dump(mode="json", exclude={"status", "job_id", "step"},
                                exclude_none=True)
    event_id = await state.store.set_status(
        workflow_id, status=update.status, job_id=update.job_id, step=update.step,
        details=details, workflow_level=update.is_workflow_level,
    )
    return JSONResponse({"workflow_id": str(workflow_id), "status": update.status,
                         "job_id": update.job_id, "step": update.step, "id": event_id})
