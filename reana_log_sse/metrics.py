"""Prometheus metrics, one registry per app (several apps can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_DELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                  10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "reana_log_sse_"
        self.lines_ingested = Counter(p + "lines_ingested", "Log lines stored", registry=r)
        self.duplicates = Counter(p + "duplicate_lines", "Lines already stored (retries)",
                                  registry=r)
        self.rejected = Counter(p + "rejected_events", "Events that failed validation",
                                ["reason"], registry=r)
        self.ingest_batches = Counter(p + "ingest_batches", "Ingested batches by decoder: "
                                      "fast (canonical, msgspec) or model (pydantic)",
                                      ["decoder"], registry=r)
        self.ingest_groups = Counter(p + "ingest_groups", "Groups of the ingest group "
                                     "commit: together (several batches, one commit), "
                                     "alone (one batch), split (failed whole: each batch "
                                     "then alone), unavailable (the database out: "
                                     "each batch answered 503)", ["how"], registry=r)
        self.ingest_grouped_batches = Counter(p + "ingest_group_batches", "Batches in the "
                                              "groups of ingest_groups, by how",
                                              ["how"], registry=r)
        self.ingest_group_waiting = Gauge(p + "ingest_group_waiting", "Ingest batches "
                                          "waiting for the next group commit", registry=r)
        self.ingest_requests = Counter(p + "ingest_requests", "Ingest requests by answer",
                                       ["code"], registry=r)
        self.database_errors = Counter(p + "database_errors", "Requests failed: database down",
                                       registry=r)
        self.active_streams = Gauge(p + "active_streams", "Open SSE streams", registry=r)
        self.followed_workflows = Gauge(p + "followed_workflows",
                                        "Workflows with at least one stream", registry=r)
        self.feed_reads = Counter(p + "feed_reads", "Live feeds' reads (feeds reading at "
                                  "once share one statement)", registry=r)
        self.feed_handoffs = Counter(p + "feed_handoffs", "A commit's lines a live feed got "
                                     "from this process's ingest, in place of a read "
                                     "(follow/handoff.py)", registry=r)
        self.opening_reads = Counter(p + "opening_reads", "Database reads by streams "
                                     "opening (one read shared by the streams of a workflow "
                                     "that open together)", registry=r)
        self.catchup_reads = Counter(p + "catchup_reads", "Database reads by lagging or "
                                     "resuming followers", registry=r)
        self.follower_overflows = Counter(p + "follower_overflows", "Follower queues emptied "
                                          "because the follower fell behind", registry=r)
        self.direct_writes = Counter(p + "direct_writes", "Live batches the feed wrote "
                                     "straight to a caught-up follower's socket (the others "
                                     "go through the follower's stream task)", registry=r)
        self.listen_reconnects = Counter(p + "listen_reconnects", "LISTEN connection "
                                         "(re)connect attempts after a loss", registry=r)
        self.notify_to_send = Histogram(p + "notify_to_send_seconds", "NOTIFY received -> "
                                        "a batch written to all its followers",
                                        buckets=_DELAY_BUCKETS, registry=r)
        # the Kubernetes API (reana_log_sse/kubernetes/)
        self.kubernetes_up = Gauge(p + "kubernetes_api_up", "1 while the pod watch reaches "
                                   "the Kubernetes API, 0 when it cannot or has heard "
                                   "nothing from it for longer than KUBERNETES_STALE_SECONDS "
                                   "(tap and pod statuses down; also 0 when the link is off)",
                                   registry=r)
        self.kubernetes_malformed = Counter(p + "kubernetes_malformed", "Pod watch objects "
                                            "not shaped as expected, logged and skipped",
                                            registry=r)
        self.pod_statuses = Counter(p + "pod_statuses", "Job and workflow statuses derived "
                                    "from pods and stored (each change once)", registry=r)
        self.tap_follows = Gauge(p + "tap_follows", "Open pods/log follows of the live tap",
                                 registry=r)
        self.tap_lines = Counter(p + "tap_lines", "Lines the live tap stored first", registry=r)
        self.tap_duplicates = Counter(p + "tap_vector_duplicates", "Lines the live tap stored "
                                      "that Vector brought later as duplicates", registry=r)
        self.tap_errors = Counter(p + "tap_errors", "Live tap follows that failed, by reason",
                                  ["reason"], registry=r)
        self.stage_delay = Histogram(
            p + "stage_delay_seconds",
            "Delay of each stage of a line's path, one observation per batch (its slowest "
            "line): written->collected (Vector read it) and collected->committed per "
            "ingested batch, committed->sent per batch once its last follower has it",
            ["stage"], buckets=_DELAY_BUCKETS, registry=r,
        )
