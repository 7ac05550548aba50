"""Options shared by ingest.py and follow.py (loaded once even when both files are given).

Both sides derive the same workflow ids from --workflows and --workflow-seed, so senders
and followers agree without talking to each other, on one machine or across locust
workers. Only the standard library and locust are needed on the load machines.
"""

from __future__ import annotations

import os
import uuid

from locust import events


@events.init_command_line_parser.add_listener
def _options(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--workflows", type=int, default=10, env_var="LOCUST_WORKFLOWS",
                        help="how many workflows the senders write and the followers follow")
    parser.add_argument("--workflow-seed", default="reana-log-sse-locust",
                        env_var="LOCUST_WORKFLOW_SEED",
                        help="change it to start on fresh workflows")
    parser.add_argument("--ingest-token", env_var="LOCUST_INGEST_TOKEN",
                        default=os.environ.get("REANA_LOG_SSE_INGEST_TOKEN", ""), is_secret=True,
                        help="bearer token for POST /ingest/vector")
    parser.add_argument("--read-token", default="", env_var="LOCUST_READ_TOKEN", is_secret=True,
                        help="reader token (auth=tokens) or REANA access token (auth=reana)")
    parser.add_argument("--senders", type=int, default=1, env_var="LOCUST_SENDERS",
                        help="how many of the users are Vector senders (the rest follow)")
    parser.add_argument("--batch-lines", type=int, default=1000, env_var="LOCUST_BATCH_LINES",
                        help="lines per ingest batch")
    parser.add_argument("--batch-interval", type=float, default=1.0,
                        env_var="LOCUST_BATCH_INTERVAL",
                        help="seconds between a sender's batches (Vector's batch timeout)")
    parser.add_argument("--gzip-level", type=int, default=6, env_var="LOCUST_GZIP_LEVEL")
    parser.add_argument("--max-retries", type=int, default=10, env_var="LOCUST_MAX_RETRIES",
                        help="retries of a batch on 408, 429, 5xx or a connection error")
    parser.add_argument("--reconnect-after", type=float, default=0.0,
                        env_var="LOCUST_RECONNECT_AFTER",
                        help="followers drop their stream after this many seconds and resume "
                        "with Last-Event-ID (0: only when the server closes it)")


def workflow_ids(options) -> list[str]:  # type: ignore[no-untyped-def]
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, options.workflow_seed)
    return [str(uuid.uuid5(namespace, str(i))) for i in range(max(1, options.workflows))]
