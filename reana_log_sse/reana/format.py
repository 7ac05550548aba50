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
from reana-server under auth=reana (reana_auth.py), null otherwise. The answer is streamed
(logs_document): a request holds the jobs and one chunk of lines, not the workflow.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from reana_log_sse.reana.logs import json_string, stored_lines, with_logs_string
from reana_log_sse.store.errors import translated
from reana_log_sse.store.lines import Line
from reana_log_sse.store.snapshot import Filters
from reana_log_sse.store.store import Store

WORKFLOW_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"  # reana-commons config.py

# reana-db reana_db/models.py `JobStatus`: the job statuses REANA knows; reana-ui colours a
# job by `statusMapping[status].color` and fails on any other. Ours that REANA lacks are
# said as REANA would: a pod that waits is `queued` (reana-job-controller job_monitor.py
# `get_job_status` leaves a Pending job's status alone), a deleted job `stopped`.
REANA_JOB_STATUSES = frozenset({"created", "queued", "running", "finished", "failed",
                                "stopped"})
_AS_REANA = {"pending": "queued", "deleted": "stopped"}


def reana_job_status(status: str | None) -> str | None:
    """Our job status as one of REANA_JOB_STATUSES (None: nobody told us one)."""
    if status is None:
        return None
    status = _AS_REANA.get(status, status)
    return status if status in REANA_JOB_STATUSES else None


@dataclasses.dataclass(frozen=True)
class JobStatusRow:
    id: int
    after_seq: int
    job_id: str | None
    step: str | None
    status: str
    details: dict[str, Any]


async def reana_logs(request: Request, workflow_id: uuid.UUID, filters: Filters) -> Response:
    store: Store = request.app.state.store
    head = await store.snapshot(workflow_id, limit=0)
    if head is None:
        raise HTTPException(404, f"unknown workflow {workflow_id}")
    statuses = await job_statuses(store, workflow_id)
    info = getattr(request.state, "reana_workflow", None)
    ask_user = getattr(request.app.state.reader_auth, "user", None)
    user = await ask_user(request, workflow_id) if ask_user is not None else None
    outer = {"live_logs_enabled": True, "user": user, "workflow_id": str(workflow_id),
             "workflow_name": getattr(info, "name", None)}
    document = logs_document(store, workflow_id, head.last_seq, statuses, filters)
    return StreamingResponse(with_logs_string(outer, document), media_type="application/json")


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


@dataclasses.dataclass
class _Job:
    job_id: str | None
    step: str | None
    position: tuple[float, int]
    status: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    has_lines: bool = False

    def names(self) -> set[str]:
        return {n for n in (self.job_id, self.step, self.details.get("job_name"),
                            self.details.get("reana_job_id")) if n}


JobKey = tuple[str, str | None]


class _Jobs:
    """The workflow's jobs, from its status changes and its lines, without the lines'
    text: which job a line belongs to, and in which order jobs come."""

    def __init__(self, statuses: Iterable[JobStatusRow]) -> None:
        self.jobs: dict[JobKey, _Job] = {}
        self.by_step: dict[str, JobKey] = {}
        for st in statuses:
            if st.job_id:
                key: JobKey = ("job", st.job_id)
                if key not in self.jobs and st.step and ("step", st.step) in self.jobs:
                    self.jobs[key] = self.jobs.pop(("step", st.step))  # now with its id
                if st.step:
                    self.by_step.setdefault(st.step, key)
            else:
                key = self.by_step.get(st.step or "", ("step", st.step))
            job = self.jobs.get(key)
            if job is None:
                job = self.jobs[key] = _Job(st.job_id, st.step, (st.after_seq + 0.5, st.id))
            job.job_id = job.job_id or st.job_id
            job.step = job.step or st.step
            job.status = st.status
            job.details.update({k: v for k, v in st.details.items() if v is not None})

    def key(self, line: Line) -> JobKey:
        if line.job_id:
            return ("job", line.job_id)
        if line.step:
            return self.by_step.get(line.step, ("step", line.step))
        return ("job", None)

    def add(self, line: Line) -> None:
        key = self.key(line)
        job = self.jobs.get(key)
        if job is None:
            job = self.jobs[key] = _Job(line.job_id, line.step, (line.seq, 0))
        elif line.seq < job.position[0]:
            job.position = (line.seq, 0)
        job.step = job.step or line.step
        job.has_lines = True

    def line_filters(self, key: JobKey) -> Filters:
        """A database filter that finds every line of this job (and maybe others', which
        `key()` then sets apart); a job with neither id nor step needs every job line."""
        names = {key[1]} | {step for step, k in self.by_step.items() if k == key}
        return Filters(jobs=tuple(sorted(n for n in names if n)), kind="job")

    def keyed(self, filters: Filters) -> list[tuple[str, JobKey, _Job]]:
        """Each job with its key in job_logs (REANA's job id, else its Kubernetes Job
        name, else its step), ordered by when we first heard of it."""
        if filters.kind == "workflow":
            return []
        wanted = set(filters.jobs)
        out, used = [], set()
        for key, job in sorted(self.jobs.items(), key=lambda kj: kj[1].position):
            if wanted and not wanted & job.names():
                continue
            key_text = str(job.details.get("reana_job_id") or job.job_id or job.step or "")
            if key_text in used:
                key_text = job.job_id or key_text
            while key_text in used:  # never drop a job's lines for a clashing key
                key_text += "'"
            used.add(key_text)
            out.append((key_text, key, job))
        return out


