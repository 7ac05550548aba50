"""The load generator of the opening scenario (fanout.opening), in its own process: it
opens many SSE streams at once as cheaply as one Python process can (uvloop when
installed, raw sockets, every connect in flight), so that the service, not this
process, sets the pace. In the bench's own asyncio loop, opening 5,000 streams took the
load generator about as much CPU as the service (about 300 µs per stream); here about a
third of that.

Protocol, one JSON line each way at each step:
- stdin: {"url": base url, "paths": [...], "until": the id every stream must reach};
- stdout: {"first_seconds", "opened", "errors"} once every stream has its first frame
  (seconds from the first connect);
- stdin: "go" (the line is about to be posted); stdout: {"live_seconds" (from "go" until
  every stream has the id `until`), "live", "cpu_seconds" (this process, so far)};
- stdin: EOF: the streams are closed and the process ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from reana_log_sse.bench.rawhttp import Follower


async def open_burst(base_url: str, paths: list[str], *, in_flight: int,
                     timeout: float = 60.0) -> tuple[list[Follower], list[str], float]:
    """A stream per path, up to `in_flight` connects outstanding (a slot is freed when its
    connection is made, not when its stream answers). Returns the streams that sent
    their first frame, why the others did not, and the seconds from the first connect
    until the last first frame."""
    parts = urlsplit(base_url)
    host, port = parts.hostname, parts.port or 80
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(in_flight)

    async def one(path: str) -> Follower:
        async with sem:
            _, follower = await loop.create_connection(
                lambda: Follower(parts.netloc, path), host, port)
        await asyncio.wait_for(follower.started, timeout)
        return follower

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(p) for p in paths), return_exceptions=True)
    seconds = time.perf_counter() - t0
    opened = [r for r in results if isinstance(r, Follower)]
    errors = [str(r) or type(r).__name__ for r in results if not isinstance(r, Follower)]
    return opened, errors, seconds


async def _line() -> str:
    return await asyncio.to_thread(sys.stdin.readline)


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def main() -> None:
    job = json.loads(await _line())
    paths: list[str] = job["paths"]
    held, errors, first = await open_burst(job["url"], paths,
                                           in_flight=job.get("in_flight") or len(paths))
    _say({"first_seconds": first, "opened": len(held), "errors": sorted(set(errors))[:5],
          "refused": len(errors)})
    try:
        await _line()  # "go"
        t0 = time.perf_counter()
        live = 0
        for f in held:
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(f.reached(job["until"]),
                                       max(0.01, 60 - (time.perf_counter() - t0)))
                live += 1
        _say({"live_seconds": time.perf_counter() - t0, "live": live,
              "cpu_seconds": time.process_time()})
        await _line()  # EOF: done
    finally:
        for f in held:
            f.close()


def run() -> None:
    try:
        import uvloop
    except ImportError:  # plain asyncio: the figures then include more of this process
        asyncio.run(main())
    else:
        uvloop.run(main())


if __name__ == "__main__":
    run()
