"""vector/vector.yaml: its settings, and its VRL run by the real VRL runtime (vrl-python) on
kubernetes_logs events built from CRI lines (tests/vectorsim.py), checked against the
ingest's own model (reana_log_sse.models.LogEvent)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import uuid

import pytest
import yaml

from reana_log_sse.ingest.models import LogEvent
from tests.vectorsim import (
    ENV_VAR_PATTERN,
    VECTOR_YAML,
    Pipeline,
    Pod,
    cri_line,
    cri_split,
    interpolate,
    kubernetes_logs_events,
    load_config,
    should_retry,
    sink_retry_strategy,
    vector_request,
)

WORKFLOW = "7b2e5c0a-4d1f-4e8a-9c3b-2f1e0d9c8b7a"
JOB = "reana-run-job-5f0a3c2e-9b1d-4c7e-8a6f-0d2b4e6f8a1c"
JOB_POD = Pod(
    name=f"{JOB}-x7k2p",
    namespace="default",
    labels={
        # reana_job_controller/kubernetes_job_manager.py (pod template labels)
        "reana-run-job-workflow-uuid": WORKFLOW,
        "user-uuid": "00000000-0000-0000-0000-000000000000",
        # added by the Kubernetes Job controller
        "batch.kubernetes.io/job-name": JOB,
        "job-name": JOB,
        "batch.kubernetes.io/controller-uid": "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
        "controller-uid": "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
    },
)
BATCH_POD = Pod(
    name=f"reana-run-batch-{WORKFLOW}-q9w8e",
    labels={
        # reana_workflow_controller/workflow_run_manager.py (_create_job_spec)
        "reana_workflow_mode": "batch",
        "reana-run-batch-workflow-uuid": WORKFLOW,
        "user-uuid": "00000000-0000-0000-0000-000000000000",
        "job-name": f"reana-run-batch-{WORKFLOW}",
    },
)
# A Dask cluster's pods: the DaskCluster's labels (reana_workflow_controller/dask.py
# DaskResourceManager._prepare_cluster), copied onto its pods by the Dask operator with its
# own (dask/dask-kubernetes dask_kubernetes/operator/controller/controller.py
# build_scheduler_deployment_spec, build_worker_deployment_spec); the cluster is named
# reana-run-dask-<workflow uuid cut short> (reana_commons/utils.py get_dask_component_name).
DASK_CLUSTER = "reana-run-dask-7b2e5c0a"  # get_trimmed_workflow_id(WORKFLOW, 4)
DASK_LABELS = {"user-uuid": "00000000-0000-0000-0000-000000000000",
               "reana-run-dask-workflow-uuid": WORKFLOW,
               "dask.org/cluster-name": DASK_CLUSTER,
               "sidecar.istio.io/inject": "false"}
DASK_SCHEDULER_POD = Pod(
    name=f"{DASK_CLUSTER}-scheduler-6f7d9c8b5-k2x9q",
    labels={**DASK_LABELS, "dask.org/component": "scheduler", "pod-template-hash": "6f7d9c8b5"})
DASK_WORKER_POD = Pod(
    name=f"{DASK_CLUSTER}-default-worker-3e1f2a4b5c-7c9d8f6b4-p5r7t",
    labels={**DASK_LABELS, "dask.org/component": "worker",
            "dask.org/workergroup-name": f"{DASK_CLUSTER}-default",
            "pod-template-hash": "7c9d8f6b4"})
TS = "2026-11-24T12:00:00.123456789Z"
COLLECTED = "2026-11-24T12:00:00.250000000Z"


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline()


def _one(pipeline: Pipeline, pod: Pod, container: str, lines: list[bytes], **kw):
    events = kubernetes_logs_events(lines, pod, container, collected_at=COLLECTED, **kw)
    assert len(events) == 1
    return pipeline.run(events[0])


def _job_event(message: str, stream: str, container: str = "job") -> dict:
    return {
        "workflow_id": WORKFLOW,
        "kind": "job",
        "job_id": JOB,
        "step": None,
        "pod": JOB_POD.name,
        "container": container,
        "stream": stream,
        "timestamp": TS,
        "message": message,
        "collected_at": COLLECTED,
    }


# --- the configuration --------------------------------------------------------------------


def test_config_interpolates_like_vector_with_defaults():
    config = load_config({"REANA_LOG_SSE_INGEST_TOKEN": "s3cret"})
    sink = config["sinks"]["reana_log_sse"]
    assert sink["uri"] == "http://reana-log-sse:8000/ingest/vector"
    assert sink["auth"] == {"strategy": "bearer", "token": "s3cret"}
    config = load_config({"REANA_LOG_SSE_INGEST_TOKEN": "t",
                          "REANA_LOG_SSE_INGEST_URL": "https://logs.example.org/ingest/vector"})
    assert config["sinks"]["reana_log_sse"]["uri"] == "https://logs.example.org/ingest/vector"


def test_config_refuses_to_start_without_ingest_token():
    with pytest.raises(ValueError, match="REANA_LOG_SSE_INGEST_TOKEN"):
        load_config({})


def test_config_interpolates_only_the_three_intended_variables():
    # Vector interpolates env vars in the whole text, comments and VRL included
    # (src/config/vars.rs): a stray dollar sign anywhere would stop Vector from starting.
    text = VECTOR_YAML.read_text(encoding="utf-8")
    assert [m.group(2) for m in ENV_VAR_PATTERN.finditer(text)] == [
        "REANA_LOG_SSE_INGEST_URL", "REANA_LOG_SSE_INGEST_TOKEN", "REANA_LOG_SSE_HEALTHCHECK_URL"]
    assert text.count("$") == 3


def test_config_vrl_sources_have_nothing_vector_would_interpolate():
    raw = yaml.safe_load(VECTOR_YAML.read_text(encoding="utf-8"))
    sources = [raw["transforms"]["reana_only"]["condition"]["source"],
               raw["transforms"]["to_compact"]["source"],
               raw["transforms"]["dead_letter_shape"]["source"]]
    for source in sources:
        assert "$" not in source
        assert interpolate(source, {}) == source


def test_config_source_reads_reana_pods_promptly_and_resumably():
    src = load_config()["sources"]["reana_pods"]
    assert src["type"] == "kubernetes_logs"
    # One label selector for both kinds of REANA pods (ANDed terms, no OR across keys).
    assert src["extra_label_selector"] == "user-uuid,reana_workflow_mode!=session"
    assert src["glob_minimum_cooldown_ms"] <= 1000
    assert src["max_line_bytes"] >= 64 * 1024
    assert src["auto_partial_merge"] is True
    assert "max_merged_line_bytes" not in src  # its only action in 0.57 is to drop
    assert src["oldest_first"] is False
    assert src["ingestion_timestamp_field"] == "collected_at"
    assert src["data_dir"] == load_config()["data_dir"] == "/var/lib/vector"


def test_config_http_sink_batches_fast_in_order_and_durably():
    sink = load_config()["sinks"]["reana_log_sse"]
    assert sink["type"] == "http"
    assert sink["inputs"] == ["to_compact"]
    assert sink["method"] == "post"
    assert sink["encoding"] == {"codec": "json"}  # default framing: a JSON array
    assert "framing" not in sink
    assert sink["compression"] == "gzip"
    assert sink["batch"]["timeout_secs"] <= 0.2
    assert 0 < sink["batch"]["max_bytes"] <= 10 * 1024 * 1024  # the ingest's body cap
    assert sink["request"]["concurrency"] == 1
    assert sink["acknowledgements"] == {"enabled": True}
    assert sink["buffer"]["type"] == "disk"
    assert sink["buffer"]["max_size"] >= 268435488  # Vector's minimum for a disk buffer
    assert sink["buffer"]["when_full"] == "block"
    assert sink["healthcheck"]["uri"] == "http://reana-log-sse:8000/healthz"


def test_config_http_sink_retries_token_errors_and_what_default_retries():
    strategy = load_config()["sinks"]["reana_log_sse"]["retry_strategy"]
    assert strategy == sink_retry_strategy()
    assert strategy["type"] == "custom"  # src/sinks/util/http.rs RetryStrategy::Custom
    # a wrong or rotated token, an auth proxy, a wrong URL: fixable, never dropped
    for status in (401, 403, 404):
        assert should_retry(status, strategy), status
        assert not should_retry(status, {"type": "default"}), status  # why custom
    # what the default retries and this path can answer (the service, kube-proxy, an
    # ingress or proxy in between) stays retried
    for status in (408, 429, 500, 502, 503, 504):
        assert should_retry(status, {"type": "default"}), status
        assert should_retry(status, strategy), status
    # the same body can never succeed: dropped rather than holding back every later batch
    for status in (400, 413, 415, 422, 501):
        assert not should_retry(status, strategy), status
    assert sorted(set(strategy["status_codes"])) == strategy["status_codes"]


def test_config_topology_dead_letters_and_metrics_are_wired():
    config = load_config()
    remap = config["transforms"]["to_compact"]
    assert remap["inputs"] == ["reana_only"]
    assert (remap["drop_on_error"], remap["drop_on_abort"], remap["reroute_dropped"]) == (
        True, True, True)
    assert config["transforms"]["reana_only"]["inputs"] == ["reana_pods"]
    assert config["transforms"]["dead_letter_shape"]["inputs"] == ["to_compact.dropped"]
    assert config["sinks"]["dead_letter"]["inputs"] == ["dead_letter_shape"]
    assert config["sinks"]["dead_letter"]["type"] == "console"
    assert config["sources"]["vector_metrics"]["type"] == "internal_metrics"
    exporter = config["sinks"]["vector_prometheus"]
    assert (exporter["type"], exporter["inputs"]) == ("prometheus_exporter", ["vector_metrics"])
    # every input names a component (or a remap's .dropped output)
    names = set(config["sources"]) | set(config["transforms"])
    for section in ("transforms", "sinks"):
        for component in config[section].values():
            for name in component["inputs"]:
                assert name.removesuffix(".dropped") in names, name


# --- the remap on realistic events --------------------------------------------------------


def test_remap_job_pod_stdout_gives_exact_compact_event(pipeline):
    out = _one(pipeline, JOB_POD, "job", [cri_line("Fitting data with 4 parameters")])
    assert out.route == "sent"
    assert out.event == _job_event("Fitting data with 4 parameters", "stdout")
    event = LogEvent.model_validate(out.event)
    assert event.workflow_id == uuid.UUID(WORKFLOW)
    assert event.timestamp == dt.datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert event.collected_at == dt.datetime(2026, 11, 24, 12, 0, 0, 250000, tzinfo=dt.UTC)


def test_remap_job_pod_stderr_keeps_stream_and_empty_line(pipeline):
    events = kubernetes_logs_events(
        [cri_line("Traceback (most recent call last):", stream="stderr"),
         cri_line("", stream="stderr")], JOB_POD, "job", collected_at=COLLECTED)
    outs = pipeline.run_all(events)
    assert [o.event for o in outs] == [
        _job_event("Traceback (most recent call last):", "stderr"),
        _job_event("", "stderr"),
    ]
    assert all(LogEvent.model_validate(o.event).stream == "stderr" for o in outs)


def test_remap_job_pod_init_container_is_kept(pipeline):
    out = _one(pipeline, JOB_POD, "voms-proxy", [cri_line("Proxy initialised")])
    assert out.event == _job_event("Proxy initialised", "stdout", container="voms-proxy")


def test_remap_job_pod_without_job_name_labels_takes_job_from_pod_name(pipeline):
    labels = {"reana-run-job-workflow-uuid": WORKFLOW, "user-uuid": "u"}
    pod = Pod(name=JOB_POD.name, labels=labels)
    out = _one(pipeline, pod, "job", [cri_line("hello")])
    assert out.event == _job_event("hello", "stdout")


def test_remap_workflow_engine_pod_gives_workflow_kind(pipeline):
    line = cri_line("Publishing step:0, cmd: python fit.py", stream="stderr",
                    timestamp="2026-11-24T12:00:01Z")
    out = _one(pipeline, BATCH_POD, "workflow-engine", [line])
    assert out.route == "sent"
    assert out.event == {
        "workflow_id": WORKFLOW,
        "kind": "workflow",
        "job_id": None,
        "step": None,
        "pod": BATCH_POD.name,
        "container": "workflow-engine",
        "stream": "stderr",
        "timestamp": "2026-11-24T12:00:01.000000000Z",
        "message": "Publishing step:0, cmd: python fit.py",
        "collected_at": COLLECTED,
    }
    assert LogEvent.model_validate(out.event).kind == "workflow"


def _jc(level: str, message: str, thread: str = "Thread-2 (watch_jobs)") -> str:
    """A reana-job-controller log line: reana-commons' REANA_LOG_FORMAT
    `%(asctime)s | %(name)s | %(threadName)s | %(levelname)s | %(message)s`."""
    return f"2026-11-24 12:00:05,321 | root | {thread} | {level} | {message}"


def test_remap_job_controller_info_and_debug_lines_are_dropped(pipeline):
    for line in [_jc("INFO", "Starting a new stream request to watch Jobs"),
                 _jc("DEBUG", "Job reana-run-job-1 status: Running"),
                 _jc("INFO", "message mentioning | ERROR | inside it"),
                 "Starting a new stream",  # no REANA log prefix at all
                 " * Running on http://0.0.0.0:5000"]:
        assert _one(pipeline, BATCH_POD, "job-controller", [cri_line(line)]).route == \
            "dropped", line


def test_remap_job_controller_warning_error_critical_lines_are_kept_as_workflow(pipeline):
    lines = [_jc("WARNING", "Container job failed, error: ImagePullBackOff"),
             _jc("ERROR", "Error from Kubernetes API while getting job logs: (404)"),
             _jc("CRITICAL", "Cannot connect to the database")]
    events = kubernetes_logs_events([cri_line(x, stream="stderr") for x in lines],
                                    BATCH_POD, "job-controller", collected_at=COLLECTED)
    outs = pipeline.run_all(events)
    assert [o.route for o in outs] == ["sent"] * 3
    for out, line in zip(outs, lines, strict=True):
        assert out.event == {
            "workflow_id": WORKFLOW, "kind": "workflow", "job_id": None, "step": None,
            "pod": BATCH_POD.name, "container": "job-controller", "stream": "stderr",
            "timestamp": TS, "message": line, "collected_at": COLLECTED}
        assert LogEvent.model_validate(out.event).kind == "workflow"


def test_remap_job_controller_traceback_keeps_every_prefixed_line(pipeline):
    # logging.error(traceback.format_exc()): reana_job_controller/utils.py
    # MultilineFormatter prints each line of the message with the full prefix.
    tb = ["Traceback (most recent call last):",
          '  File "/code/reana_job_controller/job_monitor.py", line 270, in watch_jobs',
          "kubernetes.client.exceptions.ApiException: (500)"]
    lines = [cri_line(_jc("ERROR", x, thread="MainThread"), stream="stderr") for x in tb]
    lines.append(cri_line(_jc("INFO", "Job finished"), stream="stderr"))
    outs = pipeline.run_all(kubernetes_logs_events(lines, BATCH_POD, "job-controller"))
    assert [o.route for o in outs] == ["sent", "sent", "sent", "dropped"]
    assert [o.event["message"].split(" | ")[-1] for o in outs[:3]] == tb


def test_remap_dask_scheduler_and_worker_pods_give_service_kind(pipeline):
    cases = [(DASK_SCHEDULER_POD, "scheduler", "stderr",
              "distributed.scheduler - INFO - Register worker tcp://10.1.2.3:40123"),
             (DASK_WORKER_POD, "worker", "stderr",
              "distributed.worker - INFO - Starting Worker plugin shuffle"),
             (DASK_WORKER_POD, "krb5-renew", "stdout", "Renewing Kerberos ticket")]
    # REANA's service_logs key (reana-commons get_dask_component_name(id,
    # "database_model_service")) and the operator's dask.org/component label
    service = "dask-service-" + WORKFLOW.split("-")[0]
    for pod, container, stream, message in cases:
        component = pod.labels["dask.org/component"]
        out = _one(pipeline, pod, container, [cri_line(message, stream=stream)])
        assert out.route == "sent", container
        assert out.event == {
            "workflow_id": WORKFLOW, "kind": "service", "job_id": service, "step": component,
            "pod": pod.name, "container": container, "stream": stream, "timestamp": TS,
            "message": message, "collected_at": COLLECTED}
        event = LogEvent.model_validate(out.event)
        assert (event.kind, event.workflow_id) == ("service", uuid.UUID(WORKFLOW))


def test_remap_dask_pod_missing_labels_goes_to_dead_letter(pipeline):
    # Its name holds only a shortened workflow uuid: kept visible, never guessed.
    out = _one(pipeline, DASK_WORKER_POD, "worker", [cri_line("late")], metadata=False)
    assert out.route == "dead_letter"
    assert out.event["file"] == DASK_WORKER_POD.log_file("worker")


def test_remap_non_reana_pod_is_dropped(pipeline):
    for pod, container in [
        (Pod(name="jupyter-7b2e5c0a-abcde",
             labels={"user-uuid": "u", "reana_workflow_mode": "session",
                     "reana-run-session-workflow-uuid": WORKFLOW}), "notebook"),
        (Pod(name="nginx-6d4cf56db6-8xk2p", namespace="web", labels={"app": "nginx"}),
         "nginx"),
        (Pod(name="unlabelled-pod", labels={}), "main"),
    ]:
        assert _one(pipeline, pod, container, [cri_line("GET / 200")]).route == "dropped"


def test_remap_job_pod_missing_labels_goes_to_dead_letter(pipeline):
    # Vector no longer has the pod's metadata: the file path names the pod, and a job
    # pod's name does not hold its workflow.
    out = _one(pipeline, JOB_POD, "job", [cri_line("late line")], metadata=False)
    assert out.route == "dead_letter"
    assert out.event == {
        "dead_letter": {
            "reason": "error",
            "message": "no REANA workflow label on pod and no workflow uuid in its name",
            "component_id": "to_compact",
            "component_type": "remap",
            "component_kind": "transform",
        },
        "pod": None,
        "namespace": None,
        "container": None,
        "pod_labels": None,
        "file": JOB_POD.log_file("job"),
        "stream": "stdout",
        "timestamp": "2026-11-24 12:00:00.123456789 UTC",  # a VRL timestamp, as shown
        "message_chars": 9,
        "message": "late line",
    }


def test_remap_workflow_engine_pod_missing_labels_is_mapped_from_its_name(pipeline):
    out = _one(pipeline, BATCH_POD, "workflow-engine", [cri_line("engine line")],
               metadata=False)
    assert out.route == "sent"
    assert (out.event["workflow_id"], out.event["kind"], out.event["pod"],
            out.event["container"]) == (WORKFLOW, "workflow", BATCH_POD.name, "workflow-engine")
    assert _one(pipeline, BATCH_POD, "job-controller", [cri_line("x")],
                metadata=False).route == "dropped"
    out = _one(pipeline, BATCH_POD, "job-controller",
               [cri_line(_jc("ERROR", "Unexpected error: boom"))], metadata=False)
    assert out.route == "sent"
    assert (out.event["workflow_id"], out.event["kind"], out.event["container"]) == (
        WORKFLOW, "workflow", "job-controller")


def test_remap_bad_workflow_label_goes_to_dead_letter(pipeline):
    pod = Pod(name=JOB_POD.name, labels={"reana-run-job-workflow-uuid": "not-a-uuid"})
    out = _one(pipeline, pod, "job", [cri_line("x")])
    assert out.route == "dead_letter"
    assert out.event["dead_letter"]["message"] == "workflow uuid is not a UUID"
    assert out.event["pod_labels"] == {"reana-run-job-workflow-uuid": "not-a-uuid"}


def test_remap_100_kib_line_passes_whole(pipeline):
    message = ("0123456789abcdef" * 64) * 100  # 102,400 bytes
    lines = cri_split(message)
    assert len(lines) == 7  # containerd's 16 KiB pieces, merged by auto_partial_merge
    out = _one(pipeline, JOB_POD, "job", lines)
    assert out.route == "sent"
    assert out.event["message"] == message
    assert len(out.event["message"].encode()) == 102400
    assert LogEvent.model_validate(out.event).message == message  # the service truncates


def test_remap_dead_letter_shows_only_the_start_of_a_long_line(pipeline):
    message = "é" * 70000
    out = _one(pipeline, JOB_POD, "job", cri_split(message), metadata=False)
    assert out.route == "dead_letter"
    assert out.event["message_chars"] == 70000
    assert out.event["message"] == "é" * 1024


def test_remap_unicode_is_unchanged(pipeline):
    message = "Ünïcödé ✓ — 日本語のログ 🚀 e\u0301 \t tab \\ \"quoted\""
    out = _one(pipeline, JOB_POD, "job", [cri_line(message)])
    assert out.event == _job_event(message, "stdout")
    assert LogEvent.model_validate(out.event).message == message
    # and it survives the http sink's encoding byte for byte
    _, body = vector_request([out.event], "t")
    assert json.loads(gzip.decompress(body))[0]["message"] == message


def test_remap_line_without_timestamp_takes_collected_at(pipeline):
    event = kubernetes_logs_events([cri_line("x")], JOB_POD, "job", collected_at=COLLECTED)[0]
    del event["timestamp"]  # the CRI parser could not parse it (ParserConversionError)
    out = pipeline.run(event)
    assert out.event["timestamp"] == COLLECTED
    assert out.event["collected_at"] == COLLECTED


def test_remap_emits_only_the_contract_fields(pipeline):
    out = _one(pipeline, JOB_POD, "job", [cri_line("x")])
    assert set(out.event) == set(LogEvent.model_fields)


def test_remap_batch_encodes_as_vector_json_array():
    headers, body = vector_request([_job_event("a", "stdout"), _job_event("b", "stderr")],
                                   "tok")
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Authorization"] == "Bearer tok"
    raw = gzip.decompress(body)
    assert raw.startswith(b'[{"collected_at":') and raw.endswith(b"}]")
    assert [LogEvent.model_validate(e).message for e in json.loads(raw)] == ["a", "b"]
