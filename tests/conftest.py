"""Fixtures: a real embedded PostgreSQL per session, a fresh database per test, and the
service on a real uvicorn in a thread (SSE needs a real socket)."""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from psycopg import sql

from reana_log_sse.app import create_app
from reana_log_sse.server import uvicorn_config
from reana_log_sse.settings import Settings
from reana_log_sse.store import db
from reana_log_sse.store.embedded import create_database, embedded_postgres

INGEST_TOKEN = "test-ingest-token"
_TEMPLATE = "reana_log_sse_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import asyncio

    data_dir: Path = tmp_path_factory.mktemp("pg")
    with embedded_postgres(data_dir, database=_TEMPLATE) as template_url:
        asyncio.run(db.migrate(template_url))
        admin = template_url.replace(f"/{_TEMPLATE}?", "/postgres?")
        yield admin


@pytest.fixture
def database_url(pg_admin_url: str) -> str:
    name = f"t_{next(_counter)}"
    create_database(pg_admin_url, name, template=_TEMPLATE)
    return pg_admin_url.replace("/postgres?", f"/{name}?")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The real app on a real uvicorn, in a thread; stop() and start() again at will."""

    def __init__(self, settings: Settings, **app_kwargs: Any) -> None:
        self.settings = settings
        self.app_kwargs = app_kwargs
        self.port = settings.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.ingest_token = INGEST_TOKEN
        self.database_url = settings.database_url
        self.app: Any = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LiveServer:
        self.app = create_app(self.settings, **self.app_kwargs)
        config = uvicorn_config(self.app, self.settings, host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("server failed to start")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in 30 s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(30)
            self._server = None

    @contextlib.contextmanager
    def database_down(self) -> Iterator[None]:
        """The service's database refuses connections (and loses its open ones)."""
        name = psycopg.conninfo.conninfo_to_dict(self.database_url)["dbname"]
        admin = self.database_url.replace(f"/{name}?", "/postgres?")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                sql.Identifier(name)))
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            try:
                yield
            finally:
                conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(
                    sql.Identifier(name)))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        assert self.database_url is not None
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


def make_settings(database_url: str, **overrides: Any) -> Settings:
    base = dict(database_url=database_url, port=free_port(), ingest_tokens=INGEST_TOKEN,
                end_grace_seconds=0.2, ping_seconds=15, maintenance_interval_seconds=3600)
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def server_factory(database_url: str) -> Iterator[Any]:
    servers: list[LiveServer] = []

    def make(**overrides: Any) -> LiveServer:
        app_kwargs = {k: overrides.pop(k) for k in ("today",) if k in overrides}
        server = LiveServer(make_settings(database_url, **overrides), **app_kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def live_server(server_factory: Any) -> LiveServer:
    return server_factory()
