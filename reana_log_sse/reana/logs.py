"""GET /api/workflows/{id_or_name}/logs as reana-server answers it, with our lines in it.

When an ingress routes REANA's own logs path here (the opt-in route of the example
overlay), reana-client (`reana_client/api/client.py` `get_workflow_logs`: `access_token`,
`page`, `size` in the query, `steps` as a JSON body, validated by bravado against
reana-commons `openapi_specifications/reana_server.json`) and reana-ui (`src/client.js`
`getWorkflowLogs`: no query, the session cookie through `withCredentials`) send a request
with no `format`. It is answered by asking reana-server the same question with the
caller's credentials (reana_server.py): REANA's permission checks, job metadata,
`page`/`size` and every field stay REANA's. Into that answer go this service's complete
lines:

- `job_logs[<REANA job id>].logs`: the lines whose job is that entry's `backend_job_id`
  (the Kubernetes Job name the pods carry), when this service holds any; else REANA's own;
- `workflow_logs` (when REANA's answer has it, i.e. without a steps filter): the engine's
  lines (`kind=workflow`), when this service holds any;
- `service_logs` (likewise): the `kind=service` lines (Dask), grouped by their job id as
  the service's name (vector/vector.yaml sets REANA's, `dask-service-<id cut short>`) and
  by step as its component (the pod's `dask.org/component`), scheduler first, as
  reana-workflow-controller `rest/workflows_status.py` `get_workflow_logs` orders them;
- `live_logs_enabled: true`.

reana-server's 4xx answers pass through unchanged; it being down, failing or rate-limiting
is 503 with `Retry-After`. The answer is streamed, each job's lines read in chunks, so a
request holds one page of REANA's answer and one chunk of lines, whatever the workflow's
size. reana-server's `logs` is a JSON string (reana-client: `json.loads(response["logs"])`),
so the inner document is written escaped, piece by piece.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from reana_log_sse.bodies import TooLarge, read_capped, too_large
from reana_log_sse.reana.server import Credentials, ReanaServer, ReanaUnavailable
from reana_log_sse.store.lines import Line
from reana_log_sse.store.snapshot import Filters
from reana_log_sse.store.store import Store

READ_CHUNK = 5_000
WRITE_BYTES = 256 * 1024
REANA_QUERY = ("page", "size")  # what reana-server's get_workflow_logs takes in the query


def is_reana_request(request: Request) -> bool:
    """A request shaped like reana-client's or reana-ui's: no `format` nor any of this
    service's own read parameters."""
    ours = {"format", "since", "tail", "limit", "job", "kind"}
    return not ours & set(request.query_params)


async def reana_server_logs(request: Request, server: ReanaServer) -> Response:
    creds = Credentials.of(request, cookie=server.session_cookie)
    params = [(k, v) for k, v in request.query_params.multi_items() if k in REANA_QUERY]
    settings = request.app.state.settings
    try:  # reana-client's `steps`: a small JSON list, read within caps before anything else
        steps = await read_capped(request, settings.max_status_body_bytes,
                                  settings.body_timeout_seconds) or None
    except TooLarge as exc:
        raise too_large(exc, f"body larger than {settings.max_status_body_bytes} bytes "
                        "(REANA_LOG_SSE_MAX_STATUS_BODY_BYTES)") from None
    id_or_name = request.path_params["workflow_id"]
    try:
        response = await server.workflow_logs(creds, id_or_name, params=params, steps=steps)
    except ReanaUnavailable as exc:
        raise HTTPException(503, f"cannot ask reana-server: {exc}",
                            headers={"Retry-After": str(exc.retry_after)}) from None
    if response.status_code != 200:  # REANA's refusal (401, 403, 404, 400), as it is
        return Response(response.content, status_code=response.status_code,
                        media_type=response.headers.get("content-type", "application/json"))
    try:
        answer = response.json()
        logs = orjson.loads(answer["logs"])
        workflow_id = uuid.UUID(str(answer["workflow_id"]))
    except (ValueError, KeyError, TypeError):
        raise HTTPException(503, "reana-server's logs answer is not what REANA sends",
                            headers={"Retry-After": "2"}) from None
    store: Store = request.app.state.store
    outer = {k: v for k, v in answer.items() if k != "logs"}
    outer["live_logs_enabled"] = True
    head = await store.snapshot(workflow_id, limit=0)
    if head is None:  # nothing of ours: REANA's answer, said to be live
        return _json_response(outer, _plain(logs))
    upto = head.last_seq
    return _json_response(outer, _merged(store, workflow_id, upto, logs))


def _json_response(outer: dict[str, Any], inner: AsyncIterator[str]) -> Response:
    return StreamingResponse(with_logs_string(outer, inner), media_type="application/json")


async def with_logs_string(outer: dict[str, Any], inner: AsyncIterator[str]
                           ) -> AsyncIterator[bytes]:
    """`outer` (keys sorted, as Flask's jsonify writes them) with `logs` the JSON string
    of the document `inner` yields piece by piece."""
    head, tail = orjson.dumps({**outer, "logs": ""}, option=orjson.OPT_SORT_KEYS
                              ).split(b'"logs":""', 1)
    yield head + b'"logs":"'
    pending: list[str] = []
    size = 0
    async for piece in inner:  # written in writes of WRITE_BYTES or more, not per piece
        pending.append(piece)
        size += len(piece)
        if size >= WRITE_BYTES:
            yield orjson.dumps("".join(pending))[1:-1]
            pending, size = [], 0
    yield orjson.dumps("".join(pending))[1:-1] + b'"' + tail


