"""The client room: follow a workflow's logs over HTTP, from Python or the `logs` command.

- follower.py: `LogFollower`, reconnecting and resuming by `Last-Event-ID`;
- eventstream.py: the SSE parser and the event types, sans I/O;
- logs.py: the `reana-log-sse logs` command.

It talks to the service only over HTTP: it imports nothing from the service's rooms
(store, ingest, follow, reana, kubernetes), so a user's script needs only httpx and orjson.
`reana_log_sse.client.LogFollower` and the names below are the public API.

May import: nothing else of the package.
"""

from reana_log_sse.client.follower import (
    DEFAULT_SERVER,
    TERMINAL_STATUSES,
    AuthError,
    ClientError,
    End,
    Event,
    LogFollower,
    LogLine,
    NotFound,
    RawEvent,
    RequestError,
    SSEDecoder,
    StatusChange,
    Unreachable,
    describe,
)

__all__ = [
    "AuthError", "ClientError", "DEFAULT_SERVER", "End", "Event", "LogFollower", "LogLine",
    "NotFound", "RawEvent", "RequestError", "SSEDecoder", "StatusChange", "TERMINAL_STATUSES",
    "Unreachable", "describe",
]
