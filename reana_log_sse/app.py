"""The Starlette application: routes, middleware and lifespan state, declared once."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles

from reana_log_sse import kubernetes, openapi
from reana_log_sse.auth import (
    MIN_WORKFLOW_TOKEN_KEY,
    IngestAuth,
    bearer_token,
    make_reader_auth,
    make_status_auth,
)
from reana_log_sse.follow.hub import Hub
from reana_log_sse.follow.opening import OpeningReads
from reana_log_sse.follow.stream import StreamLogs
from reana_log_sse.ingest.route import ingest_vector
from reana_log_sse.ingest.status import post_status
from reana_log_sse.metrics import Metrics
from reana_log_sse.openapi import openapi_json
from reana_log_sse.opensearch.route import routes as opensearch_routes
from reana_log_sse.reana.auth import ReanaAuth
from reana_log_sse.reana.route import read_logs
from reana_log_sse.settings import Settings
from reana_log_sse.store import db, partitions
from reana_log_sse.store.errors import ServiceError, service_error_handler
from reana_log_sse.store.store import Store

logger = logging.getLogger("reana_log_sse")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = request.app.state
    problems = []
    try:
        await state.store.ping()
    except ServiceError as exc:
        problems.append(exc.detail)
    if not state.hub.listening:
        problems.append("LISTEN connection down")
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    """Prometheus text. Open unless REANA_LOG_SSE_METRICS_TOKEN is set, on purpose: it
    holds counts and latencies only (no log text, no workflow ids, no tokens), and the
    reader auth (auth=tokens/reana) is for logs."""
    token = request.app.state.settings.metrics_token
    if token:
        given = bearer_token(request)
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong metrics token",
                                headers={"WWW-Authenticate": "Bearer"})
    return Response(generate_latest(request.app.state.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code,
                        headers=exc.headers)


async def client_gone(request: Request, exc: Exception) -> Response:
    """The client closed its connection while sending the body (a sender timed out, a
    demo stopped mid-POST): nothing can be answered, and it is not the service's error."""
    logger.info("%s %s: the client went away before its body arrived", request.method,
                request.url.path)
    return Response(status_code=400)  # uvicorn drops it: the connection is gone


class FilesBehindRoutes(Mount):
    """The static files at `/`, which match every path: not the paths of `routes`, so that
    a route asked with another method answers its own 405 with its Allow (schemathesis
    found `OPTIONS /ingest/vector` answered by the files: 405 `Allow: GET, HEAD`)."""

    def __init__(self, path: str, app: Any, *, name: str, routes: list[Route]) -> None:
        super().__init__(path, app=app, name=name)
        self.before = routes

    def matches(self, scope: Any) -> tuple[Match, dict[str, Any]]:
        if any(route.matches(scope)[0] is not Match.NONE for route in self.before):
            return Match.NONE, {}
        return super().matches(scope)


def _static_dir() -> str:
    return str(resources.files("reana_log_sse").joinpath("static"))


def app_from_env() -> LogsApp:
    """The app of one `serve --workers N` process: its settings from the environment,
    which the parent filled in (uvicorn imports this factory in every worker)."""
    return create_app(Settings.from_env())