def json_string(text: str) -> str:
    """`text` as the body of a JSON string (no quotes)."""
    return orjson.dumps(text)[1:-1].decode()


async def _plain(doc: dict[str, Any]) -> AsyncIterator[str]:
    yield orjson.dumps(doc).decode()


async def _merged(store: Store, workflow_id: uuid.UUID, upto: int, doc: dict[str, Any]
                  ) -> AsyncIterator[str]:
    """reana-server's document with our lines in place, in its own key order."""
    yield "{"
    for i, (key, value) in enumerate(doc.items()):
        yield ("," if i else "") + orjson.dumps(key).decode() + ":"
        if key == "workflow_logs" and value is not None:
            async for piece in _text_or(store, workflow_id, upto, Filters(kind="workflow"),
                                        value):
                yield piece
        elif key == "job_logs" and isinstance(value, dict):
            async for piece in _job_logs(store, workflow_id, upto, value):
                yield piece
        elif key == "service_logs" and isinstance(value, dict):
            services = await _service_logs(store, workflow_id, upto)
            yield orjson.dumps(services if services else value).decode()
        else:
            yield orjson.dumps(value).decode()
    yield "}"


async def _job_logs(store: Store, workflow_id: uuid.UUID, upto: int,
                    jobs: dict[str, Any]) -> AsyncIterator[str]:
    yield "{"
    for i, (job_key, job) in enumerate(jobs.items()):
        yield ("," if i else "") + orjson.dumps(job_key).decode() + ":"
        backend_job_id = job.get("backend_job_id") if isinstance(job, dict) else None
        if not backend_job_id or "logs" not in job:
            yield orjson.dumps(job).decode()
            continue
        before, after = orjson.dumps({**job, "logs": ""}).decode().split('"logs":""', 1)
        yield before + '"logs":'
        async for piece in _text_or(store, workflow_id, upto,
                                    Filters(jobs=(str(backend_job_id),), kind="job"),
                                    job.get("logs")):
            yield piece
        yield after
    yield "}"


async def _text_or(store: Store, workflow_id: uuid.UUID, upto: int, filters: Filters,
                   fallback: Any) -> AsyncIterator[str]:
    """Our matching lines as one JSON string, or `fallback` as REANA had it when we hold
    none."""
    started = False
    async for chunk in lines_text(store, workflow_id, upto, filters):
        if not started:
            yield '"'
            started = True
        yield json_string(chunk)
    yield '"' if started else orjson.dumps(fallback).decode()


async def lines_text(store: Store, workflow_id: uuid.UUID, upto: int, filters: Filters
                     ) -> AsyncIterator[str]:
    """The text of every matching line up to `upto`, READ_CHUNK lines at a time."""
    async for chunk in stored_lines(store, workflow_id, upto, filters):
        yield "".join(line.text() for line in chunk)


async def stored_lines(store: Store, workflow_id: uuid.UUID, upto: int, filters: Filters
                       ) -> AsyncIterator[list[Line]]:
    """Every matching line up to `upto`, oldest first, in chunks of READ_CHUNK."""
    after = 0
    while after < upto:
        snap = await store.snapshot(workflow_id, after=after, limit=READ_CHUNK,
                                    filters=filters, upto=upto)
        if snap is None or snap.horizon <= after:
            return
        if snap.lines:
            yield snap.lines
        after = snap.horizon


def dask_service_name(workflow_id: uuid.UUID) -> str:
    """The name REANA gives a workflow's Dask service record, which keys its
    `service_logs`: reana-commons reana_commons/utils.py
    get_dask_component_name(id, "database_model_service"), `dask-service-` and the id up
    to its first dash (get_trimmed_workflow_id(id, 4)); reana-workflow-controller
    rest/workflows.py creates the Service with it."""
    return "dask-service-" + str(workflow_id).rsplit("-", 4)[0]


async def _service_logs(store: Store, workflow_id: uuid.UUID, upto: int
                        ) -> dict[str, list[dict[str, str]]]:
    """kind=service lines as reana-workflow-controller shapes `service_logs`:
    {service: [{"component", "content"}], scheduler first}. vector/vector.yaml gives a
    Dask pod's lines REANA's service name as job id and the pod's `dask.org/component`
    (scheduler, worker) as step; lines without them (stored before it did, or tapped
    and not yet adopted) go under that name, as component "service". Service logs are
    small (a scheduler's and workers' own messages), so they are gathered in memory."""
    parts: dict[str, dict[str, list[str]]] = {}
    default = dask_service_name(workflow_id)
    async for chunk in stored_lines(store, workflow_id, upto, Filters(kind="service")):
        for line in chunk:
            component = parts.setdefault(line.job_id or default, {})
            component.setdefault(line.step or "service", []).append(line.text())
    return {
        name: sorted(({"component": c, "content": "".join(t)} for c, t in comps.items()),
                     key=lambda e: e["component"] != "scheduler")
        for name, comps in parts.items()
    }

