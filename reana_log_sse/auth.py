"""Who may write (ingest tokens) and who may read (none, tokens, or reana)."""

from __future__ import annotations

import hmac
import uuid
from typing import Protocol

from starlette.exceptions import HTTPException
from starlette.requests import Request

from reana_log_sse.settings import Settings


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _any_equal(candidate: str, tokens: list[str]) -> bool:
    found = False
    for token in tokens:  # compare with every token, in constant time each
        found |= hmac.compare_digest(candidate.encode(), token.encode())
    return found


WORKFLOW_TOKEN_PREFIX = "wf1."
MIN_WORKFLOW_TOKEN_KEY = 32


def workflow_token(key: str, workflow_id: uuid.UUID) -> str:
    """A token that writes one workflow only: `wf1.<workflow UUID>.<HMAC-SHA256 of it under
    REANA_LOG_SSE_WORKFLOW_TOKEN_KEY, hex>`. Whoever holds the key mints them (REANA, an
    admin: `reana-log-sse token --workflow W`); the service keeps no list of them."""
    mac = hmac.new(key.encode(), f"reana-log-sse write {workflow_id}".encode(), "sha256")
    return f"{WORKFLOW_TOKEN_PREFIX}{workflow_id}.{mac.hexdigest()}"


def token_workflow(key: str, token: str) -> uuid.UUID | None:
    """The workflow a token minted under `key` may write, None if it is not one."""
    if not key or not token.startswith(WORKFLOW_TOKEN_PREFIX):
        return None
    raw, _, _ = token[len(WORKFLOW_TOKEN_PREFIX):].partition(".")
    try:
        workflow_id = uuid.UUID(raw)
    except ValueError:
        return None
    if str(workflow_id) != raw:
        return None
    expected = workflow_token(key, workflow_id)
    return workflow_id if hmac.compare_digest(token.encode(), expected.encode()) else None


class IngestAuth:
    """Bearer tokens that may write: the ingest's, or the status endpoint's own; and, with
    a workflow token key, tokens that write one workflow only (workflow_token)."""

    def __init__(self, tokens: list[str], *, what: str = "ingest",
                 setting: str = "REANA_LOG_SSE_INGEST_TOKENS", workflow_key: str = "") -> None:
        self.tokens = tokens
        self.what = what
        self.setting = setting
        self.workflow_key = workflow_key

    def check(self, request: Request) -> uuid.UUID | None:
        """None if the token may write every workflow, a workflow's UUID if that one
        only; 401 if it may write none."""
        token = bearer_token(request)
        if token is not None and (workflow := token_workflow(self.workflow_key, token)):
            return workflow
        if not self.tokens and not self.workflow_key:
            raise HTTPException(401, f"no {self.what} tokens are configured: set "
                                f"{self.setting} or {self.setting}_FILE")
        if token is None or not _any_equal(token, self.tokens):
            raise HTTPException(401, f"missing or wrong {self.what} token",
                                headers={"WWW-Authenticate": "Bearer"})
        return None

    @staticmethod
    def refuse_other_workflow(allowed: uuid.UUID | None, workflow_id: uuid.UUID) -> None:
        if allowed is not None and allowed != workflow_id:
            raise HTTPException(403, f"this token writes workflow {allowed} only, not "
                                f"{workflow_id}")


class StatusAuth:
    """Who may POST statuses. A workflow's status ends every reader's stream and `deleted`
    erases its logs; job pods share REANA's runtime namespace with the components that
    POST statuses, and jobs shipped from HTCondor or Slurm hold the ingest token. So once
    status tokens are set, a workflow's status and `deleted` take a status token, and an
    ingest token may post only a job's status (what `reana-log-sse ship` sends)."""

    def __init__(self, ingest: IngestAuth, status: IngestAuth | None) -> None:
        self.ingest, self.status = ingest, status

    def check(self, request: Request) -> tuple[bool, uuid.UUID | None]:
        """(may post any status, not only a job's; the one workflow it may post to, None
        if any); 401 if neither. A workflow token posts its own workflow's jobs' only."""
        token = bearer_token(request)
        if token is not None and (
                workflow := token_workflow(self.ingest.workflow_key, token)):
            return False, workflow
        if self.status is None:
            self.ingest.check(request)
            return True, None
        if token is not None and _any_equal(token, self.status.tokens):
            return True, None
        if token is not None and _any_equal(token, self.ingest.tokens):
            return False, None
        raise HTTPException(401, "missing or wrong status token",
                            headers={"WWW-Authenticate": "Bearer"})


def make_status_auth(settings: Settings, ingest: IngestAuth) -> StatusAuth:
    tokens = settings.status_token_list()
    return StatusAuth(ingest, IngestAuth(tokens, what="status",
                                         setting="REANA_LOG_SSE_STATUS_TOKENS")
                      if tokens else None)


class ReaderAuth(Protocol):
    """May this request read this workflow? Raises HTTPException 401/403/503 if not."""

    async def authorize(self, request: Request, workflow_id: uuid.UUID) -> None: ...


READER_TOKEN_PARAMETER = "access_token"  # the access log redacts it (cli.RedactTokens)


def reader_token(request: Request) -> str | None:
    return request.query_params.get(READER_TOKEN_PARAMETER) or bearer_token(request)


class OpenAuth:
    """auth=none: anyone may read (the CLI refuses it unless listening on loopback)."""

    async def authorize(self, request: Request, workflow_id: uuid.UUID) -> None:
        return None


class TokenAuth:
    """auth=tokens: static reader tokens that may read every workflow."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens

    async def authorize(self, request: Request, workflow_id: uuid.UUID) -> None:
        token = reader_token(request)
        if token is None or not _any_equal(token, self.tokens):
            raise HTTPException(401, "missing or wrong access token",
                                headers={"WWW-Authenticate": "Bearer"})


def make_reader_auth(settings: Settings) -> ReaderAuth:
    """auth=none or auth=tokens; auth=reana is reana/auth.py's ReanaAuth.from_settings
    (app.py chooses)."""
    if settings.auth == "none":
        return OpenAuth()
    if settings.auth == "tokens":
        tokens = settings.read_token_list()
        if not tokens:
            raise ValueError("auth=tokens needs REANA_LOG_SSE_READ_TOKENS or "
                             "REANA_LOG_SSE_READ_TOKENS_FILE")
        return TokenAuth(tokens)
    raise ValueError(f"unknown auth mode {settings.auth!r}; use none, tokens or reana")


async def authorized_workflow(request: Request) -> uuid.UUID:
    """The workflow a request's path names, once its reader may read it: a UUID, or with
    auth=reana also a REANA name (`myanalysis.42`) that reana-server resolves."""
    raw = request.path_params["workflow_id"]
    auth = request.app.state.reader_auth
    try:
        workflow_id = uuid.UUID(raw)
    except ValueError:
        resolve = getattr(auth, "resolve", None)
        if resolve is None:
            raise HTTPException(404, f"unknown workflow {raw!r} (expected a workflow UUID)"
                                ) from None
        return await resolve(request, raw)  # type: ignore[no-any-return]
    await auth.authorize(request, workflow_id)
    return workflow_id
