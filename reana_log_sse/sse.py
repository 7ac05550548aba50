"""A small Server-Sent Events parser (the WHATWG event-stream rules) for our clients."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, AsyncIterator


@dataclasses.dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str
    id: str | None
    retry: int | None = None


async def iter_sse(lines: AsyncIterable[str]) -> AsyncIterator[SSEEvent]:
    """Events from an iterable of lines (without their line ends), e.g. httpx's
    ``response.aiter_lines()``. Comments (pings) are skipped; ``retry`` alone is reported
    as an event named ``retry``."""
    event, data, last_id, retry = "", [], None, None
    async for line in lines:
        if line == "":
            if data:
                yield SSEEvent(event or "message", "\n".join(data), last_id, retry)
            elif retry is not None:
                yield SSEEvent("retry", "", last_id, retry)
            event, data, retry = "", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\x00" not in value:
            last_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)
