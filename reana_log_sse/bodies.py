"""A request body read within its caps in bytes and time, before anything else is done
with the request (authentication included).

A body over its cap is read on and thrown away, up to `drain` bytes, before the 413 is
sent: a server that answers and closes while the client is still sending leaves unread
bytes in its socket, the kernel then resets the connection, and the client sees the reset
instead of the answer (httpx: `RemoteProtocolError`/`ReadError`; a sender retries that for
ever). Past `drain` (declared by Content-Length or read), or past the deadline, the answer
goes out at once with `Connection: close`: a body that large or that slow is not read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request

DRAIN_FACTOR = 16  # a body over its cap is drained up to 16 times the cap, no more


class TooLarge(Exception):
    """The body is over its cap; `drained`: it was read to its end (the sender can read
    the answer on a connection that stays open)."""

    def __init__(self, drained: bool) -> None:
        super().__init__("body too large")
        self.drained = drained


async def read_capped(request: Request, limit: int, timeout: float, *,
                      drain: int | None = None,
                      over: Callable[[bytes], None] | None = None) -> bytes:
    """The body's bytes as sent (at most `limit`, else TooLarge), all arrived within
    `timeout` seconds (else 408). Past `limit` the body is read on without being kept, up
    to `drain` bytes in all (DRAIN_FACTOR times `limit` by default); `over` is given what
    was read so far, then each later chunk (body.py keeps an over-cap event's edges)."""
    drain = limit * DRAIN_FACTOR if drain is None else drain
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > drain:
        raise TooLarge(drained=False)
    chunks: list[bytes] = []
    size = 0
    spilled = False
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if not spilled and size <= limit:
                    chunks.append(chunk)
                    continue
                if not spilled:  # past the cap: nothing more is kept here
                    spilled = True
                    if over is not None:
                        over(b"".join(chunks) + chunk)
                    chunks = []
                elif over is not None:
                    over(chunk)
                if size > drain:
                    raise TooLarge(drained=False)
    except TimeoutError:
        raise HTTPException(408, f"the body did not arrive within {timeout:g} s "
                            "(REANA_LOG_SSE_BODY_TIMEOUT_SECONDS)",
                            headers={"Connection": "close"}) from None
    if size > limit:
        raise TooLarge(drained=True)
    return b"".join(chunks)


def too_large(exc: TooLarge, detail: str) -> HTTPException:
    """The 413 for a body over its cap: the connection closed after it unless drained."""
    headers = {} if exc.drained else {"Connection": "close"}
    return HTTPException(413, detail, headers=headers)
