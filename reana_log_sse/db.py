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
    return resources.files("reana_log_sse").joinpath("sql", name).read_text(encoding="utf-8")


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
    for entry in resources.files("reana_log_sse").joinpath("sql").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    return sorted(found)


async def migrate(url: str) -> list[int]:
    """Apply the migrations not yet recorded; returns the versions applied now."""
    applied_now = []
    async with await psycopg.AsyncConnection.connect(conninfo(url)) as conn, conn.transaction():
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
