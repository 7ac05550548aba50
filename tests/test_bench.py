"""`reana-log-sse bench` keeps working: its parsing and arithmetic, and a whole run at
tiny sizes against the test PostgreSQL. Times are printed, never asserted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from array import array
from pathlib import Path

import pytest

from reana_log_sse.bench.harness import CommitLog, pct, summary_ms
from reana_log_sse.bench.rawhttp import Follower, last_id
from reana_log_sse.bench.report import BEGIN, END, Row, markdown_table, text_table

ROOT = Path(__file__).resolve().parent.parent
FRAME = b'event: log\nid: %d\ndata: {"id":%d,"message":"x id: 9"}\n\n'


def test_bench_last_id_is_the_last_complete_frame():
    buf = FRAME % (1, 1) + FRAME % (2, 2) + b"event: log\nid: 3\nda"
    assert last_id(buf, buf.rfind(b"\n\n")) == 2
    assert last_id(b"retry: 2000\n\n", 12) == -1


def test_bench_follower_parses_frames_split_anywhere():
    async def run() -> list[int]:
        f = Follower("h", "/p")
        stream = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
                  b"retry: 2000\n\n" + b"".join(FRAME % (i, i) for i in range(1, 6))
                  + b": ping\n\n" + b'event: end\ndata: {}\n\n')
        for i in range(0, len(stream), 7):  # every 7 bytes: ids and headers cut in two
            f.data_received(stream[i:i + 7])
        assert f.status == 200 and f.started.done() and f.ended.done()
        return list(f.ids)

    ids = asyncio.run(run())
    assert ids == sorted(ids) and ids[-1] == 5


def test_bench_latencies_pair_each_batch_with_its_first_arrival():
    log = CommitLog.__new__(CommitLog)
    log.seqs = {"w": array("q", [10, 20, 30, 40])}
    log.times = {"w": array("d", [100.0, 101.0, 102.0, 103.0])}
    # the follower saw up to id 25 at 101.5, then 40 at 103.2; batch 40 at 103.0 is out
    # of the window, batch 30 arrived with 40
    got, missing = log.latencies("w", array("q", [25, 40]), array("d", [101.5, 103.2]),
                                 100.5, 102.5)
    assert [round(x, 3) for x in got] == [0.5, 1.2]
    assert missing == 0
    got, missing = log.latencies("w", array("q", [25]), array("d", [101.5]), 0, 200)
    assert len(got) == 2 and missing == 2


def test_bench_percentiles_and_tables():
    assert pct([1.0, 2.0, 3.0, 4.0], 50) == 2.0 and pct([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    assert summary_ms([0.001, 0.002])["max"] == 2.0
    rows = [Row("1 ingest", "lines/s", 50_000.0, "lines/s", "raw COPY", 100_000.0,
                ">= 0.5x", True, {"service": 90, "postgres": 40, "loadgen": 5, "other": 0})]
    assert "0.50x" in text_table(rows) and "90/40/5/0" in text_table(rows)
    assert [line.count("|") for line in markdown_table(rows).splitlines()] == [9, 9, 9]


def test_bench_tiny_run_prints_every_row_and_writes_its_files(database_url, tmp_path):
    out, docs, readme = tmp_path / "out", tmp_path / "docs", tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Performance\n\n{BEGIN}\nold table\n{END}\n\n## Next\n")
    proc = subprocess.run(
        [sys.executable, "-m", "reana_log_sse", "bench", "--size", "tiny",
         "--database-url", database_url, "--out", str(out), "--write-docs",
         "--docs-dir", str(docs), "--readme", str(readme)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    print(proc.stdout, proc.stderr[-3000:])
    assert proc.returncode == 0
    for scenario in ("1 ingest", "2 latency", "3 fan-out", "4 catch-up", "5 polling", "6 CLI",
                     "8 ship"):
        assert scenario in proc.stdout
    assert "compete" in proc.stdout  # says that everything shares this machine
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    ingest = data["ingest"]  # every sender's answer counted, and all of it stored
    assert ingest["accepted"] == ingest["stored"] == ingest["lines"]
    assert "COUNTS DIFFER" not in proc.stdout and "bare asyncio writing" in proc.stdout
    with_baseline = [r for r in rows if r["baseline"]]
    assert len(with_baseline) >= 10
    assert all(r["ratio"] is not None for r in with_baseline)
    figures = {r["figure"].split(",")[0] for r in rows if r["scenario"] == "2 latency"}
    assert figures >= {"p99 from commit"}
    assert (out / "perf-latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (docs / "performance.md").read_text()
    assert "perf-latency.png" in page and "| scenario |" in page
    assert (docs / "perf-latency.png").exists()
    text = readme.read_text()
    assert "old table" not in text and "| 1 ingest |" in text
    assert "(docs/perf-latency.png)" in text and text.endswith("## Next\n")


def test_bench_latency_row_flags_a_missed_rate_and_uses_the_socket_floor():
    from reana_log_sse.bench.run import _latency_row

    run = {"layout": "one workflow", "followers": 1000, "workflows": 1, "rate": 1000.0,
           "achieved_rate": 600.0, "p50": 5.0, "p99": 10.0, "max": 20.0, "undelivered": 0,
           "refused": 0, "refusals": [], "notify": {"p50": 1.0}, "cpu": None}
    row = _latency_row(run, {"p99": 8.0}, {"p99": 2.0})
    assert row.base_value == 8.0 and "bare socket" in row.baseline
    assert row.met is False and "RATE MISSED" in row.note and "600 of 1,000" in row.figure
    row = _latency_row({**run, "achieved_rate": 990.0}, {"p99": 8.0}, {"p99": 2.0})
    assert row.met is True and "RATE MISSED" not in row.note and row.goal == "<= 2x floor"



def test_bench_write_docs_keeps_the_hand_written_changes():
    from reana_log_sse.bench.report import CHANGES_BEGIN, CHANGES_END, docs, kept_changes

    machine = {"date": "d", "cpu": "c", "cores": 2, "memory_gib": 1, "os": "o", "python": "3",
               "postgresql": "18"}
    block = f"{CHANGES_BEGIN}\n## What changed\n\nbefore/after\n{CHANGES_END}"
    page = docs(machine, [], [], "p.png", "cmd", kept_changes(f"old page\n{block}\nold end"))
    assert kept_changes(page) == block and "old page" not in page
    assert kept_changes("no markers") == "" and CHANGES_BEGIN not in docs(
        machine, [], [], "p.png", "cmd")


@pytest.mark.timeout(900)  # the first use installs reana-client 0.95.0a6 (about 70 s)
def test_bench_reana_client_row_follows_every_line_three_ways(database_url, tmp_path):
    """The opt-in row: REANA's own client, patched and polling, and ours, each printed
    every measured line (their latencies are printed, never asserted)."""
    proc = subprocess.run(
        [sys.executable, "-m", "reana_log_sse", "bench", "--size", "tiny", "--only",
         "reana-client", "--database-url", database_url, "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=800,
    )
    print(proc.stdout, proc.stderr[-3000:])
    assert proc.returncode == 0
    rows = json.loads((tmp_path / "results.json").read_text())["reana_client"]
    assert [(r["follower"], r["lines"], r["of"]) for r in rows] == [
        ("reana-client, patched (SSE)", 5, 5), ("reana-client, REANA's 10 s poll", 5, 5),
        ("reana-log-sse logs --follow", 5, 5)]
    assert proc.stdout.count("9 reana-client") == 2


def test_bench_soak_slope_is_least_squares_in_mib_per_minute():
    from reana_log_sse.bench.soak import slope_mb_per_min

    mib = 2**20
    assert slope_mb_per_min([(60.0, 100 * mib), (120.0, 101 * mib), (180.0, 102 * mib)]) == 1.0
    assert slope_mb_per_min([(60.0, 100 * mib), (120.0, 100 * mib)]) == 0.0
    assert slope_mb_per_min([(60.0, 100 * mib)]) == 0.0


@pytest.mark.timeout(300)
def test_bench_soak_row_samples_rss_under_resuming_followers(database_url, tmp_path):
    """The opt-in soak, for 6 s: it samples RSS, sends, delivers in order, and prints its
    row (its slope over so short a run is printed, never asserted)."""
    proc = subprocess.run(
        [sys.executable, "-m", "reana_log_sse", "bench", "--size", "tiny", "--only", "soak",
         "--soak-seconds", "6", "--database-url", database_url, "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    print(proc.stdout, proc.stderr[-3000:])
    assert proc.returncode == 0
    k = json.loads((tmp_path / "results.json").read_text())["soak"]
    assert len(k["samples"]) >= 10 and all(rss > 0 for _, rss in k["samples"])
    assert k["sent"] > 0 and k["received"] > 0 and k["resumes"] > 0
    assert k["out_of_order"] == 0 and k["rss_end"] == k["samples"][-1][1]
    assert k["per_minute"] == [k["samples"][0]]  # 6 s: only the minute 0 sample
    assert proc.stdout.count("10 soak") == 1 and "MiB/min" in proc.stdout
