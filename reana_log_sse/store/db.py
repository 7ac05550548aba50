"""Connections, the pool, and migrations (SQL files, applied versions in a table)."""

from __future__ import annotations

import logging
import re
from importlib import resources

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

logger = logging.getLogger("reana_log_sse")

NOTIFY_CHANNEL = "reana_log_sse"
_MIGRATION_LOCK = 7_351_001  # pg_advisory_xact_lock key: one migrator at a time
_MIGRATION_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


def load_sql(name: str) -> str:
    return resources.files("reana_log_sse.store").joinpath("sql", name).read_text(encoding="utf-8")


def conninfo(url: str) -> str:
    """Every connection works in UTC so timestamps leave the database as ...Z."""
    return psycopg.conninfo.make_conninfo(url, options="-c timezone=UTC")


async def _configure(conn: psycopg.AsyncConnection) -> None:
    await conn.execute(load_sql("incoming.sql"))
    await conn.commit()


def make_pool(url: str, *, max_size: int, timeout: float) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        conninfo(url),
        min_size=1,
        max_size=max_size,
        timeout=timeout,
        open=False,
        configure=_configure,
        reconnect_timeout=0,  # keep trying in the background; requests get 503 meanwhile
        name="reana-log-sse",
    )


def migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("reana_log_sse.store").joinpath("sql").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    return sorted(found)


# DETACH PARTITION .. CONCURRENTLY (partitions.py: dropping a day never blocks ingest or
# reads) and pg_inherits.inhdetachpending arrived in PostgreSQL 14.
MIN_SERVER_VERSION = 140000


class UnsupportedServer(RuntimeError):
    pass


def version_problem(server_version_num: int) -> str | None:
    """Why this PostgreSQL cannot serve reana-log-sse, or None."""
    if server_version_num >= MIN_SERVER_VERSION:
        return None
    major, minor = divmod(server_version_num, 10000)
    return (f"reana-log-sse needs PostgreSQL {MIN_SERVER_VERSION // 10000} or newer "
            f"(DETACH PARTITION .. CONCURRENTLY drops old days without blocking ingest); "
            f"this server is PostgreSQL {major}.{minor}. REANA's own database (postgres:12.13 "
            "in reana's helm values) is too old: give reana-log-sse a PostgreSQL of its own "
            "(REANA_LOG_SSE_DATABASE_URL)")


async def check_server(url: str) -> None:
    """Raise UnsupportedServer if the database is a PostgreSQL too old to serve."""
    async with await psycopg.AsyncConnection.connect(conninfo(url)) as conn:
        problem = version_problem(conn.info.server_version)
    if problem:
        raise UnsupportedServer(problem)


async def migrate(url: str) -> list[int]:
    """Apply the migrations not yet recorded; returns the versions applied now. Refuses a
    PostgreSQL older than MIN_SERVER_VERSION before touching anything."""
    applied_now = []
    async with await psycopg.AsyncConnection.connect(conninfo(url)) as conn, conn.transaction():
        problem = version_problem(conn.info.server_version)
        if problem:
            raise UnsupportedServer(problem)
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS reana_log_sse_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM reana_log_sse_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for version, name, text in migrations():
            if version in done:
                continue
            logger.info("applying migration %04d_%s", version, name)
            await conn.execute(sql.SQL(text))  # type: ignore[arg-type]
            await conn.execute(
                "INSERT INTO reana_log_sse_migrations (version, name) VALUES (%s, %s)",
                (version, name),
            )
            applied_now.append(version)
    return applied_now
