"""REANA_LOG_SSE_AUTH=reana: ask reana-server whether a reader may read a workflow.

A reader is who reana-server says they are: a REANA access token (`access_token=` or
`Authorization: Bearer` here; sent on as REANA_LOG_SSE_REANA_TOKEN_IN says, server.py), or
REANA's web session cookie (0.9's `session`, 0.95's `reana_at`), which reana-ui's pages send
by themselves, so the `<reana-live-log>` widget on a REANA page needs no token.
The question is the cheapest reana-server answers
for owned and shared workflows alike, `GET /api/workflows/{id_or_name}/parameters`
(reana_server.py has what each endpoint costs). reana-server answers the owner or a user
the workflow is shared with 200 `{"id", "name", "type", "parameters"}`, anyone else:

- 401 `{"message": "User not signed in"}` (no credentials) or "User has no active tokens";
- 403 `{"message": "Token not valid."}` / "User access token revoked." (bad token:
  reana-server decorators.py `signin_required` turns utils.py `get_user_from_token`'s
  ValueError into 403);
- 404 "REANA_WORKON is set to X, but that workflow does not exist..." for a workflow the
  user may not see (reana-db utils.py `_get_workflow_with_uuid_or_name` filters by owner
  and shares, so someone else's workflow looks like a missing one).

We answer 401 for missing or bad credentials, 403 when they are good but the workflow
(which we hold logs of) is not theirs, 404 when neither we nor they know it, and 503 with
`Retry-After` when reana-server cannot answer (down, timeout, 5xx, 429): never an open
door and never a refusal. Yes and no are cached for `ttl` seconds per (credentials,
workflow); failures never are. The same answer resolves a name (`myanalysis.42`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from starlette.exceptions import HTTPException
from starlette.requests import Request

from reana_log_sse.reana.server import (
    SESSION_COOKIE,
    Answer,
    Credentials,
    Denied,
    ReanaServer,
    ReanaUnavailable,
    ReanaWorkflow,
)
from reana_log_sse.settings import Settings

__all__ = ["Denied", "ReanaAuth", "ReanaUnavailable", "ReanaWorkflow", "unavailable"]

MAX_ENTRIES = 10_000  # cached answers kept at most; expired ones are dropped first


def unavailable(exc: ReanaUnavailable, what: str) -> HTTPException:
    return HTTPException(503, f"{what}: {exc}", headers={"Retry-After": str(exc.retry_after)})


class _TTLCache:
    """Answers per key for `ttl` seconds; one question in flight per key."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self.ttl, self.clock = ttl, clock
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[Any]] = {}

    async def get(self, key: tuple[str, str], ask: Callable[[], Awaitable[Any]]) -> Any:
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        future = self._inflight.get(key)
        if future is None:  # one question at a time per key; the others wait for it
            future = asyncio.ensure_future(ask())
            self._inflight[key] = future
            future.add_done_callback(lambda _: self._inflight.pop(key, None))
        answer = await asyncio.shield(future)  # ReanaUnavailable propagates, uncached
        self._store(key, answer)
        return answer

    def _store(self, key: tuple[str, str], answer: Any) -> None:
        now = self.clock()
        if len(self._cache) >= MAX_ENTRIES:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            while len(self._cache) >= MAX_ENTRIES:  # still full: drop the oldest
                self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (now + self.ttl, answer)


class ReanaAuth:
    """A `ReaderAuth` that defers to reana-server, with a TTL cache and a timeout."""

    def __init__(
        self, server_url: str | ReanaServer, *, ttl: float, timeout: float = 5.0,
        host: str | None = None, session_cookie: str = SESSION_COOKIE, token_in: str = "query",
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server = (server_url if isinstance(server_url, ReanaServer) else
                       ReanaServer(server_url, host=host, timeout=timeout,
                                   session_cookie=session_cookie, token_in=token_in,
                                   transport=transport))
        self.ttl = ttl
        self._answers = _TTLCache(ttl, clock)
        self._users = _TTLCache(ttl, clock)

    @classmethod
    def from_settings(cls, settings: Settings) -> ReanaAuth:
        if not settings.reana_server_url:
            raise ValueError("auth=reana needs REANA_LOG_SSE_REANA_SERVER_URL")
        return cls(settings.reana_server_url, ttl=settings.reana_auth_cache_seconds,
                   timeout=settings.reana_auth_timeout_seconds,
                   host=settings.reana_server_host,
                   session_cookie=settings.reana_session_cookie,
                   token_in=settings.reana_token_in)

    @property
    def asked(self) -> int:
        """Permission questions sent to reana-server (for tests and debugging)."""
        return self.server.sent.get("parameters", 0)

    def credentials(self, request: Request) -> Credentials:
        return Credentials.of(request, cookie=self.server.session_cookie)

    # -- the ReaderAuth protocol ---------------------------------------------------------

    async def authorize(self, request: Request, workflow_id: uuid.UUID) -> None:
        info = await self._allowed(request, str(workflow_id), workflow_id)
        if info.id != workflow_id:
            raise HTTPException(403, f"reana-server names another workflow {info.id}")

    async def resolve(self, request: Request, id_or_name: str) -> uuid.UUID:
        """A REANA workflow name (`myanalysis.42`, or `myanalysis` for its latest run)
        to the UUID it names for this reader, who may then read it."""
        return (await self._allowed(request, id_or_name, None)).id

    async def user(self, request: Request, workflow_id: uuid.UUID) -> str | None:
        """The reader's REANA user id (format=reana's `user`), cached like the answers."""
        creds = self.credentials(request)
        try:
            return await self._users.get(  # type: ignore[no-any-return]
                (creds.cache_key(), str(workflow_id)),
                lambda: self.server.workflow_user(creds, str(workflow_id)))
        except ReanaUnavailable as exc:
            raise unavailable(exc, "cannot ask reana-server") from None

    # -- the question, cached ------------------------------------------------------------

    async def _allowed(self, request: Request, id_or_name: str,
                       workflow_id: uuid.UUID | None) -> ReanaWorkflow:
        creds = self.credentials(request)
        if not creds:
            raise HTTPException(401, "a REANA access token (access_token= or Authorization: "
                                "Bearer) or REANA's session cookie (session or reana_at) is "
                                "required",
                                headers={"WWW-Authenticate": "Bearer"})
        try:
            answer = await self.check(creds, id_or_name)
        except ReanaUnavailable as exc:
            raise unavailable(exc, "cannot check the reader with reana-server") from None
        if isinstance(answer, ReanaWorkflow):
            request.state.reana_workflow = answer
            return answer
        status = answer.status
        if answer.not_found:
            # Someone else's workflow looks missing to reana-server; if we hold its logs,
            # it exists, and this reader may not read it.
            known = workflow_id is not None and await _known(request, workflow_id)
            status = 403 if known else 404
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        raise HTTPException(status, answer.message, headers=headers)

    async def check(self, creds: Credentials | str, id_or_name: str) -> Answer:
        """reana-server's answer for these credentials and workflow, from the cache if
        fresh. Raises ReanaUnavailable when reana-server cannot answer."""
        if isinstance(creds, str):
            creds = Credentials(token=creds)
        answer: Answer = await self._answers.get(
            (creds.cache_key(), id_or_name), lambda: self.server.workflow(creds, id_or_name))
        return answer


async def _known(request: Request, workflow_id: uuid.UUID) -> bool:
    snap = await request.app.state.store.snapshot(workflow_id, limit=0)
    return snap is not None