def build_logs(workflow_id: uuid.UUID, statuses: Iterable[JobStatusRow],
               lines: Iterable[Line], filters: Filters) -> dict[str, Any]:
    """The dict reana-workflow-controller json.dumps into `logs`, built in memory
    (`logs_document` writes the same document as a stream)."""
    jobs, engine = _Jobs(statuses), []
    texts: dict[JobKey, list[str]] = {}
    for line in lines:
        if line.kind == "workflow":
            engine.append(line.text())
        elif line.kind == "job":  # REANA's service_logs come from its own records
            jobs.add(line)
            texts.setdefault(jobs.key(line), []).append(line.text())
    doc = _skeleton(filters)
    for key_text, key, job in jobs.keyed(filters):
        doc["job_logs"][key_text] = _job_entry(workflow_id, job, "".join(texts.get(key, [])))
    if doc["workflow_logs"] == "":
        doc["workflow_logs"] = "".join(engine)
    return doc


async def logs_document(store: Store, workflow_id: uuid.UUID, upto: int,
                        statuses: Iterable[JobStatusRow], filters: Filters
                        ) -> AsyncIterator[str]:
    """`build_logs`' document as JSON text, piece by piece: one pass over the job lines
    finds the jobs and their order (their text dropped), then each job's lines are read
    again, a chunk at a time. Memory: the jobs, and one chunk of lines."""
    jobs = _Jobs(statuses)
    if filters.kind != "workflow":
        async for line in _lines(store, workflow_id, upto, Filters(kind="job")):
            jobs.add(line)
    doc = _skeleton(filters)
    yield "{"
    for i, (field, value) in enumerate(doc.items()):
        yield ("," if i else "") + orjson.dumps(field).decode() + ":"
        if field == "workflow_logs" and value == "":
            yield '"'
            async for chunk in stored_lines(store, workflow_id, upto, Filters(kind="workflow")):
                yield json_string("".join(line.text() for line in chunk))
            yield '"'
        elif field == "job_logs":
            yield "{"
            for n, (key_text, key, job) in enumerate(jobs.keyed(filters)):
                entry = orjson.dumps(_job_entry(workflow_id, job, "")).decode()
                before, after = entry.split('"logs":""', 1)
                yield ("," if n else "") + orjson.dumps(key_text).decode() + ":" + before
                yield '"logs":"'
                if job.has_lines:
                    async for chunk in stored_lines(store, workflow_id, upto,
                                                    jobs.line_filters(key)):
                        yield json_string("".join(line.text() for line in chunk
                                                  if jobs.key(line) == key))
                yield '"' + after
            yield "}"
        else:
            yield orjson.dumps(value).decode()
    yield "}"


def _skeleton(filters: Filters) -> dict[str, Any]:
    if filters.jobs:  # as reana-workflow-controller answers a steps filter
        return {"workflow_logs": None, "job_logs": {}, "engine_specific": None}
    return {"workflow_logs": None if filters.kind == "job" else "",
            "job_logs": {}, "service_logs": {}, "engine_specific": None}


def _job_entry(workflow_id: uuid.UUID, job: _Job, logs: str) -> dict[str, Any]:
    d = job.details
    return {
        "workflow_uuid": str(workflow_id),
        "job_name": d.get("job_name") or job.step,
        "compute_backend": d.get("compute_backend"),
        "backend_job_id": job.job_id,
        "docker_img": d.get("docker_img"),
        "cmd": d.get("cmd"),
        "status": reana_job_status(job.status),
        "logs": logs,
        "started_at": _reana_time(d.get("started_at")),
        "finished_at": _reana_time(d.get("finished_at")),
    }


async def _lines(store: Store, workflow_id: uuid.UUID, upto: int, filters: Filters
                 ) -> AsyncIterator[Line]:
    async for chunk in stored_lines(store, workflow_id, upto, filters):
        for line in chunk:
            yield line


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
