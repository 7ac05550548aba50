"""GET /api/workflows/{id}/logs?format=reana: reana-server's own workflow logs answer.

reana-server rest/workflows.py `get_workflow_logs` passes through what
reana-workflow-controller rest/workflows_status.py `get_workflow_logs` builds:

    {"workflow_id", "workflow_name", "logs", "user", "live_logs_enabled"}

where `logs` is a JSON *string* (json.dumps) of

    {"workflow_logs": str, "job_logs": {...}, "service_logs": {}, "engine_specific": ...}

(with a steps filter: `workflow_logs` and `engine_specific` null, no `service_logs`), and
rest/utils.py `build_workflow_logs` fills `job_logs`, ordered by job creation and keyed by
REANA's database job id, each value

    {"workflow_uuid", "job_name", "compute_backend", "backend_job_id", "docker_img", "cmd",
     "status", "logs", "started_at", "finished_at"}

with times as "%Y-%m-%dT%H:%M:%S" (reana-commons WORKFLOW_TIME_FORMAT). reana-client reads
it with `json.loads(response["logs"])` (cli/utils.py `retrieve_workflow_logs`).

What REANA knows and no pod carries (its job id, the step name, image, command, times)
comes from the status POSTs' details; what nobody told us is null, never invented. A job
is keyed by REANA's job id when a status POST carried `reana_job_id`, else by its
Kubernetes Job name (REANA's `backend_job_id`), else by its step name. Jobs are ordered by
when we first heard of them (first status or first line). `workflow_name` and `user` come
from reana-server's answer under auth=reana, null otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .errors import translated
from .lines import Line
from .store import Filters, Store

WORKFLOW_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"  # reana-commons config.py
READ_CHUNK = 5_000


@dataclasses.dataclass(frozen=True)
class JobStatusRow:
    id: int
    after_seq: int
    job_id: str | None
    step: str | None
    status: str
    details: dict[str, Any]


@dataclasses.dataclass
class _Job:
    job_id: str | None
    step: str | None
    position: tuple[float, int]
    status: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    lines: list[str] = dataclasses.field(default_factory=list)

    def names(self) -> set[str]:
        return {n for n in (self.job_id, self.step, self.details.get("job_name"),
                            self.details.get("reana_job_id")) if n}


async def reana_logs(request: Request, workflow_id: uuid.UUID, filters: Filters) -> Response:
    store: Store = request.app.state.store
    head = await store.snapshot(workflow_id, limit=0)
    if head is None:
        raise HTTPException(404, f"unknown workflow {workflow_id}")
    statuses = await job_statuses(store, workflow_id)
    lines: list[Line] = []
    after, line_filters = 0, Filters(kind=filters.kind)  # steps are matched below
    while after < head.last_seq:
        snap = await store.snapshot(workflow_id, after=after, limit=READ_CHUNK,
                                    filters=line_filters, upto=head.last_seq)
        if snap is None:
            break
        lines.extend(snap.lines)
        after = snap.horizon
    info = getattr(request.state, "reana_workflow", None)
    body = {
        "live_logs_enabled": True,
        "logs": orjson.dumps(build_logs(workflow_id, statuses, lines, filters)).decode(),
        "user": getattr(info, "user", None),
        "workflow_id": str(workflow_id),
        "workflow_name": getattr(info, "name", None),
    }
    return Response(orjson.dumps(body, option=orjson.OPT_SORT_KEYS),
                    media_type="application/json")


async def job_statuses(store: Store, workflow_id: uuid.UUID) -> list[JobStatusRow]:
    """Every job-level status change of a workflow with its details, oldest first."""
    async with translated(), store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, after_seq, job_id, step, status, details FROM status_events"
            " WHERE workflow_id = %s AND (job_id IS NOT NULL OR step IS NOT NULL)"
            " ORDER BY id",
            (workflow_id,),
        )
        return [JobStatusRow(*row) for row in await cur.fetchall()]


def build_logs(workflow_id: uuid.UUID, statuses: Iterable[JobStatusRow],
               lines: Iterable[Line], filters: Filters) -> dict[str, Any]:
    """The dict reana-workflow-controller json.dumps into `logs`."""
    jobs: dict[tuple[str, str | None], _Job] = {}
    by_step: dict[str, tuple[str, str | None]] = {}
    for st in statuses:
        if st.job_id:
            key: tuple[str, str | None] = ("job", st.job_id)
            if key not in jobs and st.step and ("step", st.step) in jobs:
                jobs[key] = jobs.pop(("step", st.step))  # the same job, now with its id
            if st.step:
                by_step.setdefault(st.step, key)
        else:
            key = by_step.get(st.step or "", ("step", st.step))
        job = jobs.get(key)
        if job is None:
            job = jobs[key] = _Job(st.job_id, st.step, (st.after_seq + 0.5, st.id))
        job.job_id = job.job_id or st.job_id
        job.step = job.step or st.step
        job.status = st.status
        job.details.update({k: v for k, v in st.details.items() if v is not None})

    engine: list[str] = []
    for line in lines:
        if line.kind == "workflow":
            engine.append(line.text())
            continue
        if line.kind == "service":  # REANA's service_logs come from its own records
            continue
        if line.job_id:
            key = ("job", line.job_id)
        elif line.step:
            key = by_step.get(line.step, ("step", line.step))
        else:
            key = ("job", None)
        job = jobs.get(key)
        if job is None:
            job = jobs[key] = _Job(line.job_id, line.step, (line.seq, 0))
        elif line.seq < job.position[0]:
            job.position = (line.seq, 0)
        job.step = job.step or line.step
        job.lines.append(line.text())

    wanted = set(filters.jobs)
    job_logs: dict[str, dict[str, Any]] = {}
    if filters.kind != "workflow":
        for job in sorted(jobs.values(), key=lambda j: j.position):
            if wanted and not wanted & job.names():
                continue
            d = job.details
            key_text = d.get("reana_job_id") or job.job_id or job.step or ""
            if key_text in job_logs:
                key_text = job.job_id or key_text
            job_logs[str(key_text)] = {
                "workflow_uuid": str(workflow_id),
                "job_name": d.get("job_name") or job.step,
                "compute_backend": d.get("compute_backend"),
                "backend_job_id": job.job_id,
                "docker_img": d.get("docker_img"),
                "cmd": d.get("cmd"),
                "status": job.status,
                "logs": "".join(job.lines),
                "started_at": _reana_time(d.get("started_at")),
                "finished_at": _reana_time(d.get("finished_at")),
            }
    if wanted:  # as reana-workflow-controller answers a steps filter
        return {"workflow_logs": None, "job_logs": job_logs, "engine_specific": None}
    return {
        "workflow_logs": None if filters.kind == "job" else "".join(engine),
        "job_logs": job_logs,
        "service_logs": {},
        "engine_specific": None,
    }


def _reana_time(value: Any) -> str | None:
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return when.strftime(WORKFLOW_TIME_FORMAT)
