"""Replays, in Python, what Vector does with a REANA pod's log line (vector/vector.yaml).

Each step follows Vector 0.57's source (vectordotdev/vector), cited per function, so that
tests can feed realistic CRI lines through the real VRL programs (vrl-python) and build
the exact HTTP request Vector's http sink sends:

    CRI line -> parse_cri_line -> merge_partials -> kubernetes_logs_event
             -> Pipeline.run (filter reana_only, remap to_compact, dead letters)
             -> vector_request (JSON array, gzip, headers) -> HttpSink (retries)
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
VECTOR_YAML = ROOT / "vector" / "vector.yaml"

# --- configuration ------------------------------------------------------------------------

# src/config/vars.rs ENVIRONMENT_VARIABLE_INTERPOLATION_REGEX
ENV_VAR_PATTERN = re.compile(r"\$\$|\$([\w.]+)|\$\{([\w.]+)(?:(:?-|:?\?)([^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Vector's environment interpolation of a whole config file (src/config/vars.rs)."""
    errors: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name is None:  # "$$"
            return "$"
        flags, default = m.group(3) or "", m.group(4) or ""
        value = env.get(name)
        if flags == ":-":
            return value if value else default
        if flags == "-":
            return default if value is None else value
        if flags in (":?", "?"):
            if (flags == ":?" and not value) or value is None:
                errors.append(f"{name}: {default}")
                return ""
            return value
        if value is None:
            errors.append(f"missing environment variable {name}")
            return ""
        return value

    out = ENV_VAR_PATTERN.sub(sub, text)
    if errors:
        raise ValueError("; ".join(errors))
    return out


def load_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """vector/vector.yaml as Vector would see it with the given environment."""
    env = {"REANA_LOG_SSE_INGEST_TOKEN": "test-token"} if env is None else env
    return yaml.safe_load(interpolate(VECTOR_YAML.read_text(encoding="utf-8"), env))


# --- the kubernetes_logs source -----------------------------------------------------------


def parse_cri_line(line: bytes) -> dict[str, Any] | None:
    """src/sources/kubernetes_logs/parser/cri.rs parse_log_line: `<ts> <stream> <P|F> <msg>`."""
    parts = line.split(b" ", 3)
    if len(parts) < 4:
        return None
    timestamp, stream, tag, message = parts
    if stream not in (b"stdout", b"stderr") or tag not in (b"P", b"F"):
        return None
    if message.endswith(b"\n"):
        message = message[:-1]
    return {
        "timestamp": timestamp.decode(),
        "stream": stream.decode(),
        "partial": tag == b"P",
        "message": message,
    }


