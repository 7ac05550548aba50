"""Every setting, with its environment variable, default and meaning, in one table.

The CLI, the app and the README's configuration table all read ``SETTINGS``; a test checks
that the README lists each one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import platformdirs

ENV_PREFIX = "REANA_LOG_SSE_"
AuthMode = Literal["none", "tokens", "reana"]
KubernetesMode = Literal["auto", "on", "off"]


def _default_data_dir() -> str:
    return platformdirs.user_data_dir("reana-log-sse")


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str | None = dataclasses.field(
        default=None,
        metadata={"help": "PostgreSQL URL; unset means an embedded PostgreSQL under the data "
                  "dir (plain DATABASE_URL is read too)"},
    )
    data_dir: str = dataclasses.field(
        default_factory=_default_data_dir,
        metadata={"help": "where the embedded PostgreSQL keeps its files",
                  "default_doc": "per-user data dir (~/.local/share/reana-log-sse)"},
    )
    host: str = dataclasses.field(default="127.0.0.1", metadata={"help": "listen address"})
    port: int = dataclasses.field(default=8000, metadata={"help": "listen port"})
    log_level: str = dataclasses.field(
        default="info", metadata={"help": "debug, info, warning or error"}
    )
    workers: int = dataclasses.field(
        default=1,
        metadata={"help": "serve: processes sharing the port, each with its own pool, "
                  "LISTEN connection and followers (uvicorn's workers)"},
    )
    ingest_tokens: str = dataclasses.field(
        default="", metadata={"help": "comma-separated bearer tokens accepted by the ingest "
                              "and status endpoints"}
    )
    ingest_tokens_file: str | None = dataclasses.field(
        default=None, metadata={"help": "file with more ingest tokens, one per line"}
    )
    max_body_bytes: int = dataclasses.field(
        default=10 * 1024 * 1024,
        metadata={"help": "cap on a decompressed ingest body; past it 413 (admits Vector's "
                  "default 10 MB batch)"},
    )
    max_status_body_bytes: int = dataclasses.field(
        default=64 * 1024,
        metadata={"help": "cap on a status POST's body and on a body sent with REANA's "
                  "logs request (reana-client's steps); past it 413"},
    )
    body_timeout_seconds: float = dataclasses.field(
        default=60.0,
        metadata={"help": "any request body (ingest, status, REANA's logs request) must "
                  "arrive within this; past it 408 (a sender retries)"},
    )
    header_timeout_seconds: float = dataclasses.field(
        default=10.0,
        metadata={"help": "a request's headers must arrive within this after the "
                  "connection opens or the previous answer ends; past it the connection "
                  "is closed"},
    )
    max_header_bytes: int = dataclasses.field(
        default=64 * 1024,
        metadata={"help": "cap on a request's line and headers; past it 431 and close"},
    )
    max_line_bytes: int = dataclasses.field(
        default=64 * 1024,
        metadata={"help": "a longer message is cut there and marked truncated"},
    )
    retention_days: int = dataclasses.field(
        default=30, metadata={"help": "days of log partitions kept; older ones are dropped"}
    )
    partitions_ahead_days: int = dataclasses.field(
        default=2, metadata={"help": "daily partitions created ahead of today"}
    )
    maintenance_interval_seconds: float = dataclasses.field(
        default=3600.0, metadata={"help": "how often the service runs partition maintenance"}
    )
    auth: AuthMode = dataclasses.field(
        default="none",
        metadata={"help": "who may read logs: none (loopback only), tokens, or reana"},
    )
    read_tokens: str = dataclasses.field(
        default="", metadata={"help": "comma-separated reader tokens for auth=tokens"}
    )
    read_tokens_file: str | None = dataclasses.field(
        default=None, metadata={"help": "file with more reader tokens, one per line"}
    )
    reana_server_url: str | None = dataclasses.field(
        default=None, metadata={"help": "reana-server base URL for auth=reana"}
    )
    reana_server_host: str | None = dataclasses.field(
        default=None,
        metadata={"help": "the Host header sent to reana-server, which answers 400 to any "
                  "Host but its REANA_HOSTNAME (reana-server config.py TRUSTED_HOSTS)",
                  "default_doc": "REANA_HOSTNAME if set, else the URL's host"},
    )
    reana_session_cookie: str = dataclasses.field(
        default="session",
        metadata={"help": "the name of REANA's web session cookie (what reana-ui sends); "
                  "a reader with it and no token is checked by asking reana-server"},
    )
    reana_token_in: str = dataclasses.field(
        default="query",
        metadata={"help": "auth=reana: how a reader's REANA token is sent on to reana-server: "
                  "query (REANA 0.9: the access_token parameter, reana-server decorators.py "
                  "signin_required) or header (REANA 0.95's Authorization: Bearer, reana-server "
                  "auth/deps.py); never both (docs/reana-integration.md section 1)"},
    )
    status_tokens: str = dataclasses.field(
        default="",
        metadata={"help": "comma-separated bearer tokens for POST /api/workflows/{id}/status; "
                  "when set (or the file), a workflow's status and `deleted` take one of "
                  "them, and ingest tokens may post only a job's status"},
    )
    status_tokens_file: str | None = dataclasses.field(
        default=None, metadata={"help": "file with more status tokens, one per line"}
    )
    workflow_token_key: str = dataclasses.field(
        default="",
        metadata={"help": "key (32+ characters) under which workflow tokens are minted "
                  "(`reana-log-sse token --workflow W`): a workflow token may write the "
                  "lines and job statuses of that one workflow only (for HTCondor and "
                  "Slurm jobs, which can read the token they ship with)"},
    )
    reana_auth_cache_seconds: float = dataclasses.field(
        default=30.0,
        metadata={"help": "auth=reana: how long reana-server's yes or no for a token and "
                  "workflow is reused"},
    )
    reana_auth_timeout_seconds: float = dataclasses.field(
        default=5.0,
        metadata={"help": "auth=reana: how long to wait for reana-server before answering "
                  "503"},
    )
    cors_origins: str = dataclasses.field(
        default="",
        metadata={"help": "comma-separated origins (e.g. https://reana.example.org) whose "
                  "pages may embed the widget and read streams; * for any"},
    )
    wait_for_unknown: bool = dataclasses.field(
        default=False,
        metadata={"help": "a stream of an unknown workflow waits for its first line "
                  "instead of 404"},
    )
    ping_seconds: float = dataclasses.field(
        default=15.0,
        metadata={"help": "seconds between `: ping` comments on an idle stream (one timer "
                  "for all streams)"},
    )
    send_timeout_seconds: float = dataclasses.field(
        default=60.0,
        metadata={"help": "a stream whose client has read nothing this long is ended (checked "
                  "at each ping tick; the client resumes from its last id)"},
    )
    retry_ms: int = dataclasses.field(
        default=2000, metadata={"help": "the `retry:` sent to EventSource clients"}
    )
    follower_queue_lines: int = dataclasses.field(
        default=10_000,
        metadata={"help": "lines buffered per follower; a slower follower catches up from "
                  "the database"},
    )
    follower_queue_bytes: int = dataclasses.field(
        default=8 * 1024 * 1024,
        metadata={"help": "bytes of frames buffered per follower; past it the follower "
                  "leaves live delivery and catches up from the database"},
    )
    direct_writes: bool = dataclasses.field(
        default=True,
        metadata={"help": "the feed writes each live batch, framed once, straight to the "
                  "socket of every caught-up unfiltered follower; off: every batch goes "
                  "through each follower's stream task"},
    )
    metrics_token: str = dataclasses.field(
        default="",
        metadata={"help": "bearer token GET /metrics requires; empty: /metrics is open "
                  "(counts only: no log text, no workflow ids, no tokens)"},
    )
    end_grace_seconds: float = dataclasses.field(
        default=3.0,
        metadata={"help": "after a terminal status, how long streams wait for late lines "
                  "before `end`"},
    )
    pool_max_size: int = dataclasses.field(
        default=10, metadata={"help": "database connections per process (plus one LISTEN)"}
    )
    ingest_group_lines: int = dataclasses.field(
        default=10_000,
        metadata={"help": "group commit: ingest batches that arrive while one transaction "
                  "is in flight share the next, up to this many lines (a larger batch "
                  "goes alone); 0: each batch its own transaction"},
    )
    db_timeout_seconds: float = dataclasses.field(
        default=5.0,
        metadata={"help": "how long a request waits for a database connection before 503"},
    )
    kubernetes: KubernetesMode = dataclasses.field(
        default="auto",
        metadata={"help": "read REANA's pods from the Kubernetes API (statuses from pod "
                  "phases, live tap of followed pods' logs): auto (on when a service "
                  "account is mounted), on (outside a cluster: KUBECONFIG), off"},
    )
    kubernetes_namespace: str = dataclasses.field(
        default="default", metadata={"help": "REANA's runtime namespace, where its job and "
                                     "workflow-engine pods run"}
    )
    kubernetes_max_follows: int = dataclasses.field(
        default=100,
        metadata={"help": "cap on concurrent pods/log follows of the live tap per replica"},
    )
    kubernetes_tap_window_seconds: float = dataclasses.field(
        default=0.025,
        metadata={"help": "the live tap stores the chunks of all its follows together, at "
                  "most one transaction (and NOTIFY) per this many seconds: a tapped line "
                  "waits at most this long (none after a quiet window); 0: a commit per "
                  "loop pass"},
    )
    kubernetes_tap_quiet_seconds: float = dataclasses.field(
        default=0.1,
        metadata={"help": "a follow of the live tap that sent nothing for this long has its "
                  "next chunk committed at once, not after the window (a quiet job's line "
                  "beside busy ones); at most one such commit per this many seconds, so at "
                  "most 1/window + 1/this commits a second; 0: off"},
    )
    kubernetes_stale_seconds: float = dataclasses.field(
        default=300.0,
        metadata={"help": "kubernetes_api_up drops to 0 when the pod watch has heard "
                  "nothing from the apiserver (no listing, watch, event or bookmark) for "
                  "longer than this"},
    )
    kubernetes_follow_timeout_seconds: float = dataclasses.field(
        default=300.0,
        metadata={"help": "a pods/log follow of the live tap that sends nothing (not even "
                  "its headers) for this long is closed and opened again from its last "
                  "line"},
    )
    opensearch_user: str = dataclasses.field(
        default="reana-log-sse",
        metadata={"help": "the OpenSearch seam: the Basic auth user reana-workflow-"
                  "controller sends (its REANA_OPENSEARCH_USER)"},
    )
    opensearch_user_file: str | None = dataclasses.field(
        default=None, metadata={"help": "file holding the OpenSearch seam's user (wins "
                                "over the variable)"}
    )
    opensearch_password: str = dataclasses.field(
        default="",
        metadata={"help": "the OpenSearch seam: the Basic auth password (REANA's "
                  "REANA_OPENSEARCH_PASSWORD); empty: the seam is off"},
    )
    opensearch_password_file: str | None = dataclasses.field(
        default=None, metadata={"help": "file holding the OpenSearch seam's password (wins "
                                "over the variable)"}
    )
    opensearch_prefix: str = dataclasses.field(
        default="/opensearch",
        metadata={"help": "the path the OpenSearch seam answers under (REANA's "
                  "REANA_OPENSEARCH_URL_PREFIX)"},
    )
    opensearch_max_answer_bytes: int = dataclasses.field(
        default=256 * 1024 * 1024,
        metadata={"help": "the OpenSearch seam: cap on one search answer's JSON; past it "
                  "the hits end with one saying lines were left out and where to read all"},
    )

    # -- derived -----------------------------------------------------------------------

    def opensearch_credentials(self) -> tuple[str, str] | None:
        """The seam's (user, password), or None when it is off (no password)."""
        password = _secret(self.opensearch_password, self.opensearch_password_file)
        if not password:
            return None
        return _secret(self.opensearch_user, self.opensearch_user_file), password

    def ingest_token_list(self) -> list[str]:
        return _tokens(self.ingest_tokens, self.ingest_tokens_file)

    def status_token_list(self) -> list[str]:
        return _tokens(self.status_tokens, self.status_tokens_file)

    def read_token_list(self) -> list[str]:
        return _tokens(self.read_tokens, self.read_tokens_file)

    def host_is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is None and f.name == "database_url":
                raw = environ.get("DATABASE_URL")
            if raw is not None and raw != "":
                values[f.name] = _convert(f, raw)
        if "reana_server_host" not in values and environ.get("REANA_HOSTNAME"):
            values["reana_server_host"] = environ["REANA_HOSTNAME"]  # what REANA itself uses
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


SETTINGS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(Settings)


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "bool":
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if f.name == "auth" and raw not in ("none", "tokens", "reana"):
        raise ValueError(f"{env_name('auth')} must be none, tokens or reana, not {raw!r}")
    if f.name == "reana_token_in" and raw not in ("query", "header"):
        raise ValueError(f"{env_name('reana_token_in')} must be query or header, not {raw!r}")
    if f.name == "kubernetes" and raw not in ("auto", "on", "off"):
        raise ValueError(f"{env_name('kubernetes')} must be auto, on or off, not {raw!r}")
    return raw


def _secret(inline: str, path: str | None) -> str:
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return inline


def _tokens(inline: str, path: str | None) -> list[str]:
    tokens = [t.strip() for t in inline.split(",") if t.strip()]
    if path:
        text = Path(path).read_text(encoding="utf-8")
        tokens += [line.strip() for line in text.splitlines() if line.strip()]
    return tokens
