"""The msgspec fast path (fastpath.py) stores exactly what the model path stores: the
same `ts` and the same dedupe digest, so a batch ingested before the fast path existed is
a duplicate after it; and every batch it does not accept goes to the model path."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import uuid
from typing import Any

import httpx
import orjson
import pytest

from reana_log_sse.ingest.fastpath import prepare_fast
from reana_log_sse.ingest.prepare import Preparer, prepare
from reana_log_sse.store.partitions import Window
from tests.helpers import VECTOR_HEADERS

WF = "3f2c5a1e-7b4d-4c2a-9e1f-0123456789ab"
WINDOW = Window.around(dt.date(2026, 12, 1), retention_days=7, ahead_days=2)
LIMIT = 65536


def ev(ts: str, msg: str = "m", **kw: Any) -> dict[str, Any]:
    base = {"workflow_id": WF, "kind": "job", "job_id": "reana-run-job-1", "step": "fit",
            "pod": "reana-run-job-1-x", "container": "job", "stream": "stdout",
            "timestamp": ts, "message": msg, "collected_at": "2026-12-01T12:00:00.5Z"}
    return {**base, **kw}


TRICKY = [
    ev("2026-12-01T10:00:00.123456789Z"),
    ev("2026-12-01T23:59:59.999999999Z"),  # msgspec would make it 2026-12-02T00:00:00
    ev("2026-12-01T23:59:59.999999999+00:00"),
    ev("2026-12-01T23:59:59.9999995Z"),
    ev("2026-12-01T10:00:00.1Z"),
    ev("2026-12-01T10:00:00Z"),
    ev("2026-12-01T10:00:00.000000001Z"),
    ev("2026-12-01T12:30:00.123456789+02:00"),
    ev("2026-12-01T01:30:00.5-05:30"),
    ev("2026-12-01T10:00:00.123456789"),  # naive: taken as UTC
    ev("2026-12-01T10:00:00.123456789Z", collected_at=None),
    ev("2026-12-01T10:00:00.123456789Z", collected_at="2026-12-01T10:00:00.999999999"),
    ev("2026-12-01T10:00:00.123456789Z", workflow_id=WF.upper()),
    ev("2026-12-01T10:00:00.123456789Z", msg="nul \x00 here"),
    ev("2026-12-01T10:00:00.123456789Z", msg="é" * 40_000),  # truncated
    ev("2026-12-01T10:00:00.123456789Z", msg="same"),
    ev("2026-12-01T10:00:00.123456789Z", msg="same"),
    ev("2026-12-01T10:00:00.123456789Z", kind="workflow", job_id=None, pod=None, step=None,
       container=None, stream="stderr", extra_field=1),
    ev("2026-12-01T10:00:00.123456789Z", pod="p" * 253),
]
# (dedupe, ts) of TRICKY as stored by the model path before the fast path existed
# (computed with the service at commit ad9d172): these must never change.
BEFORE = [
    ("b938521c17c123afbcab56d1a6823724", "2026-12-01T10:00:00.123456+00:00"),
    ("1ee54c987d249fc8140f18062d6e0fb8", "2026-12-01T23:59:59.999999+00:00"),
    ("a00d0632d2a568166d2282813a89dae1", "2026-12-01T23:59:59.999999+00:00"),
    ("86d79ed820ab11c79b11a27138ade7d4", "2026-12-01T23:59:59.999999+00:00"),
    ("d0555b790feadb0b729455ed3899339f", "2026-12-01T10:00:00.100000+00:00"),
    ("57790c8688ae24c0a6c10c37f390053e", "2026-12-01T10:00:00+00:00"),
    ("1c85c81911a670855194bcf21ef0b42a", "2026-12-01T10:00:00+00:00"),
    ("65941a52f69cd2ac3e8bc4df1d30c5c5", "2026-12-01T12:30:00.123456+02:00"),
    ("6fa295384f13cb5cf513736a2933616f", "2026-12-01T01:30:00.500000-05:30"),
    ("cb784c9c941a4faf8a6e012453d26b56", "2026-12-01T10:00:00.123456+00:00"),
    ("afc5aecd35385a6f385cf37457dd736f", "2026-12-01T10:00:00.123456+00:00"),
    ("61f4a84d23b54856b5d249c721ab6443", "2026-12-01T10:00:00.123456+00:00"),
    ("bad7185e1068ce144381d6f45f8e2f35", "2026-12-01T10:00:00.123456+00:00"),
    ("97bec6e4d4e349c9eb25b0f0ef05150b", "2026-12-01T10:00:00.123456+00:00"),
    ("85be3c63ed85aac0679840aa3cc6b305", "2026-12-01T10:00:00.123456+00:00"),
    ("c9cf90ad2c0b34d67e7788886dbd5cb2", "2026-12-01T10:00:00.123456+00:00"),
    ("a88f21c04991f3f140e620b5f15ecec1", "2026-12-01T10:00:00.123456+00:00"),
    ("cba73d4a5d10e7809dd7bac67372fca9", "2026-12-01T10:00:00.123456+00:00"),
    ("f35d64b51720bdadffb9c5170620ee6f", "2026-12-01T10:00:00.123456+00:00"),
]


def _fast(events: list[Any]) -> list[Any] | None:
    return prepare_fast(orjson.dumps(events), Preparer(max_line_bytes=LIMIT, window=WINDOW))


def _model(events: list[Any]) -> tuple[list[Any], list[Any]]:
    return prepare(orjson.loads(orjson.dumps(events)), max_line_bytes=LIMIT, window=WINDOW)


def _stored(lines: list[Any]) -> list[tuple[Any, ...]]:
    """Every column as stored, timestamps with their offsets (line_key: the fast path
    reads the nanoseconds itself, the model path through identity.parse_ns)."""
    return [(*line[:2], line.ts.isoformat(), *line[3:12],
             None if line.collected_at is None else line.collected_at.isoformat(),
             line.line_key)
            for line in lines]


def test_fastpath_stores_the_same_ts_and_digest_as_before():
    fast = _fast(TRICKY)
    assert fast is not None
    assert [(line.dedupe.hex, line.ts.isoformat()) for line in fast] == BEFORE
    model, rejected = _model(TRICKY)
    assert not rejected and _stored(fast) == _stored(model)


@pytest.mark.parametrize("fraction", ["", ".9", ".99999949", ".999999999", ".000000999",
                                      ".123456789", ".5000005"])
@pytest.mark.parametrize("zone", ["Z", "", "+00:00", "-00:00", "+05:45", "-12:00", "+23:59"])
def test_fastpath_timestamps_are_the_models(fraction, zone):
    events = [ev(f"2026-12-0{d}T{h}:59:59{fraction}{zone}") for d in (1, 2) for h in (0, 23)]
    fast = _fast(events)
    model, rejected = _model(events)
    if fast is None:  # outside the window after the offset: the model path rejects it
        assert rejected
    else:
        assert not rejected and _stored(fast) == _stored(model)


@pytest.mark.parametrize("change", [
    {"timestamp": "2026-12-01 10:00:00Z"},  # space: pydantic takes it, not canonical
    {"timestamp": "2026-12-01T10:00:00+0200"},
    {"timestamp": "2026-12-01T10:00:00z"},
    {"timestamp": "2026-12-01T10:00Z"},
    {"timestamp": "2026-12-01"},
    {"timestamp": "2026-12-01T10:00:00.1234567890Z"},  # 10 digits
    {"timestamp": "2026-02-30T10:00:00Z"},
    {"timestamp": "2026-12-01T10:00:60Z"},
    {"timestamp": "2026-12-01T10:00:00+02:60"},
    {"timestamp": "2026-12-01T10:00:00+99:00"},  # not a timezone (this was a 500)
    {"timestamp": "2026-12-01T10:00:00.5-24:00"},
    {"timestamp": 1_764_583_200},
    {"collected_at": "yesterday"},
    {"workflow_id": "urn:uuid:" + WF},
    {"workflow_id": WF.replace("-", "")},
    {"workflow_id": "not-a-uuid"},
    {"stream": "stdin"},
    {"kind": None},
    {"message": None},
    {"message": "\ud800 lone surrogate"},
    {"pod": "p" * 254},
    {"timestamp": "2019-01-01T00:00:00Z"},  # outside the window: rejected, with its event
])
def test_fastpath_leaves_other_batches_to_the_model(change):
    events = [ev("2026-12-01T10:00:00.123456789Z"), {**ev("2026-12-01T10:00:01Z"), **change}]
    body = json.dumps(events).encode()  # ASCII: a lone surrogate is a \ud800 escape
    assert prepare_fast(body, Preparer(max_line_bytes=LIMIT, window=WINDOW)) is None


def test_fastpath_leaves_non_arrays_and_non_objects_to_the_model():
    for body in (orjson.dumps(ev("2026-12-01T10:00:00Z")), b"[1, 2]", b"[]x", b"\xff[]",
                 b'[{"workflow_id": "' + WF.encode() + b'"}]'):
        assert prepare_fast(body, Preparer(max_line_bytes=LIMIT, window=WINDOW)) is None


def _post(server: Any, events: list[Any], content_type: str) -> dict[str, int]:
    if content_type == "application/x-ndjson":  # NDJSON: always the model path
        raw = b"\n".join(orjson.dumps(e) for e in events)
    else:
        raw = orjson.dumps(events)
    r = httpx.post(f"{server.url}/ingest/vector", content=gzip.compress(raw),
                   headers={**VECTOR_HEADERS, "Content-Type": content_type,
                            "Authorization": f"Bearer {server.ingest_token}"}, timeout=30)
    r.raise_for_status()
    return dict(r.json())


def _decoded(server: Any) -> tuple[float, float]:
    """(model, fast): batches each decoder took, from /metrics."""
    text = server.get("/metrics").text
    out = []
    for decoder in ("model", "fast"):
        line = f'reana_log_sse_ingest_batches_total{{decoder="{decoder}"}} '
        out.append(next((float(x[len(line):]) for x in text.splitlines()
                         if x.startswith(line)), 0.0))
    return out[0], out[1]


def test_fastpath_batch_stored_by_the_model_path_is_a_duplicate(live_server):
    """A retry across the upgrade: the first attempt stored by the model path (what
    every version before the fast path did), the retry decoded by the fast path; and
    the other way round."""
    today = dt.datetime.now(dt.UTC).date()
    stamps = [f"{today}T23:59:59.999999999Z", f"{today}T00:00:00.123456789Z",
              f"{today}T12:00:00.5+02:00", f"{today}T06:00:00.000000001"]
    for first, retry in (("application/x-ndjson", "application/json"),
                         ("application/json", "application/x-ndjson")):
        wf = str(uuid.uuid4())
        batch = [ev(ts, f"line {i}", workflow_id=wf, collected_at=None)
                 for i, ts in enumerate(stamps * 2)]
        assert _post(live_server, batch, first) == {"accepted": 8, "duplicates": 0,
                                                     "rejected": 0}
        before = _decoded(live_server)
        assert _post(live_server, batch, retry) == {"accepted": 0, "duplicates": 8,
                                                     "rejected": 0}
        after = _decoded(live_server)  # the retry took the other decoder
        assert after[retry == "application/json"] == before[retry == "application/json"] + 1
        rows = live_server.sql("SELECT to_char(ts AT TIME ZONE 'UTC', 'HH24:MI:SS.US')"
                               " FROM log_lines WHERE workflow_id = %s ORDER BY seq", (wf,))
        assert [r[0] for r in rows[:4]] == ["23:59:59.999999", "00:00:00.123456",
                                             "10:00:00.500000", "06:00:00.000000"]


def test_fastpath_fields_follow_the_model():
    """A field or an allowed value added to LogEvent must reach the fast path too (else
    the fast path would ignore or refuse what the model accepts)."""
    import typing

    import msgspec

    from reana_log_sse.ingest.fastpath import _Event
    from reana_log_sse.ingest.models import LogEvent

    fast = {f.name: f for f in msgspec.structs.fields(_Event)}
    assert set(fast) == set(LogEvent.model_fields)
    for name in ("kind", "stream"):
        assert set(typing.get_args(fast[name].type)) == set(
            typing.get_args(LogEvent.model_fields[name].annotation))
    for name, field in LogEvent.model_fields.items():
        assert (field.is_required()) == (fast[name].required), name


def test_fastpath_offset_of_a_day_or_more_is_rejected_not_500(live_server):
    events = [ev(dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.5Z")),
              ev(dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+99:00"))]
    response = httpx.post(f"{live_server.url}/ingest/vector",
                          content=gzip.compress(json.dumps(events).encode()),
                          headers={**VECTOR_HEADERS,
                                   "Authorization": f"Bearer {live_server.ingest_token}"},
                          timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": 1}
