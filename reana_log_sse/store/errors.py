"""psycopg errors translated, in one place, into what the HTTP layer answers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import psycopg
import psycopg_pool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

logger = logging.getLogger("reana_log_sse")


class ServiceError(Exception):
    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class DatabaseUnavailable(ServiceError):
    """The database cannot be reached now; the request may succeed later (503)."""

    status_code = 503


class BadInput(ServiceError):
    """The database refused a value the request carried: it can never succeed (400).
    The HTTP layer validates first; this is the net under it, never a 500."""

    status_code = 400


class PartitionMissing(ServiceError):
    """A row's timestamp has no partition yet."""


_UNAVAILABLE = (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg.InterfaceError)


@contextlib.asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Turn psycopg's exceptions into ours; everything else passes through."""
    try:
        yield
    except psycopg.errors.CheckViolation as exc:
        if "no partition" in str(exc):
            raise PartitionMissing(str(exc)) from exc
        raise
    except psycopg.errors.QueryCanceled:
        raise
    # What bad input can make psycopg or PostgreSQL refuse: NUL in text, a number out of
    # range, an invalid text representation (DataError, SQLSTATE class 22), a value too
    # big for an index or too deeply nested (class 54, psycopg files it under
    # OperationalError), text that cannot be encoded (lone surrogates).
    except (psycopg.DataError, psycopg.errors.ProgramLimitExceeded, UnicodeEncodeError) as exc:
        raise BadInput(f"the database refused a value: {_first_line(exc)}") from exc
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


async def service_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    metrics = getattr(request.app.state, "metrics", None)
    if isinstance(exc, DatabaseUnavailable):
        if metrics is not None:
            metrics.database_errors.inc()
        logger.warning("%s %s: %s", request.method, request.url.path, exc.detail)
        return JSONResponse(
            {"error": "database unavailable, retry later"},
            status_code=503,
            headers={"Retry-After": "1"},
        )
    log = logger.warning if isinstance(exc, BadInput) else logger.error
    log("%s %s: %s", request.method, request.url.path, exc.detail)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
