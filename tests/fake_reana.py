"""A small fake reana-server: a real HTTP server on a free port that answers
`GET /api/workflows/{id_or_name}/status?access_token=` the way reana-server does
(reana-server rest/workflows.py get_workflow_status + decorators.py signin_required,
reana-workflow-controller rest/workflows_status.py, reana-db utils.py
_get_workflow_with_uuid_or_name), and, like a reana-server that proxies reana-log-sse,
`GET /api/workflows/{id_or_name}/logs` from a reana-log-sse `?format=reana` answer."""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from tests.conftest import free_port


@dataclasses.dataclass
class Workflow:
    id: str
    name: str  # "myanalysis.3": REANA's name.run_number
    owner: str
    status: str = "running"


class FakeReanaServer:
    def __init__(self) -> None:
        self.users: dict[str, str] = {}  # access token -> user uuid
        self.workflows: list[Workflow] = []
        self.requests: list[str] = []  # paths asked, in order
        self.mode = "ok"  # "ok", "error" (500), "slow" (answers after `delay` seconds)
        self.delay = 0.0
        self.logs_backend: str | None = None  # reana-log-sse URL behind /logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: http.server.ThreadingHTTPServer | None = None

    # -- data ------------------------------------------------------------------------------

    def add_user(self) -> tuple[str, str]:
        token, user = f"tok-{uuid.uuid4().hex[:12]}", str(uuid.uuid4())
        self.users[token] = user
        return token, user

    def add_workflow(self, owner: str, name: str, workflow_id: uuid.UUID | None = None
                     ) -> Workflow:
        wf = Workflow(str(workflow_id or uuid.uuid4()), name, owner)
        self.workflows.append(wf)
        return wf

    def find(self, id_or_name: str, user: str) -> Workflow | None:
        for wf in self.workflows:
            if wf.owner != user:
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
                status, body = fake.answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(path)
        self.requests.append(parts.path)
        if self.mode == "slow":
            time.sleep(self.delay)
        if self.mode == "error":
            return 500, {"message": "Internal controller error."}
        segments = parts.path.split("/")  # "", "api", "workflows", id_or_name, action
        if len(segments) != 5 or segments[1:3] != ["api", "workflows"]:
            return 404, {"message": "not found"}
        id_or_name, action = segments[3], segments[4]
        token = parse_qs(parts.query).get("access_token", [None])[0]
        if token is None:
            return 401, {"message": "User not signed in"}
        user = self.users.get(token)
        if user is None:
            return 403, {"message": "Token not valid."}
        wf = self.find(id_or_name, user)
        if wf is None:
            return 404, {"message": f"REANA_WORKON is set to {id_or_name}, but that workflow "
                         "does not exist. Please set your REANA_WORKON environment variable "
                         "appropriately."}
        if action == "status":
            return 200, {
                "created": "2026-11-25T12:00:00", "id": wf.id, "logs": "{}", "name": wf.name,
                "progress": {"current_command": None, "current_step_name": None,
                             "failed": {"job_ids": [], "total": 0},
                             "finished": {"job_ids": [], "total": 0},
                             "run_started_at": "2026-11-25T12:00:01",
                             "running": {"job_ids": [], "total": 0},
                             "total": {"job_ids": [], "total": 1}},
                "status": wf.status, "user": user,
            }
        if action == "logs" and self.logs_backend:
            # reana-server proxying reana-log-sse: the answer passes through as is
            r = httpx.get(f"{self.logs_backend}/api/workflows/{quote(wf.id)}/logs",
                          params={"format": "reana", "access_token": token}, timeout=30)
            return r.status_code, r.json()
        return 404, {"message": "not found"}
