"""`reana-log-sse demo`: the service plus a simulated REANA workflow posting real batches."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import logging
import os
import random
import secrets
import socket
import sys
import uuid
import webbrowser
from collections.abc import Awaitable, Callable

import click
import httpx
import orjson
import uvicorn

from reana_log_sse.app import create_app
from reana_log_sse.settings import Settings

logger = logging.getLogger("reana_log_sse")

STEPS = ("gendata", "fitdata", "plot")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


class SimulatedWorkflow:
    """A REANA-like run: engine lines, three jobs one after another, then finished."""

    def __init__(self, base_url: str, token: str, rate: float,
                 say: Callable[[str], None] = lambda text: None) -> None:
        self.workflow_id = uuid.uuid4()
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.rate = rate
        self.say = say  # one line when each job starts

    def event(self, message: str, *, step: str | None = None, stream: str = "stdout") -> dict:
        job = f"reana-run-job-{uuid.uuid5(self.workflow_id, step)}" if step else None
        pod = f"{job}-{secrets.token_hex(3)}" if job else f"reana-run-batch-{self.workflow_id}-x"
        return {"workflow_id": str(self.workflow_id), "kind": "job" if step else "workflow",
                "job_id": job, "step": step, "pod": pod,
                "container": "job" if step else "workflow-engine", "stream": stream,
                "timestamp": _now(), "message": message, "collected_at": _now()}

    async def post(self, client: httpx.AsyncClient, events: list[dict]) -> None:
        body = gzip.compress(orjson.dumps(events))
        for attempt in range(10):  # as Vector does: retry 5xx
            response = await client.post("/ingest/vector", content=body,
                                         headers={**self.headers, "Content-Encoding": "gzip"})
            if response.status_code < 500 or attempt == 9:
                response.raise_for_status()  # Vector too gives up in the end (and says so)
                return
            await asyncio.sleep(0.2 * (attempt + 1))

    async def status(self, client: httpx.AsyncClient, status: str, step: str | None = None) -> None:
        job = f"reana-run-job-{uuid.uuid5(self.workflow_id, step)}" if step else None
        response = await client.post(f"/api/workflows/{self.workflow_id}/status",
                                     json={"status": status, "job_id": job, "step": step},
                                     headers=self.headers)
        response.raise_for_status()

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            await self.status(client, "running")
            await self.post(client, [self.event("Workflow engine started (serial)")])
            for step in STEPS:
                await self.post(client, [self.event(f"Publishing step:{step} to job controller")])
                await self.status(client, "running", step)
                self.say(f"  job {step} is running")
                await self.job(client, step)
                await self.status(client, "finished", step)
            await self.post(client, [self.event("Workflow finished. Publishing status.")])
            await self.status(client, "finished")

    async def job(self, client: httpx.AsyncClient, step: str) -> None:
        total = random.randint(60, 120)
        for i in range(1, total + 1):
            events = [self.event(f"{step}: processing chunk {i}/{total} "
                                 f"\x1b[32m{100 * i // total}%\x1b[0m", step=step)]
            if i % 25 == 0:
                events.append(self.event(f"{step}: warning: slow I/O on chunk {i}", step=step,
                                         stream="stderr"))
            await self.post(client, events)
            await asyncio.sleep(random.expovariate(self.rate))


def _command() -> str:
    """How the user called us (`.venv/bin/reana-log-sse`), for commands to paste."""
    called = sys.argv[0] if sys.argv else ""
    return called if os.path.basename(called) == "reana-log-sse" else "reana-log-sse"


class DemoServer(uvicorn.Server):
    """uvicorn, plus the demo's own client (the simulated workflow) as a task that starts
    once the service listens and is stopped before the service stops: uvicorn's shutdown
    closes the port first (uvicorn/server.py, `Server.shutdown`), so a request the client
    still sent after that would meet a refused connection (httpx.ConnectError)."""

    def __init__(self, config: uvicorn.Config, client: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._client = client
        self._task: asyncio.Task[None] | None = None
        self.client_error: BaseException | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._task = asyncio.create_task(self._client())
            self._task.add_done_callback(self._client_done)

    def _client_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.client_error = task.exception()  # the demo is broken: stop, and say why
            self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._task is not None:  # first the client, while the service still answers
            self._task.cancel()
            await asyncio.wait([self._task])
        await super().shutdown(sockets)


async def wait_ready(client: httpx.AsyncClient) -> None:
    """Until GET /readyz answers 200 (the database and its LISTEN connection are up)."""
    while (await client.get("/readyz")).status_code != 200:
        await asyncio.sleep(0.05)


async def run_demo(settings: Settings, rate: float, *, open_browser: bool = False) -> None:
    tokens = settings.ingest_token_list()
    token = tokens[0] if tokens else secrets.token_urlsafe(16)
    settings = settings.replace(ingest_tokens=token, end_grace_seconds=1.0)
    app = create_app(settings)
    debug = settings.log_level == "debug"  # else only warnings: the demo's lines stay in view
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level if debug or settings.log_level in (
                                "warning", "error") else "warning",
                            access_log=debug, log_config=None, timeout_graceful_shutdown=2)
    base = f"http://{settings.host}:{settings.port}"
    sim = SimulatedWorkflow(base, token, rate, say=click.echo)

    async def simulate() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            await wait_ready(client)
            await sim.status(client, "queued")  # known before anyone opens its URL
        _announce(base, sim.workflow_id, token, open_browser)
        await sim.run()
        click.echo("The workflow finished; the service keeps running (Ctrl-C to stop).")

    server = DemoServer(config, simulate)
    await server.serve()  # until Ctrl-C (uvicorn then re-raises it: cli's _stopped_by_signals)
    if server.client_error is not None:
        raise server.client_error


def _announce(base: str, wf: uuid.UUID, token: str, open_browser: bool) -> None:
    page = f"{base}/?workflow={wf}"
    click.echo(f"""
A simulated REANA workflow is running: its engine and three jobs ({", ".join(STEPS)}) post
their lines to the service as Vector would, then the workflow finishes.

  open in a browser:   {page}
  follow with curl:    curl -N {base}/api/workflows/{wf}/logs/stream
  or from a terminal:  {_command()} logs {wf} --follow --server {base}
  the whole log:       curl {base}/api/workflows/{wf}/logs?format=text
  post lines yourself: POST {base}/ingest/vector with 'Authorization: Bearer {token}'

Ctrl-C to stop (every request is logged with --log-level debug).
""")
    if open_browser and not webbrowser.open(page):
        click.echo("  (--open: no web browser found here; open the page yourself)")
