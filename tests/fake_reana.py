"""A small fake reana-server: a real HTTP server on a free port that answers as reana-server
does, for what reana-log-sse and reana-client ask of it. What it reproduces, and from where:

- Host: only `REANA_HOSTNAME` is trusted (reana-server `reana_server/config.py`
  `TRUSTED_HOSTS = [REANA_HOSTNAME]`; Flask answers another Host with 400).
- Who: the signed-in session (Flask's `session` cookie) first, else the `access_token`
  query parameter (reana-server `reana_server/decorators.py` `signin_required`), else,
  for reana-client 0.95 (which sends every call with `Authorization: Bearer <JWT>`:
  reana-client 0.95.0a6 `reana_client/api/client.py` `_auth_request_options`), that
  header's token; 401 "User not signed in", 403 "Token not valid.".
- Which workflows: the user's own and those shared with them, by UUID, `name.run` or
  `name` (latest run) (reana-db `utils.py` `_get_workflow_with_uuid_or_name`); anyone
  else's looks missing: 404 "REANA_WORKON is set to ...".
- Rate limit: `rate_limited = True` answers 429 with `Retry-After` (reana-server
  `config.py` `RATELIMIT_GUEST_USER`, flask-limiter through invenio-app).
- `GET /api/workflows/{id}/parameters` (reana-workflow-controller `rest/workflows.py`
  `get_workflow_parameters`): `{"id", "name", "type", "parameters"}`, no job is read.
- `GET /api/workflows/{id}/status` (`rest/workflows_status.py` `get_workflow_status`):
  builds every job's logs (`build_workflow_logs`), counted in `jobs_built`.
- `GET /api/workflows/{id}/logs` (`rest/workflows_status.py` `get_workflow_logs`,
  `rest/utils.py` `build_workflow_logs`): jobs ordered by creation, paginated by
  `page`/`size` (reana-commons `utils.py` paginate: `size` items from `(page-1)*size`),
  a JSON body of step names filters them (and then no engine or service logs), `logs` is
  a JSON string, `live_logs_enabled` false (no OpenSearch); or, with `logs_backend` set,
  a reana-server changed to pass reana-log-sse's `format=reana` answer through.

What reana-ui's pages ask besides (integrations/reana-ui/check.sh serves a real build of
reana-ui against this fake), from reana-server 1ab1805 (2026-06-23):

- `GET /api/config` (`rest/config.py` `get_config`): the chart's `components.reana_ui`
  values as they are (`REANAConfig.load("ui")`), public; `ui_config` here.
- `GET /api/you` (`rest/users.py` `get_you`): `email`, `full_name`, `username`,
  `reana_token` {`value`, `status`, `requested_at`}, `quota`.
- `GET /api/workflows?verbose=true&workflow_id_or_name=...` (`rest/workflows.py`
  `get_workflows`): `{"items", "total", "user_has_workflows", ...}`, each item with
  `progress` (`run_started_at`, `total`/`running`/`finished`/`failed` {`total`,
  `job_ids`}), `owner_email`, `launcher_url`, `size`, `services`.
- `GET /api/workflows/{id}/workspace` (`get_files`): `{"items", "total"}` (none here);
  `.../retention_rules` (`get_workflow_retention_rules`): `{"workflow_id",
  "workflow_name", "retention_rules"}` (none here).
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time
import uuid
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from tests.conftest import free_port

REANA_HOSTNAME = "reana.example.org"


@dataclasses.dataclass
class Job:
    id: str
    job_name: str
    backend_job_id: str
    status: str = "running"
    logs: str = ""  # what REANA's database holds (filled when the job ends)
    docker_img: str = "docker.io/library/python:3.12"
    cmd: str = "python run.py"
    compute_backend: str = "Kubernetes"
    started_at: str | None = "2026-11-25T12:00:05"
    finished_at: str | None = None


@dataclasses.dataclass
class Workflow:
    id: str
    name: str  # "myanalysis.3": REANA's name.run_number
    owner: str
    status: str = "running"
    shared_with: set[str] = dataclasses.field(default_factory=set)
    jobs: list[Job] = dataclasses.field(default_factory=list)
    logs: str = ""  # the engine's log as REANA's database holds it
    services: dict[str, list[dict[str, str]]] = dataclasses.field(default_factory=dict)

    def add_job(self, job_name: str, backend_job_id: str | None = None, **kw: Any) -> Job:
        job = Job(str(uuid.uuid4()), job_name,
                  backend_job_id or f"reana-run-job-{uuid.uuid4()}", **kw)
        self.jobs.append(job)
        return job


@dataclasses.dataclass
class Seen:
    """One request as the fake received it."""

    path: str
    host: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


class FakeReanaServer:
    def __init__(self, hostname: str = REANA_HOSTNAME) -> None:
        self.hostname = hostname
        self.trusted_hosts = {hostname}  # config.py TRUSTED_HOSTS
        self.users: dict[str, str] = {}  # access token -> user uuid
        self.sessions: dict[str, str] = {}  # session cookie value -> user uuid
        self.workflows: list[Workflow] = []
        self.requests: list[str] = []  # paths asked, in order
        self.seen: list[Seen] = []
        self.mode = "ok"  # "ok", "error" (500), "slow" (answers after `delay` seconds)
        self.delay = 0.0
        self.rate_limited = False
        self.jobs_built = 0  # job log entries built (the status and logs endpoints' cost)
        self.bytes_sent: dict[str, int] = {}  # per endpoint
        self.logs_backend: str | None = None  # a reana-server that proxies reana-log-sse
        self.ui_config: dict[str, Any] = {"polling_secs": 15, "local_users": True}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: http.server.ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    # -- data ------------------------------------------------------------------------------

    def add_user(self) -> tuple[str, str]:
        token, user = f"tok-{uuid.uuid4().hex[:12]}", str(uuid.uuid4())
        self.users[token] = user
        return token, user

    def sign_in(self, user: str) -> str:
        """A session cookie value for a user signed in to reana-ui."""
        cookie = f"sess-{uuid.uuid4().hex}"
        self.sessions[cookie] = user
        return cookie

    def add_workflow(self, owner: str, name: str, workflow_id: uuid.UUID | str | None = None
                     ) -> Workflow:
        wf = Workflow(str(workflow_id or uuid.uuid4()), name, owner)
        self.workflows.append(wf)
        return wf

    def find(self, id_or_name: str, user: str) -> Workflow | None:
        for wf in reversed(self.workflows):  # a bare name means the latest run
            if wf.owner != user and user not in wf.shared_with:
                continue  # someone else's workflow looks like a missing one
            if id_or_name in (wf.id, wf.name, wf.name.rsplit(".", 1)[0]):
                return wf
        return None

    # -- serving ---------------------------------------------------------------------------

    def start(self) -> FakeReanaServer:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, answer, headers = fake.answer(self.path, dict(self.headers), body)
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json" if not
                                     isinstance(answer, bytes) else "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (mode "slow")

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def answer(self, path: str, headers: dict[str, str], body: bytes = b""
               ) -> tuple[int, dict[str, Any] | bytes, dict[str, str]]:
        parts = urlsplit(path)
        lower = {k.lower(): v for k, v in headers.items()}
        query = parse_qs(parts.query)
        with self._lock:
            self.requests.append(parts.path)
            self.seen.append(Seen(parts.path, lower.get("host", ""), query, lower, body))
        # every answer tries to set a session cookie: a client must not replay it; a signed-in
        # browser's is refreshed as it is (Flask's SESSION_REFRESH_EACH_REQUEST)
        signed_in = SimpleCookie(lower.get("cookie", "")).get("session")
        value = (signed_in.value if signed_in and signed_in.value in self.sessions
                 else f"set-by-reana-{uuid.uuid4().hex[:8]}")
        extra = {"Set-Cookie": f"session={value}; Path=/"}
        if lower.get("host", "").split(":")[0] not in self.trusted_hosts:
            return 400, b"<h1>Bad Request</h1>", {}  # Flask: Host not in TRUSTED_HOSTS
        if self.rate_limited:
            return 429, b"<h1>Too Many Requests</h1>", {"Retry-After": "7"}
        if self.mode == "slow":
            time.sleep(self.delay)
        if self.mode == "error":
            return 500, {"message": "Internal controller error."}, extra
        if parts.path == "/api/config":  # public: reana-ui reads it before signing in
            return 200, dict(self.ui_config), extra
        segments = parts.path.split("/")  # "", "api", "workflows", id_or_name, action
        ui_paths = ("/api/you", "/api/workflows")
        if parts.path not in ui_paths and (
                len(segments) != 5 or segments[1:3] != ["api", "workflows"]):
            return 404, {"message": "not found"}, extra
        cookie = SimpleCookie(lower.get("cookie", ""))
        session = cookie["session"].value if "session" in cookie else None
        token = query.get("access_token", [None])[0]
        bearer = lower.get("authorization", "")
        if token is None and bearer[:7].lower() == "bearer ":
            token = bearer[7:].strip()
        if session in self.sessions:
            user: str | None = self.sessions[session]
        elif token is None:
            return 401, {"message": "User not signed in"}, extra
        else:
            user = self.users.get(token)
            if user is None:
                return 403, {"message": "Token not valid."}, extra
        assert user is not None
        if parts.path in ui_paths:
            return 200, self._ui(parts.path, user, query), extra
        id_or_name, action = segments[3], segments[4]
        wf = self.find(id_or_name, user)
        if wf is None:
            return 404, {"message": f"REANA_WORKON is set to {id_or_name}, but that workflow "
                         "does not exist. Please set your REANA_WORKON environment variable "
                         "appropriately."}, extra
        status, answer = self._action(action, wf, user, query, body, token)
        with self._lock:
            self.bytes_sent[action] = (self.bytes_sent.get(action, 0)
                                       + len(json.dumps(answer)))
        return status, answer, extra

    def _action(self, action: str, wf: Workflow, user: str, query: dict[str, list[str]],
                body: bytes, token: str | None) -> tuple[int, dict[str, Any]]:
        if action == "parameters":
            return 200, {"id": wf.id, "name": wf.name, "type": "serial",
                         "parameters": {"events": 20000}}
        if action == "status":
            job_logs = self._job_logs(wf, wf.jobs)  # what get_workflow_status builds
            return 200, {
                "created": "2026-11-25T12:00:00", "id": wf.id, "logs": json.dumps(job_logs),
                "name": wf.name,
                "progress": {"current_command": None, "current_step_name": None,
                             "failed": {"job_ids": [], "total": 0},
                             "finished": {"job_ids": [], "total": 0},
                             "run_started_at": "2026-11-25T12:00:01",
                             "running": {"job_ids": [], "total": 0},
                             "total": {"job_ids": [], "total": len(wf.jobs)}},
                "status": wf.status, "user": user,
            }
        if action == "logs" and self.logs_backend:
            # a reana-server changed to pass reana-log-sse's answer through as is
            r = httpx.get(f"{self.logs_backend}/api/workflows/{quote(wf.id)}/logs",
                          params={"format": "reana", "access_token": token}, timeout=30)
            return r.status_code, r.json()
        if action == "logs":
            return 200, self._logs(wf, user, query, body)
        if action == "workspace":
            return 200, {"items": [], "total": 0}
        if action == "retention_rules":
            return 200, {"workflow_id": wf.id, "workflow_name": wf.name, "retention_rules": []}
        return 404, {"message": "not found"}

    def _ui(self, path: str, user: str, query: dict[str, list[str]]) -> dict[str, Any]:
        if path == "/api/you":
            return {"email": f"{user}@example.org", "full_name": "Jane Doe",
                    "username": "jdoe", "reana_server_version": "0.95.0",
                    "reana_token": {"value": None, "status": "active",
                                    "requested_at": "Mon, 23 Nov 2026 10:00:00 GMT"},
                    "quota": {"cpu": {"health": "healthy", "usage": {
                        "human_readable": "1m 10s", "raw": 70536}}, "disk": {
                        "health": "healthy", "usage": {"human_readable": "766 KB",
                                                       "raw": 784384}}}}
        wanted = query.get("workflow_id_or_name", [None])[0]
        items = [self._item(wf) for wf in self.workflows
                 if (wf.owner == user or user in wf.shared_with)
                 and (wanted is None or self.find(wanted, user) is wf)]
        return {"items": items, "total": len(items), "user_has_workflows": bool(items),
                "has_next": False, "has_prev": False, "page": 1}

    def _item(self, wf: Workflow) -> dict[str, Any]:
        def ids(status: str) -> dict[str, Any]:
            jobs = [j.id for j in wf.jobs if status in ("", j.status)]
            return {"job_ids": jobs, "total": len(jobs)}

        return {"id": wf.id, "name": wf.name, "status": wf.status, "user": wf.owner,
                "owner_email": f"{wf.owner}@example.org", "created": "2026-11-25T12:00:00",
                "launcher_url": None, "services": [], "session_status": None,
                "session_type": None, "session_uri": None,
                "size": {"human_readable": "12 MB", "raw": 12580000},
                "progress": {"run_started_at": "2026-11-25T12:00:01",
                             "run_finished_at": ("2026-11-25T12:30:00" if wf.status
                                                 in ("finished", "failed") else None),
                             "run_stopped_at": None,
                             "current_command": None, "current_step_name": None,
                             "total": ids(""), "running": ids("running"),
                             "finished": ids("finished"), "failed": ids("failed")}}

    def _logs(self, wf: Workflow, user: str, query: dict[str, list[str]], body: bytes
              ) -> dict[str, Any]:
        steps = json.loads(body) if body else None
        jobs = [j for j in wf.jobs if not steps or j.job_name in steps]
        if "size" in query:  # reana-commons paginate: page defaults to 1
            size = int(query["size"][0])
            page = int(query.get("page", ["1"])[0])
            jobs = jobs[(page - 1) * size:page * size]
        if steps:
            logs: dict[str, Any] = {"workflow_logs": None,
                                    "job_logs": self._job_logs(wf, jobs),
                                    "engine_specific": None}
        else:
            logs = {"workflow_logs": wf.logs, "job_logs": self._job_logs(wf, jobs),
                    "service_logs": wf.services, "engine_specific": None}
        return {"workflow_id": wf.id, "workflow_name": wf.name, "logs": json.dumps(logs),
                "user": user, "live_logs_enabled": False}

    def _job_logs(self, wf: Workflow, jobs: list[Job]) -> dict[str, Any]:
        with self._lock:
            self.jobs_built += len(jobs)
        return {j.id: {"workflow_uuid": wf.id, "job_name": j.job_name,
                       "compute_backend": j.compute_backend,
                       "backend_job_id": j.backend_job_id, "docker_img": j.docker_img,
                       "cmd": j.cmd, "status": j.status, "logs": j.logs,
                       "started_at": j.started_at, "finished_at": j.finished_at}
                for j in jobs}