def merge_partials(parsed: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """src/sources/kubernetes_logs/partial_events_merger.rs: "P" pieces are appended to the
    first piece's event until the "F" piece ends the line (one file, so one bucket)."""
    out: list[dict[str, Any]] = []
    pending: dict[str, Any] | None = None
    for piece in parsed:
        if pending is None:
            pending = dict(piece)
        else:
            pending["message"] += piece["message"]
        if not piece["partial"]:
            pending.pop("partial")
            out.append(pending)
            pending = None
    return out


@dataclasses.dataclass(frozen=True)
class Pod:
    """What the pod metadata annotator knows of a pod (pod_metadata_annotator.rs)."""

    name: str
    namespace: str = "default"
    uid: str = "3f6c1d2e-8a9b-4c5d-9e0f-1a2b3c4d5e6f"
    labels: Mapping[str, str] | None = None
    node: str = "node-1"

    def log_file(self, container: str, n: int = 0) -> str:
        # Kubelet's layout: /var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log
        return f"/var/log/pods/{self.namespace}_{self.name}_{self.uid}/{container}/{n}.log"


def kubernetes_logs_events(
    cri_lines: Iterable[bytes],
    pod: Pod,
    container: str,
    *,
    collected_at: str = "2026-11-24T12:00:00.250000000Z",
    metadata: bool = True,
) -> list[dict[str, Any]]:
    """Events as the kubernetes_logs source emits them (legacy log namespace).

    Timestamps are RFC 3339 strings here; Pipeline turns them into VRL timestamps first,
    as Vector holds them. ``metadata=False`` is a pod Vector no longer has in its cache
    (annotation failed: only `file`, the parsed fields and `collected_at` remain).
    """
    file = pod.log_file(container)
    parsed = [p for p in (parse_cri_line(line) for line in cri_lines) if p is not None]
    events = []
    for line in merge_partials(parsed):
        event: dict[str, Any] = {
            "file": file,
            "message": line["message"].decode("utf-8", errors="replace"),
            "source_type": "kubernetes_logs",
            "stream": line["stream"],
            "timestamp": line["timestamp"],
            "collected_at": collected_at,
        }
        if metadata:
            event["kubernetes"] = {
                "pod_name": pod.name,
                "pod_namespace": pod.namespace,
                "pod_uid": pod.uid,
                "pod_ip": "10.244.1.17",
                "pod_ips": ["10.244.1.17"],
                "pod_labels": dict(pod.labels or {}),
                "pod_node_name": pod.node,
                "pod_owner": "Job/" + pod.name.rsplit("-", 1)[0],
                "container_name": container,
                "container_id": "containerd://" + "ab" * 32,
                "container_image": "docker.io/reanahub/reana-env-root6:6.18.04",
                "container_image_id": "docker.io/reanahub/reana-env-root6@sha256:" + "cd" * 32,
                "node_labels": {"kubernetes.io/hostname": pod.node},
            }
        events.append(event)
    return events


def cri_line(message: str, *, stream: str = "stdout",
             timestamp: str = "2026-11-24T12:00:00.123456789Z") -> bytes:
    """One line as containerd writes it."""
    return f"{timestamp} {stream} F {message}\n".encode()


def cri_split(message: str, *, stream: str = "stdout",
              timestamp: str = "2026-11-24T12:00:00.123456789Z",
              piece: int = 16 * 1024) -> list[bytes]:
    """A long line as containerd writes it: 16 KiB "P" pieces, then the "F" rest."""
    data = message.encode()
    chunks = [data[i:i + piece] for i in range(0, len(data), piece)] or [b""]
    tags = ["P"] * (len(chunks) - 1) + ["F"]
    prefix = f"{timestamp} {stream} "
    return [prefix.encode() + tag.encode() + b" " + c + b"\n" for tag, c in zip(tags, chunks,
                                                                            strict=True)]


# --- the transforms -----------------------------------------------------------------------

# Vector holds .timestamp (CRI parser) and .collected_at (ingestion_timestamp_field) as
# timestamps; vrl-python cannot take Python datetimes, so the test events carry strings
# that this prelude parses first.
_PRELUDE = (
    'if is_string(.timestamp) { .timestamp = parse_timestamp!(.timestamp, "%+") }\n'
    'if is_string(.collected_at) { .collected_at = parse_timestamp!(.collected_at, "%+") }\n'
)
_USER_ERROR = re.compile(r'function call error for "\w+" at \(\d+:\d+\): (.*)')


@dataclasses.dataclass
class Outcome:
    """Where an event went: "sent" (to the http sink), "dropped" (filtered out, on purpose)
    or "dead_letter" (the remap failed: to_compact.dropped -> dead_letter)."""

    route: str
    event: dict[str, Any] | None = None


class Pipeline:
    """reana_only -> to_compact -> (http sink | dead_letter_shape) with the real VRL."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        from vrl_python import VRLRuntime

        config = load_config() if config is None else config
        transforms = config["transforms"]
        self.filter_source = transforms["reana_only"]["condition"]["source"]
        self.remap_source = _PRELUDE + transforms["to_compact"]["source"]
        self.dead_letter_source = _PRELUDE + transforms["dead_letter_shape"]["source"]
        self.runtime = VRLRuntime(timezone="UTC")
        for source in (self.filter_source, self.remap_source, self.dead_letter_source):
            self.runtime.compile(source)

    def run(self, event: dict[str, Any]) -> Outcome:
        from vrl_python import VRLRuntimeError

        keep = self.runtime.execute(self.filter_source, event).runtime_result
        if keep is not True:
            return Outcome("dropped")
        try:
            out = self.runtime.execute(self.remap_source, event).processed_event
        except (RuntimeError, VRLRuntimeError) as exc:
            # src/transforms/remap.rs annotate_dropped: the original event plus
            # .metadata.dropped (message: the user error message if there is one).
            text = str(exc)
            m = _USER_ERROR.search(text)
            dropped = dict(event)
            dropped["metadata"] = {"dropped": {
                "reason": "error",
                "message": m.group(1).strip() if m else text.strip(),
                "component_id": "to_compact",
                "component_type": "remap",
                "component_kind": "transform",
            }}
            shaped = self.runtime.execute(self.dead_letter_source, dropped).processed_event
            return Outcome("dead_letter", shaped)
        return Outcome("sent", out)

    def run_all(self, events: Iterable[dict[str, Any]]) -> list[Outcome]:
        return [self.run(e) for e in events]


# --- the http sink ------------------------------------------------------------------------

VECTOR_USER_AGENT = "Vector/0.57.0"


def encode_batch(events: list[dict[str, Any]]) -> bytes:
    """The json codec with the http sink's default framing (src/sinks/http/encoder.rs):
    `[` + events joined by `,` + `]`; Vector's objects are BTreeMaps, so keys are sorted."""
    return b"[" + b",".join(
        json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        for e in events
    ) + b"]"


def vector_request(events: list[dict[str, Any]], token: str) -> tuple[dict[str, str], bytes]:
    """Headers and body of one batch, as the http sink in vector/vector.yaml sends it:
    Content-Type from src/sinks/http/config.rs, Content-Encoding from `compression: gzip`,
    bearer auth, and src/http.rs' default User-Agent and Accept-Encoding."""
    headers = {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "Authorization": f"Bearer {token}",
        "User-Agent": VECTOR_USER_AGENT,
        "Accept-Encoding": "identity",
    }
    return headers, gzip.compress(encode_batch(events))




def fibonacci_backoff(initial: float, maximum: float) -> Iterator[float]:
    """src/sinks/util/retries.rs FibonacciRetryPolicy without jitter: initial, initial,
    2x, 3x, 5x ... capped at retry_max_duration_secs."""
    a, b = initial, initial
    while True:
        yield min(a, maximum)
        a, b = b, a + b


def sink_retry_strategy(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """vector.yaml's http sink `retry_strategy` (src/sinks/http/config.rs: a top-level
    option, `#[serde(default)]`, so absent means `type: default`)."""
    config = load_config() if config is None else config
    return config["sinks"]["reana_log_sse"].get("retry_strategy", {"type": "default"})


def should_retry(status: int, strategy: Mapping[str, Any] | None = None) -> bool:
    """src/sinks/util/http.rs RetryStrategy::retry_action for a non-2xx status:
    none -> never; default -> 408, 429 and 5xx except 501; all -> always;
    custom -> exactly `status_codes`."""
    kind = (strategy or {"type": "default"})["type"]
    if kind == "none":
        return False
    if kind == "all":
        return True
    if kind == "custom":
        return status in (strategy or {})["status_codes"]
    assert kind == "default", kind
    return status in (408, 429) or (500 <= status <= 599 and status != 501)


class HttpSink:
    """The http sink's request loop for one batch at a time (request.concurrency: 1): the
    same request (same body, same headers, so the same token) is re-sent until a 2xx, or
    dropped on a status vector.yaml's retry_strategy does not retry. Connection errors are
    retried (src/http.rs HttpError::is_retriable: CallRequest). Backoffs are vector.yaml's
    (1 s, capped at 10 s) unless a test scales them down."""

    def __init__(self, uri: str, token: str, *, initial_backoff: float = 1.0,
                 max_backoff: float = 10.0, on_response: Any = None,
                 retry_strategy: Mapping[str, Any] | None = None) -> None:
        self.uri = uri
        self.token = token
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.on_response = on_response
        self.retry_strategy = (sink_retry_strategy() if retry_strategy is None
                               else retry_strategy)
        self.statuses: list[int] = []
        self.connection_errors = 0

    def send(self, events: list[dict[str, Any]]) -> httpx.Response:
        headers, body = vector_request(events, self.token)
        backoff = fibonacci_backoff(self.initial_backoff, self.max_backoff)
        with httpx.Client(timeout=30) as client:
            while True:
                try:
                    response = client.post(self.uri, content=body, headers=headers)
                except httpx.TransportError:
                    self.connection_errors += 1
                    time.sleep(next(backoff))
                    continue
                self.statuses.append(response.status_code)
                if self.on_response is not None:
                    self.on_response(response)
                if response.is_success or not should_retry(response.status_code,
                                                           self.retry_strategy):
                    return response
                time.sleep(next(backoff))
