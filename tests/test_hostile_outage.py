"""A database outage with ingest batches queued (issue 19, finding 13): each batch is answered
503 with Retry-After within one pool timeout of its arrival, never behind several, and
never 500, also when the service is stopped meanwhile."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import LiveServer
from tests.helpers import VECTOR_HEADERS, event
from tests.serve_process import ServeProcess


def _post(url: str, token: str, wf: uuid.UUID, i: int) -> httpx.Response:
    body = json.dumps([event(wf, f"line {i}")]).encode()
    headers = {**VECTOR_HEADERS, "Content-Encoding": "identity",
               "Authorization": f"Bearer {token}"}
    return httpx.post(f"{url}/ingest/vector", content=body, headers=headers, timeout=120)


def test_hostile_database_outage_with_batches_queued_answers_503_within_one_pool_timeout(
        server_factory: Any):
    server = server_factory(db_timeout_seconds=1)
    store = server.app.state.store
    group = store.group
    ended = [0]  # attempts on the database that ended (each waits up to a pool timeout)
    waited: list[int] = []  # per batch: attempts that ended while it waited for its answer
    causes: list[str] = []  # why each attempt failed
    together, submit = store.ingest_together, group.submit

    async def counted_together(*args: Any, **kwargs: Any) -> Any:
        # every attempt passes here once (ingest_alone too): group, alone, retry
        try:
            return await together(*args, **kwargs)
        except Exception as exc:
            causes.append(type(exc.__cause__).__name__)
            raise
        finally:
            ended[0] += 1

    async def watched_submit(*args: Any, **kwargs: Any) -> Any:
        start = ended[0]
        try:
            return await submit(*args, **kwargs)
        finally:
            waited.append(ended[0] - start)

    wf = uuid.uuid4()
    store.ingest_together = counted_together
    with server.database_down(), concurrent.futures.ThreadPoolExecutor(12) as pool:
        # the pool's idle connections fail at once; then every attempt waits its timeout
        while "PoolTimeout" not in causes:
            assert _post(server.url, server.ingest_token, wf, -1).status_code == 503
        group.submit = watched_submit
        answers = list(pool.map(lambda i: _post(server.url, server.ingest_token, wf, i),
                                range(12)))
    assert [r.status_code for r in answers] == [503] * 12
    assert all(r.headers.get("retry-after") for r in answers)
    print(f"\n12 batches during an outage: attempts ended while each waited {sorted(waited)}")
    # one pool timeout each: the attempt in flight when it arrived, or its own; not the
    # earlier attempt, then a group's, then its own again (3 pool timeouts)
    assert len(waited) == 12 and max(waited) <= 1, waited


def test_hostile_database_outage_then_sigterm_is_503_never_500(database_url: str,
                                                              tmp_path: Path):
    # a pool timeout longer than uvicorn's graceful shutdown (5 s, cli.py): the batches
    # still wait when uvicorn cancels their requests (uvicorn/server.py Server.shutdown)
    server = ServeProcess(database_url, tmp_path,
                          REANA_LOG_SSE_DB_TIMEOUT_SECONDS="7").start()
    wf = uuid.uuid4()
    try:
        with LiveServer.database_down(server), \
                concurrent.futures.ThreadPoolExecutor(6) as pool:  # type: ignore[arg-type]
            while "PoolTimeout" not in server.output():  # the idle connections fail at once
                assert _post(server.url, server.ingest_token, wf, -1).status_code == 503
            alone = _metric(server, 'ingest_groups_total{how="alone"}')
            pending = [pool.submit(_post, server.url, server.ingest_token, wf, 0)]
            _wait_for(lambda: _metric(server, 'ingest_groups_total{how="alone"}') == alone + 1)
            pending += [pool.submit(_post, server.url, server.ingest_token, wf, i)
                        for i in range(1, 6)]  # queued behind the first
            _wait_for(lambda: _metric(server, "ingest_group_waiting") == 5)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            answers = [f.result() for f in pending]
            server.wait(60)
    finally:
        server.kill()
    output = server.output()
    assert [r.status_code for r in answers] == [503] * 6, [r.text for r in answers]
    assert "Future exception was never retrieved" not in output
    assert "Exception in ASGI application" not in output


def _metric(server: ServeProcess, name: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(f"reana_log_sse_{name} "):
            return float(line.split()[1])
    return 0


def _wait_for(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