def create_app(settings: Settings, *, today: Callable[[], dt.date] | None = None) -> LogsApp:
    """Build the app. `settings.database_url` must be set (serve resolves the embedded one)."""
    if not settings.database_url:
        raise ValueError("create_app needs settings.database_url")
    if 0 < len(settings.workflow_token_key) < MIN_WORKFLOW_TOKEN_KEY:
        raise ValueError(f"REANA_LOG_SSE_WORKFLOW_TOKEN_KEY must be at least "
                         f"{MIN_WORKFLOW_TOKEN_KEY} characters")
    url = settings.database_url
    clock = today or (lambda: dt.datetime.now(dt.UTC).date())
    reader_auth = (ReanaAuth.from_settings(settings) if settings.auth == "reana"
                   else make_reader_auth(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = app.state
        _tune_gc()
        logger.info("database: %s", _redact(url))
        applied = await db.migrate(url)
        logger.info("migrations: %s", f"applied {applied}" if applied else "up to date")
        pool = db.make_pool(url, max_size=settings.pool_max_size,
                            timeout=settings.db_timeout_seconds)
        await pool.open(wait=True, timeout=30)
        state.pool = pool
        # another process may be creating the partitions right now: wait for it
        state.store = Store(pool, create_partitions=lambda: state.maintain(wait=True),
                            group_lines=settings.ingest_group_lines, metrics=state.metrics)
        state.hub = Hub(state.store, url, state.metrics, queue_lines=settings.follower_queue_lines,
                        queue_bytes=settings.follower_queue_bytes,
                        line_bytes=settings.max_line_bytes,
                        end_grace=settings.end_grace_seconds,
                        ping_seconds=settings.ping_seconds,
                        send_timeout=settings.send_timeout_seconds,
                        direct_writes=settings.direct_writes)
        state.openings = OpeningReads(state.store, state.metrics)
        await state.maintain(wait=True)  # another process may be creating them right now
        await state.hub.start()
        await state.hub.wait_listening(10)
        task = asyncio.create_task(_maintenance_loop(state), name="maintenance")
        state.kubernetes = None
        if kubernetes.enabled(settings):  # pod statuses and the live tap
            from reana_log_sse.kubernetes.link import KubernetesLink

            state.kubernetes = await KubernetesLink.start(
                settings, state.store, state.hub, state.metrics, window=window)
        if not settings.ingest_token_list() and not settings.workflow_token_key:
            logger.warning("no ingest tokens configured: POST /ingest/vector answers 401 "
                           "(set REANA_LOG_SSE_INGEST_TOKENS or "
                           "REANA_LOG_SSE_WORKFLOW_TOKEN_KEY)")
        try:
            yield
        finally:
            task.cancel()
            if state.kubernetes is not None:
                await state.kubernetes.stop()
            await state.hub.stop()
            await state.store.close()  # the batches of a pending group commit first
            await pool.close()
            server = getattr(app.state.reader_auth, "server", None)
            if server is not None:  # auth=reana's client of reana-server
                await server.close()

    async def maintain(*, wait: bool = False) -> partitions.MaintenanceReport:
        return await partitions.maintain(url, window(), wait=wait)

    def window() -> partitions.Window:
        return partitions.Window.around(clock(), retention_days=settings.retention_days,
                                        ahead_days=settings.partitions_ahead_days)

    stream_route = Route("/api/workflows/{workflow_id}/logs/stream", StreamLogs(),
                         methods=["GET"])
    routes = [
        Route("/ingest/vector", ingest_vector, methods=["POST"]),
        Route("/api/workflows/{workflow_id}/status", post_status, methods=["POST"]),
        stream_route,
        Route("/api/workflows/{workflow_id}/logs", read_logs),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi_json),
        # REANA's OpenSearch seam, when a password is set (opensearch/route.py)
        *opensearch_routes(settings),
    ]
    app = LogsApp(
        stream_route=stream_route,
        routes=[
            *routes,
            # the <reana-live-log> widget (and anything else in static/) for embedding pages
            Mount("/static", StaticFiles(directory=_static_dir()), name="widget"),
            FilesBehindRoutes("/", StaticFiles(directory=_static_dir(), html=True),
                              name="static", routes=routes),
        ],
        middleware=_middleware(settings),
        exception_handlers={HTTPException: http_error, ServiceError: service_error_handler,
                            ClientDisconnect: client_gone},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.openapi = openapi.document(_static_dir())
    app.state.metrics = Metrics()
    app.state.ingest_auth = IngestAuth(settings.ingest_token_list(),
                                       workflow_key=settings.workflow_token_key)
    app.state.status_auth = make_status_auth(settings, app.state.ingest_auth)
    app.state.reader_auth = reader_auth
    app.state.maintain = maintain
    app.state.parse_turn = asyncio.Lock()  # ingest.py: batches decoded one at a time
    app.state.window = window
    return app


# An ingested line allocates some ten objects (event, strings, datetimes, UUIDs, tuples),
# nearly all freed by their reference counts; the cycle collector's default first
# threshold (700 allocations) ran it every ~70 lines, 1.5 µs of the service's ~9 µs per
# line (docs/performance.md). Collections stay, less often; the older two thresholds too.
_GC_GEN0 = 20_000


def _tune_gc() -> None:
    gen0, gen1, gen2 = gc.get_threshold()
    if 0 < gen0 < _GC_GEN0:  # 0: collection disabled on purpose; leave it
        gc.set_threshold(_GC_GEN0, gen1, gen2)


async def _maintenance_loop(state: object) -> None:
    settings: Settings = state.settings  # type: ignore[attr-defined]
    while True:
        await asyncio.sleep(settings.maintenance_interval_seconds)
        try:
            await state.maintain()  # type: ignore[attr-defined]
        except ServiceError as exc:
            logger.warning("partition maintenance: %s", exc.detail)
        except Exception:
            logger.exception("partition maintenance failed")


class LogsApp(Starlette):
    """Starlette, with the event stream's route run before its middleware stack.

    A held stream keeps every coroutine frame between uvicorn and its response for its
    whole life: through the stack, Starlette's own call, ServerErrorMiddleware (and a
    send closure), GZip, ExceptionMiddleware (two more frames and a closure), the router
    and the route, some 3.5 KiB a stream in tracemalloc (docs/performance.md, "Memory per
    stream"). Here the stream's route is matched by its own Route (as the router would:
    its endpoint and path params) and its response run from this frame. What its endpoint
    raises before the response starts, it answers with the app's handlers
    (follow/stream.StreamLogs); anything else goes to uvicorn, which answers 500 if
    nothing was sent and logs it (uvicorn/protocols/http/httptools_impl.py, run_asgi), as
    ServerErrorMiddleware would. The app's CORS middleware, when origins are set, wraps
    the stream too. Another method on the stream's path goes through the stack to the
    router, which answers 405 with its Allow."""

    def __init__(self, *, stream_route: Route, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stream_route = stream_route
        # the app's middleware that a stream sees (CORS); GZip would not compress it
        streams: Any = None
        for cls, args, options in reversed(self.user_middleware):
            if cls is CORSMiddleware:
                streams = cls(streams or stream_route.app, *args, **options)
        self._streams = streams

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/logs/stream"):
            match, child_scope = self.stream_route.matches(scope)
            if match is Match.FULL:
                scope["app"] = self
                scope.update(child_scope)
                if self._streams is not None:
                    await self._streams(scope, receive, send)
                else:  # the response runs from this frame: no other is held
                    response = await self.stream_route.endpoint.response(scope, receive, send)
                    await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _middleware(settings: Settings) -> list[Middleware]:
    # GZip for answers of 4 KiB or more; the event streams pass by it (LogsApp)
    middleware = [Middleware(GZipMiddleware, minimum_size=4096)]
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:  # REANA's web UI on another origin embeds <reana-live-log>
        middleware.insert(0, Middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET"],
            allow_headers=["Authorization", "Last-Event-ID"], max_age=600,
        ))
    return middleware


def _redact(url: str) -> str:
    import psycopg

    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable URL>"
    params.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(params.items()))
