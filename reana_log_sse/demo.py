"""`reana-log-sse demo`: the service plus simulated REANA workflows posting real batches, one
after another until Ctrl-C, so that a page opened at any moment shows lines arriving."""

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
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Route

from reana_log_sse.app import create_app
from reana_log_sse.settings import Settings

logger = logging.getLogger("reana_log_sse")

STEPS = ("gendata", "fitdata", "plot")
DEFAULT_CYCLE_SECONDS = 36.0  # one simulated workflow, about as long as before cycles came
LIVE_PATH = "/live"  # the demo's page for whichever workflow is live now


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


class SimulatedWorkflow:
    """A REANA-like run: engine lines, three jobs one after another, then finished."""

    def __init__(self, base_url: str, token: str, rate: float,
                 say: Callable[[str], None] = lambda text: None,
                 cycle_seconds: float = DEFAULT_CYCLE_SECONDS) -> None:
        self.workflow_id = uuid.uuid4()
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.rate = rate
        self.say = say  # one line when each job starts
        self.job_seconds = cycle_seconds / len(STEPS)  # the jobs share the cycle
        self.step: str | None = None  # the running job's step, for Ctrl-C to name

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
                self.step = step
                self.say(f"  job {step} is running")
                await self.job(client, step)
                await self.status(client, "finished", step)
                self.step = None
            await self.post(client, [self.event("Workflow finished. Publishing status.")])
            await self.status(client, "finished")

    async def job(self, client: httpx.AsyncClient, step: str) -> None:
        """About `job_seconds` of lines at `rate` a second: the count is fixed up front
        (the lines say "chunk i/total"), and the job ends on time even if posts are slow."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.job_seconds
        total = max(5, round(self.rate * self.job_seconds * random.uniform(0.8, 1.0)))
        for i in range(1, total + 1):
            if loop.time() >= deadline:
                i = total  # late: the last chunk, so that the job still ends at 100%
            events = [self.event(f"{step}: processing chunk {i}/{total} "
                                 f"\x1b[32m{100 * i // total}%\x1b[0m", step=step)]
            if i % 25 == 0:
                events.append(self.event(f"{step}: warning: slow I/O on chunk {i}", step=step,
                                         stream="stderr"))
            await self.post(client, events)
            if i == total:
                return
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


class Cycle:
    """The simulated workflows, one after another until Ctrl-C; `live` is the running one."""

    def __init__(self, base: str, token: str, rate: float, cycle_seconds: float) -> None:
        self.base, self.token, self.rate, self.cycle_seconds = base, token, rate, cycle_seconds
        self.live: SimulatedWorkflow | None = None
        self.number = 0

    def next(self) -> SimulatedWorkflow:
        self.number += 1
        self.live = SimulatedWorkflow(self.base, self.token, self.rate, say=click.echo,
                                      cycle_seconds=self.cycle_seconds)
        return self.live

    async def live_page(self, request: Request) -> RedirectResponse:
        """GET /live: the page of the workflow running now (a bookmark that stays live)."""
        wf = self.live.workflow_id if self.live else ""
        return RedirectResponse(f"./?workflow={wf}", status_code=307,
                                headers={"Cache-Control": "no-store"})

    def stopped(self) -> str:
        """What Ctrl-C stopped, in one line."""
        if self.live is None:
            return "Stopped before the first simulated workflow started."
        running = f", job {self.live.step} running" if self.live.step else ""
        return (f"Stopped simulated workflow {self.number} ({self.live.workflow_id}{running}); "
                "its lines stay stored.")


async def run_demo(settings: Settings, rate: float, *, open_browser: bool = False,
                   cycle_seconds: float = DEFAULT_CYCLE_SECONDS) -> None:
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
    cycle = Cycle(base, token, rate, cycle_seconds)
    app.router.routes.insert(0, Route(LIVE_PATH, cycle.live_page))

    async def simulate() -> None:
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                await wait_ready(client)
                sim = cycle.next()
                await sim.status(client, "queued")  # known before anyone opens its URL
                _announce(base, token, open_browser)
                while True:
                    click.echo(f"Simulated workflow {cycle.number} is live: "
                               f"WF={sim.workflow_id}")
                    await sim.run()
                    click.echo(f"Simulated workflow {cycle.number} finished; the next one "
                               "starts (Ctrl-C to stop).")
                    sim = cycle.next()
                    await sim.status(client, "queued")
        except asyncio.CancelledError:
            click.echo(cycle.stopped())
            raise

    server = DemoServer(config, simulate)
    await server.serve()  # until Ctrl-C (uvicorn then re-raises it: cli's _stopped_by_signals)
    if server.client_error is not None:
        raise server.client_error


def _announce(base: str, token: str, open_browser: bool) -> None:
    page = f"{base}{LIVE_PATH}"
    click.echo(f"""
Simulated REANA workflows run one after another until Ctrl-C: each has its engine and three
jobs ({", ".join(STEPS)}) posting their lines to the service as Vector would, then finishes.

  open in a browser:   {page}   (always the live workflow)
  follow with curl:    curl -N {base}/api/workflows/$WF/logs/stream
  or from a terminal:  {_command()} logs $WF --follow --server {base}
  the whole log:       curl {base}/api/workflows/$WF/logs?format=text
  post lines yourself: POST {base}/ingest/vector with 'Authorization: Bearer {token}'
  where $WF is the live workflow's id, printed below as each one starts.

Ctrl-C to stop (every request is logged with --log-level debug).
""")
    if open_browser and not webbrowser.open(page):
        click.echo("  (--open: no web browser found here; open the page yourself)")
