"""`reana-log-sse ship` against the real service (LiveServer), real files, real processes,
real kill -9, and the single file under the oldest python3 it claims (3.9)."""

from __future__ import annotations

import ast
import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reana_log_sse import ship

JOB = "reana-run-job-ship"
SHIP_PY = Path(ship.__file__)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def python39() -> str | None:
    found = shutil.which("python3.9")
    candidates = ([found] if found else []) + sorted(
        glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    for path in candidates:
        out = subprocess.run([path, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip() == "(3, 9)":
            return path
    return None


class Shipper:
    """One shipper process; stdout, stderr and its own log go to files."""

    def __init__(self, server: Any, tmp: Path, workflow: str, *args: str,
                 argv0: list[str] | None = None, env: dict[str, str] | None = None,
                 name: str = "ship") -> None:
        self.tmp, self.name = tmp, name
        self.stdout, self.stderr = tmp / f"{name}.stdout", tmp / f"{name}.stderr"
        self.log = tmp / "ship.log"
        argv = argv0 or [sys.executable, "-m", "reana_log_sse", "ship"]
        full_env = {**os.environ, "REANA_LOG_SSE_URL": server.url,
                    "REANA_LOG_SSE_INGEST_TOKEN": server.ingest_token,
                    "REANA_LOG_SSE_SHIP_LOG_FILE": str(self.log),
                    "REANA_LOG_SSE_SHIP_LOG_LEVEL": "info", **(env or {})}
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [*argv, "--workflow", workflow, "--job", JOB, "--step", "fit",
                 "--spool-dir", str(tmp / "spool"), *args],
                stdout=out, stderr=err, env=full_env, cwd=tmp)

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def logged(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def stored(server: Any, wf: str) -> list[tuple[str, str]]:
    return [(m, s) for m, s in server.sql(
        "SELECT message, stream FROM log_lines WHERE workflow_id = %s ORDER BY seq", (wf,))]


def count(server: Any, wf: str) -> int:
    return int(server.sql("SELECT count(*) FROM log_lines WHERE workflow_id = %s",
                          (wf,))[0][0])


def job_statuses(server: Any, wf: str) -> list[tuple[str, dict[str, Any]]]:
    return [(s, d) for s, d in server.sql(
        "SELECT status, details FROM status_events WHERE workflow_id = %s AND job_id = %s"
        " ORDER BY id", (wf, JOB))]


def duplicates_counted(server: Any) -> float:
    found = re.search(r"^reana_log_sse_duplicate_lines_total (\S+)$",
                      server.get("/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def spool_bytes(spool: Path) -> int:
    total = 0
    for p in spool.glob("*.batch*"):
        with contextlib.suppress(FileNotFoundError):
            total += p.stat().st_size
    return total


class Writer(threading.Thread):
    """A job writing numbered lines to a file at a pace, until told to stop (or `lines`)."""

    def __init__(self, path: Path, rate: float, lines: int | None = None) -> None:
        super().__init__(daemon=True)
        self.path, self.rate, self.lines = path, rate, lines
        self.written = 0
        self.stop = threading.Event()

    @staticmethod
    def line(i: int) -> str:  # not very compressible: the spool fills quickly
        return f"line {i} {hashlib.sha256(str(i).encode()).hexdigest()}"

    def run(self) -> None:
        t0 = time.monotonic()
        with open(self.path, "a") as f:
            while not self.stop.is_set() and (self.lines is None or self.written < self.lines):
                due = int((time.monotonic() - t0) * self.rate) + 1
                if self.lines is not None:
                    due = min(due, self.lines)
                while self.written < due:
                    f.write(self.line(self.written) + "\n")
                    self.written += 1
                f.flush()
                time.sleep(0.01)


INTERLEAVED = """
import sys, time
t0 = time.monotonic()
for i in range(10000):
    pause = t0 + i / 1000 - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    out = sys.stderr if i % 3 == 0 else sys.stdout
    out.write(("err %d" if i % 3 == 0 else "out %d") % i + "\\n")
    out.flush()
sys.stdout.write("no newline at the end")
sys.exit(3)
"""


def test_ship_command_interleaved_streams_every_line_once_in_order(live_server, tmp_path):
    wf = str(uuid.uuid4())
    shipper = Shipper(live_server, tmp_path, wf, "--", sys.executable, "-c", INTERLEAVED)
    wait_for(lambda: count(live_server, wf) >= 1000, "lines stored while the job runs")
    assert shipper.proc.poll() is None  # live: 1,000 lines stored with 9 s of the job left
    assert shipper.wait() == 3  # the command's exit code
    outs = [f"out {i}" for i in range(10000) if i % 3] + ["no newline at the end"]
    errs = [f"err {i}" for i in range(0, 10000, 3)]
    rows = stored(live_server, wf)
    assert [m for m, s in rows if s == "stdout"] == outs
    assert [m for m, s in rows if s == "stderr"] == errs
    assert len(rows) == len(outs) + len(errs)
    # passed through unchanged, the shipper's own messages elsewhere
    assert shipper.stdout.read_text() == "\n".join(outs[:-1]) + "\n" + outs[-1]
    assert shipper.stderr.read_text() == "".join(e + "\n" for e in errs)
    [(status, details)] = job_statuses(live_server, wf)
    assert status == "failed" and details["exit_code"] == 3


def test_ship_follows_a_file_through_rotation_and_truncation(live_server, tmp_path):
    wf = str(uuid.uuid4())
    out, err, done = tmp_path / "job.out", tmp_path / "job.err", tmp_path / "job.exit"
    shipper = Shipper(live_server, tmp_path, wf, f"{out}:stdout", f"{err}:stderr",
                      "--exit-code-file", str(done))
    expected: list[str] = []

    def write(f: Any, *lines: str, end: str = "\n") -> None:
        f.write("".join(line + end for line in lines))
        f.flush()
        expected.extend(lines)

    def stdout_lines() -> list[str]:
        return [m for m, s in stored(live_server, wf) if s == "stdout"]

    with open(out, "w") as f:  # the file appears after the shipper started
        write(f, *[f"first {i}" for i in range(100)])
        wait_for(lambda: len(stdout_lines()) == 100, "the first lines")
        os.rename(out, tmp_path / "job.out.1")  # rotated; the job still writes the old one
        write(f, *[f"old file {i}" for i in range(50)])
    with open(out, "w") as f:
        write(f, *[f"new file {i}" for i in range(100)])
        wait_for(lambda: len(stdout_lines()) == 250, "lines of both files")
        f.truncate(0)  # copytruncate
        f.seek(0)
        write(f, *[f"after {i}" for i in range(5)])
        f.write("joined ")  # the rest of the line follows before the delay: one line
        f.flush()
        f.write("line\n")
        expected.append("joined line")
        f.write("partial")  # no newline: sent after a short delay
        f.flush()
        expected.append("partial")
        wait_for(lambda: stdout_lines()[-1:] == ["partial"], "the partial last line")
    with open(err, "w") as f:
        f.write("to stderr\n")
    wait_for(lambda: ("to stderr", "stderr") in stored(live_server, wf), "the stderr file")
    done.write_text("0\n")
    assert shipper.wait() == 0
    assert stdout_lines() == expected
    assert [s for s, _ in job_statuses(live_server, wf)] == ["finished"]
    assert "rotated" in shipper.logged() and "truncated" in shipper.logged()


def test_ship_killed_with_9_three_times_every_line_once(live_server, tmp_path):
    wf, total = str(uuid.uuid4()), 20_000
    out, done = tmp_path / "job.out", tmp_path / "job.exit"
    writer = Writer(out, rate=4000, lines=total)
    writer.start()
    args = (str(out), "--exit-code-file", str(done))
    # first, the worst moment: killed after the ingest acknowledged a batch, before the
    # shipper recorded it; the restarted shipper resends it and the ingest dedupes it
    first = Shipper(live_server, tmp_path, wf, *args,
                    env={"REANA_LOG_SSE_SHIP_FAULT": "kill-after-send:5"})
    assert first.wait() == -signal.SIGKILL
    for _ in range(3):  # then three kill -9 at whatever moment the shipper is in
        shipper = Shipper(live_server, tmp_path, wf, *args)
        before = count(live_server, wf)
        wait_for(lambda b=before: count(live_server, wf) >= b + 1500, "progress")
        shipper.kill9()
    writer.join()
    done.write_text("0")
    last = Shipper(live_server, tmp_path, wf, *args)
    assert last.wait() == 0
    messages = [m for m, _ in stored(live_server, wf)]
    assert messages == [Writer.line(i) for i in range(total)]  # each once, in order
    assert duplicates_counted(live_server) > 0  # the resent batch was stored once


def test_ship_restarted_after_a_rotation_reads_the_old_file_to_its_end(live_server, tmp_path):
    wf = str(uuid.uuid4())
    out, done = tmp_path / "job.out", tmp_path / "job.exit"
    args = (str(out), "--exit-code-file", str(done))
    expected = [f"before {i}" for i in range(100)]
    with open(out, "w") as f:
        f.write("".join(m + "\n" for m in expected))
        f.flush()
        shipper = Shipper(live_server, tmp_path, wf, *args)
        wait_for(lambda: count(live_server, wf) == 100, "the first lines")
        shipper.kill9()
        os.rename(out, tmp_path / "job.out.1")  # rotated while no shipper ran
        late = [f"old file {i}" for i in range(30)]
        f.write("".join(m + "\n" for m in late))
    new = [f"new file {i}" for i in range(30)]
    out.write_text("".join(m + "\n" for m in new))
    done.write_text("0")
    assert Shipper(live_server, tmp_path, wf, *args).wait() == 0
    assert [m for m, _ in stored(live_server, wf)] == expected + late + new


def test_ship_service_down_20s_nothing_lost_spool_bounded(live_server, tmp_path):
    wf, cap = str(uuid.uuid4()), 32 * 1024
    out, done = tmp_path / "job.out", tmp_path / "job.exit"
    writer = Writer(out, rate=1000)
    writer.start()
    shipper = Shipper(live_server, tmp_path, wf, str(out), "--exit-code-file", str(done),
                      "--spool-max-bytes", str(cap))
    wait_for(lambda: count(live_server, wf) >= 500, "lines before the outage")
    live_server.stop()
    largest, outage_end = 0, time.monotonic() + 20  # the outage's length: a scenario
    while time.monotonic() < outage_end:
        largest = max(largest, spool_bytes(tmp_path / "spool"))
        time.sleep(0.05)
    live_server.start()
    back = writer.written
    wait_for(lambda: count(live_server, wf) >= back + 500, "lines after the service is back")
    writer.stop.set()
    writer.join()
    done.write_text("0")
    assert shipper.wait() == 0
    assert [m for m, _ in stored(live_server, wf)] == [Writer.line(i)
                                                       for i in range(writer.written)]
    assert 0 < largest <= cap
    assert "spool full" in shipper.logged()  # the cap was reached: reading paused


def test_ship_refused_batch_is_logged_and_shipping_goes_on(server_factory, tmp_path):
    # A batch that can never succeed (several lines, together over the service's body cap:
    # 413; a single line over the cap would be cut and stored, not refused) is logged and
    # dropped, and the lines after it still go.
    server = server_factory(max_body_bytes=4000)
    wf = str(uuid.uuid4())
    out, done = tmp_path / "job.out", tmp_path / "job.exit"
    out.write_text("".join(f"{i} {'x' * 1500}\n" for i in range(4)))  # one batch, ~6.5 kB
    shipper = Shipper(server, tmp_path, wf, str(out), "--exit-code-file", str(done))
    wait_for(lambda: "refused for good: 413" in shipper.logged(), "the 413 logged")
    with out.open("a") as f:
        f.write("small\n")
    wait_for(lambda: count(server, wf) == 1, "the line after the refused batch")
    done.write_text("0")
    assert shipper.wait() == 0
    assert stored(server, wf) == [("small", "stdout")]


def test_ship_forwards_sigterm_and_exits_with_the_command_code(live_server, tmp_path):
    wf = str(uuid.uuid4())
    script = ("import signal, sys, time\n"
              "def bye(*a):\n    print('got TERM', flush=True); sys.exit(7)\n"
              "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\ntime.sleep(60)")
    shipper = Shipper(live_server, tmp_path, wf, "--", sys.executable, "-c", script)
    wait_for(lambda: stored(live_server, wf) == [("ready", "stdout")], "the job started")
    shipper.proc.send_signal(signal.SIGTERM)
    assert shipper.wait() == 7
    assert [m for m, _ in stored(live_server, wf)] == ["ready", "got TERM"]
    assert [(s, d["exit_code"]) for s, d in job_statuses(live_server, wf)] == [("failed", 7)]


# -- the single file on a worker node ----------------------------------------------------

def test_ship_single_file_is_python39_standard_library_only():
    source = SHIP_PY.read_text()
    tree = ast.parse(source, feature_version=(3, 9))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the file runs alone"
            imported.add((node.module or "").split(".")[0])
        # no 3.10+ syntax the parser would accept anyway
        assert not isinstance(node, getattr(ast, "Match", ())), "match needs 3.10"
    assert imported - {"__future__"} <= sys.stdlib_module_names


@pytest.mark.parametrize("which", ["python3.9", "base python3"])
def test_ship_single_file_runs_alone_with_python_isolated(live_server, tmp_path, which):
    python = python39() if which == "python3.9" else os.path.join(sys.base_prefix, "bin",
                                                                  "python3")
    if python is None:
        pytest.skip("no python3.9 on this machine (pyenv's 3.9 is looked for too)")
    alone = tmp_path / "worker"
    alone.mkdir()
    shutil.copy(SHIP_PY, alone / "ship.py")  # away from the package: nothing to import
    wf = str(uuid.uuid4())
    script = "import sys; print('hello'); print('oops', file=sys.stderr); sys.exit(0)"
    shipper = Shipper(live_server, alone, wf, "--", python, "-I", "-c", script,
                      argv0=[python, "-I", "-S", str(alone / "ship.py")])
    assert shipper.wait() == 0, shipper.stderr.read_text()
    assert sorted(stored(live_server, wf)) == [("hello", "stdout"), ("oops", "stderr")]
    assert [s for s, _ in job_statuses(live_server, wf)] == ["finished"]
    # and following a file, with a spool of its own
    (alone / "job.out").write_text("from a file\nlast, no newline")
    (alone / "job.exit").write_text("2")
    follower = Shipper(live_server, alone, wf, "job.out", "--exit-code-file", "job.exit",
                       "--spool-dir", str(alone / "spool2"), name="follow",
                       argv0=[python, "-I", "-S", str(alone / "ship.py")])
    assert follower.wait() == 0, follower.stderr.read_text()
    assert [m for m, _ in stored(live_server, wf)][2:] == ["from a file", "last, no newline"]
    assert [(s, d.get("exit_code")) for s, d in job_statuses(live_server, wf)][1:] == [
        ("failed", 2)]
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout
    if which == "python3.9":
        assert version.strip() == "(3, 9)"


def test_ship_usage_errors_are_clear(tmp_path):
    run = subprocess.run([sys.executable, "-m", "reana_log_sse", "ship", "--workflow",
                          "not-a-uuid", "--spool-dir", str(tmp_path), "--", "true"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "workflow UUID" in run.stderr
    run = subprocess.run([sys.executable, "-m", "reana_log_sse", "ship", "--workflow",
                          str(uuid.uuid4()), "--server", "localhost:8000", "--spool-dir",
                          str(tmp_path), "--", "true"], capture_output=True, text=True)
    assert run.returncode == 2 and "http:// or https://" in run.stderr
    assert json.dumps(ship.rfc3339(1_700_000_000_123_456_789)) == \
        '"2023-11-14T22:13:20.123456789Z"'


def rewrite_on_the_same_inode(path: Path, text: str, *, delete: bool) -> None:
    """The followed file replaced by other content with the inode it had: truncated and
    rewritten, or deleted and created again (ext4 hands a freed inode out again; the new
    file is made under another name until one gets it, then renamed into place)."""
    inode = path.stat().st_ino
    if not delete:
        with open(path, "w") as f:
            f.write(text)
        return
    path.unlink()
    made = []
    for i in range(500):
        made.append(path.with_name(f".new-{i}"))
        made[-1].touch()
        if made[-1].stat().st_ino == inode:
            made[-1].write_text(text)
            made.pop().rename(path)
            break
    for p in made:
        p.unlink()
    if not path.exists():
        pytest.skip("this filesystem gave the recreated file another inode")


@pytest.mark.parametrize("delete", [True, False], ids=["deleted_and_recreated", "truncated"])
def test_ship_file_replaced_by_longer_content_on_the_same_inode_while_killed_every_line_once(
        live_server, tmp_path, delete):
    wf = str(uuid.uuid4())
    out, done = tmp_path / "job.out", tmp_path / "job.exit"
    args = (str(out), "--exit-code-file", str(done))
    first = [f"first run {i}" for i in range(1000)]
    out.write_text("".join(m + "\n" for m in first) + "half a li")
    shipper = Shipper(live_server, tmp_path, wf, *args)
    wait_for(lambda: count(live_server, wf) == 1000, "the first file's lines")
    shipper.kill9()  # down, its cursor in the middle of the file, after a partial line
    second = [f"second run, another text {i}" for i in range(3000)]
    rewrite_on_the_same_inode(out, "".join(m + "\n" for m in second), delete=delete)
    done.write_text("0")
    assert Shipper(live_server, tmp_path, wf, *args).wait() == 0
    assert [m for m, _ in stored(live_server, wf)] == first + second  # none lost, no fragment


def test_ship_file_truncated_and_rewritten_longer_within_one_poll_every_line_once(
        live_server, tmp_path):
    wf = str(uuid.uuid4())
    out, done = tmp_path / "job.out", tmp_path / "job.exit"
    first = [f"first {i}" for i in range(1000)]
    out.write_text("".join(m + "\n" for m in first))
    shipper = Shipper(live_server, tmp_path, wf, str(out), "--exit-code-file", str(done))
    wait_for(lambda: count(live_server, wf) == 1000, "the first lines")
    second = [f"rewritten {i}" for i in range(4000)]  # longer than the first: no EOF seen
    data = "".join(m + "\n" for m in second).encode()
    fd = os.open(out, os.O_WRONLY)
    try:  # truncated and rewritten in two system calls: well within one 50 ms poll
        os.ftruncate(fd, 0)
        os.write(fd, data)
    finally:
        os.close(fd)
    done.write_text("0")
    assert shipper.wait() == 0
    assert [m for m, _ in stored(live_server, wf)] == first + second


def test_ship_with_a_workflow_token_writes_its_own_workflow_only(server_factory, tmp_path):
    """A job holding its workflow's token (issue #19, finding 14) ships its lines and its
    status; the shipper refuses to start with another workflow's token."""
    from reana_log_sse.auth import workflow_token

    key = "a workflow token key of 32 characters or more"
    server = server_factory(workflow_token_key=key, ingest_tokens="")
    wf, other = str(uuid.uuid4()), str(uuid.uuid4())
    token = workflow_token(key, uuid.UUID(wf))
    refused = Shipper(server, tmp_path, other, "--", "true",
                      env={"REANA_LOG_SSE_INGEST_TOKEN": token}, name="refused")
    assert refused.wait() == 2 and f"writes workflow {wf} only" in refused.stderr.read_text()
    shipper = Shipper(server, tmp_path, wf, "--", sys.executable, "-c", "print('hello')",
                      env={"REANA_LOG_SSE_INGEST_TOKEN": token})
    assert shipper.wait() == 0
    assert stored(server, wf) == [("hello", "stdout")]
    wait_for(lambda: job_statuses(server, wf), "the job's status")
    assert [s for s, _ in job_statuses(server, wf)] == ["finished"]


def test_ship_file_rewritten_while_running_then_killed_after_a_send_every_line_once(
        live_server, tmp_path):
    """The file truncated and rewritten under a running shipper, which is killed -9 at the
    worst moment (a batch of the new content acknowledged, not yet recorded), then run
    again: the spooled batch is resent (stored once) and reading goes on in the new file."""
    wf = str(uuid.uuid4())
    out, done = tmp_path / "job.out", tmp_path / "job.exit"
    args = (str(out), "--exit-code-file", str(done))
    first = [f"first {i}" for i in range(1000)]
    out.write_text("".join(m + "\n" for m in first))
    shipper = Shipper(live_server, tmp_path, wf, *args)
    wait_for(lambda: count(live_server, wf) == 1000, "the first lines")
    shipper.kill9()
    second = [f"second {i} {Writer.line(i)}" for i in range(3000)]
    rewrite_on_the_same_inode(out, "".join(m + "\n" for m in second[:1500]), delete=False)
    killed = Shipper(live_server, tmp_path, wf, *args,
                     env={"REANA_LOG_SSE_SHIP_FAULT": "kill-after-send:1"})
    assert killed.wait() == -signal.SIGKILL
    with open(out, "a") as f:
        f.write("".join(m + "\n" for m in second[1500:]))
    done.write_text("0")
    assert Shipper(live_server, tmp_path, wf, *args).wait() == 0
    assert [m for m, _ in stored(live_server, wf)] == first + second
    assert duplicates_counted(live_server) > 0  # the resent batch was stored once
