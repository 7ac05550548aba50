"""reana-log-sse: live job logs for REANA.

A line's path through the package, a room each:

    ingest/  ->  store/  ->  follow/        (POST /ingest/vector -> PostgreSQL -> SSE)

with the adapters beside it: reana/ (reana-server), kubernetes/ (the apiserver), client/
(the Python follower and `logs`), ship.py (a job's files, one standard-library file) and
bench/. app.py builds the application from the rooms; cli.py and demo.py run it.
settings.py, metrics.py, auth.py (tokens), params.py (query parameters), redact.py (no
secret in a log line) and server.py (uvicorn) are shared by the rooms. Each room's
__init__ says what it may import; tests/test_layout.py keeps that true and finds no import
circle.
"""

from __future__ import annotations

__version__ = "0.1.0"
