"""line_key: one identity for a line read by Vector and by the live tap."""

from __future__ import annotations

import datetime as dt
import uuid

from reana_log_sse.ingest.prepare import prepare
from reana_log_sse.store.identity import LineKeys, format_ns, parse_ns
from reana_log_sse.store.partitions import Window


def test_identity_parse_ns_keeps_all_nine_digits():
    assert parse_ns("2026-11-24T12:00:00.123456789Z") == 1795521600_123456789
    assert parse_ns("2026-11-24T12:00:00.1234567Z") == 1795521600_123456700
    assert parse_ns("2026-11-24T12:00:00Z") == 1795521600_000000000
    assert parse_ns("2026-11-24T13:00:00.5+01:00") == 1795521600_500000000
    assert parse_ns("2026-11-24T12:00:00") is None  # no zone: not comparable
    assert parse_ns("yesterday") is None


def test_identity_format_ns_trims_trailing_zeros_like_go():
    # Go's time.RFC3339Nano ("2006-01-02T15:04:05.999999999Z07:00") drops trailing zeros
    assert format_ns(1795521600_123456789) == "2026-11-24T12:00:00.123456789Z"
    assert format_ns(1795521600_120000000) == "2026-11-24T12:00:00.12Z"
    assert format_ns(1795521600_000000000) == "2026-11-24T12:00:00Z"
    for ns in (1795521600_000000001, 1795521600_999999999, 1795521600_100000000):
        assert parse_ns(format_ns(ns)) == ns


def test_identity_line_key_counts_identical_lines_in_a_batch():
    keys = LineKeys()
    a = keys.key("w", "p", "c", 1, "x")
    b = keys.key("w", "p", "c", 1, "x")
    other = LineKeys()
    assert a != b
    assert other.key("w", "p", "c", 1, "x") == a
    assert other.key("w", "p", "c", 1, "x") == b
    assert LineKeys().key("w", "p", "c", 2, "x") != a


def test_identity_prepare_gives_vector_and_kubelet_text_one_key_and_keeps_dedupe():
    wf = uuid.uuid4()
    day = dt.datetime.now(dt.UTC).date()
    window = Window.around(day, retention_days=3, ahead_days=2)
    stamp = dt.datetime.combine(day, dt.time(8, 0, 1, 120000), dt.UTC)
    base = {"workflow_id": str(wf), "kind": "job", "job_id": "reana-run-job-1",
            "pod": "reana-run-job-1-abcde", "container": "job", "message": "fit done"}
    vector = {**base, "stream": "stderr",
              "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.120000000Z")}
    kubelet = {**base, "stream": "stdout", "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.12Z")}
    (v,), _ = prepare([vector], max_line_bytes=1000, window=window)
    (k,), _ = prepare([kubelet], max_line_bytes=1000, window=window)
    assert v.line_key is not None and v.line_key == k.line_key
    assert v.dedupe != k.dedupe  # the digest still covers stream and timestamp text
    no_pod, _ = prepare([{**vector, "pod": None}], max_line_bytes=1000, window=window)
    assert no_pod[0].line_key is None


def test_identity_line_key_never_changes_between_versions():
    # stored keys must keep matching the copies that arrive after an upgrade
    keys = LineKeys()
    args = ("7b2e5c0a-0000-4000-8000-000000000001", "reana-run-job-1-abcde", "job",
            1795521600123456789, "fit done")
    assert str(keys.key(*args)) == "7a93bfdc-2353-2bf2-3b69-2e753f3d6d92"
    assert str(keys.key(*args)) == "ce5c13cc-7d7f-71e2-2f17-674cbfeba24d"


def test_identity_line_keys_of_a_follow_continue_across_chunks_like_one_batch():
    # the tap splits a pair of identical lines over two chunks: with the follow's counts
    # carried, the keys are those of Vector's one batch holding both
    day = dt.datetime.now(dt.UTC).date()
    window = Window.around(day, retention_days=3, ahead_days=2)
    stamp = dt.datetime.combine(day, dt.time(8, 0, 1), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    base = {"workflow_id": str(uuid.uuid4()), "kind": "job", "job_id": "reana-run-job-1",
            "pod": "reana-run-job-1-abcde", "container": "job", "stream": "stdout"}
    x = {**base, "timestamp": f"{stamp}.5Z", "message": "step done"}
    y = {**base, "timestamp": f"{stamp}.6Z", "message": "step done"}
    vector, _ = prepare([x, x, y], max_line_bytes=1000, window=window)
    assert len({line.line_key for line in vector}) == 3
    keys = LineKeys.follow()
    first, _ = prepare([x], max_line_bytes=1000, window=window, keys=keys)
    second, _ = prepare([x, y], max_line_bytes=1000, window=window, keys=keys)
    assert [line.line_key for line in first + second] == [line.line_key for line in vector]
    (a,), _ = prepare([x], max_line_bytes=1000, window=window)
    (b,), _ = prepare([x], max_line_bytes=1000, window=window)
    assert a.line_key == b.line_key  # per-batch counts: the split pair would be one line


def test_identity_line_keys_of_a_follow_remember_only_the_latest_timestamp():
    keys = LineKeys.follow()
    for ns in range(1, 10_001):
        keys.key("w", "p", "c", ns, "tick")
        keys.key("w", "p", "c", ns, "tock")
    assert len(keys) == 2  # bounded however long the follow
    batch = LineKeys()
    tick = [batch.key("w", "p", "c", 10_000, "tick") for _ in range(3)]
    trial = keys.copy()  # a chunk that may fail to store
    assert trial.key("w", "p", "c", 10_000, "tick") == tick[1]
    assert trial.key("w", "p", "c", 10_000, "tick") == tick[2]
    assert keys.key("w", "p", "c", 10_000, "tick") == tick[1]  # the copy's count is its own
    assert keys.key("w", "p", "c", 10_001, "tick") == LineKeys().key("w", "p", "c", 10_001,
                                                                     "tick")
