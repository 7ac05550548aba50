"""The path and query parameters the routes read, each checked once, with a 4xx for bad ones."""

from __future__ import annotations

import uuid

from starlette.exceptions import HTTPException
from starlette.requests import Request

from reana_log_sse.store.snapshot import Filters


def workflow_id_param(request: Request) -> uuid.UUID:
    raw = request.path_params["workflow_id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise HTTPException(404, f"unknown workflow {raw!r} (expected a workflow UUID)") from None


MAX_ID = 2**63 - 1  # PostgreSQL bigint: ids, tails and limits past it can never match


def parse_int(raw: str, name: str, *, minimum: int = 0) -> int:
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
            raise HTTPException(400, f"{name} must be >= {minimum}")
        raise HTTPException(400, f"{name} must be an integer from {minimum} to {MAX_ID}, "
                            f"not {raw[:40]!r}")
    value = int(text)
    if not minimum <= value <= MAX_ID:
        raise HTTPException(400, f"{name} must be an integer from {minimum} to {MAX_ID}")
    return value


def int_param(request: Request, name: str, *, minimum: int = 0) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    return parse_int(raw, name, minimum=minimum)


def text_param(request: Request, name: str) -> list[str]:
    """Every non-empty value of a text parameter; NUL can never match a stored line."""
    values = [v for v in request.query_params.getlist(name) if v]
    if any("\x00" in v for v in values):
        raise HTTPException(400, f"{name} must not contain NUL")
    return values


def filters_param(request: Request) -> Filters:
    kind = request.query_params.get("kind")
    if kind not in (None, "", "job", "workflow", "service"):
        raise HTTPException(400, "kind must be job, workflow or service")
    jobs = tuple(text_param(request, "job"))
    return Filters(jobs=jobs, kind=kind or None)


TEXT_PREFIXES = ("step", "job", "none")


def prefix_param(request: Request) -> str:
    """format=text's `prefix`: step (the default, as `reana-log-sse logs`), job or none."""
    prefix = request.query_params.get("prefix") or "step"
    if prefix not in TEXT_PREFIXES:
        raise HTTPException(400, "prefix must be step, job or none")
    return prefix
