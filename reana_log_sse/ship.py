"""`reana-log-sse ship`: follow a job's output files, or run its command, and post every
line to the ingest (POST /ingest/vector), resumable and exactly once across a crash.

This one file is the whole implementation, with the standard library only (Python 3.9+,
the system python3 of RHEL/Alma 9 worker nodes), so it also runs on its own:

    python3 -I ship.py --workflow UUID --job JOB -- cmd args      # wrap the job's command
    python3 -I ship.py --workflow UUID --job JOB out.txt err.txt:stderr   # follow files

How it keeps lines exactly once: lines go into a batch (<= 0.2 s or 1 MB) that is written
to the spool directory and fsync'd before it is sent; a batch file carries the file offsets
reached after its lines and the timestamps it was given. Offsets are recorded as acknowledged
only after the ingest answered 200. A restarted shipper resends its spooled batches byte for
byte (the ingest's dedupe stores them once) and reads on from the last spooled offsets, so
no line is read twice with a new timestamp. A followed file is known by its content, not by
its inode alone: a cursor also holds digests of the bytes before its offset and of the
file's head, and a file whose bytes there changed (deleted and created again on the same
inode, truncated and rewritten past the offset, while running or not) is read from its
start. The spool is bounded: when full, reading stops
(a followed file waits; a command's pipe fills and blocks the command), nothing is dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import gzip
import http.client
import json
import logging
import os
import queue
import random
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from typing import Any

log = logging.getLogger("reana_log_sse.ship")

BATCH_SECONDS = 0.2
BATCH_BYTES = 1_000_000
PARTIAL_SECONDS = 0.5  # a last line without its newline is sent after this long at EOF
MAX_LINE_BYTES = 256 * 1024  # a longer line is sent in pieces (the ingest cuts at 64 KiB)
POLL_SECONDS = 0.05
RETRY_CODES = frozenset({408, 429, 500, 502, 503, 504})  # and every other 5xx
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0
MAGIC = b"RLS1"
# A file cursor is [dev, inode, offset, crc32 of the CHECK_BYTES before offset, crc32 of the
# file's first CHECK_BYTES]: the file is the one we were in only if those bytes are still
# there (an inode is handed out again after a delete; a truncated file is rewritten).
CHECK_BYTES = 1024

# (flag, environment variable, default, type, help): the one definition of the flags, read
# by this file's own argparse and by `reana-log-sse ship` (cli.py builds click options).
OPTIONS: tuple[tuple[str, str, Any, Any, str], ...] = (
    ("--workflow", "REANA_LOG_SSE_WORKFLOW", None, str, "workflow UUID the lines belong to"),
    ("--job", "REANA_LOG_SSE_JOB", None, str, "job id (e.g. the HTCondor cluster.proc or "
     "Slurm job id REANA knows the job by)"),
    ("--step", "REANA_LOG_SSE_STEP", None, str, "step name of the job in the workflow"),
    ("--kind", "REANA_LOG_SSE_KIND", "job", ("job", "workflow"),
     "job, or workflow for a workflow engine's own log"),
    ("--server", "REANA_LOG_SSE_URL", "http://127.0.0.1:8000", str, "reana-log-sse base URL"),
    ("--token", "REANA_LOG_SSE_INGEST_TOKEN", None, str,
     "ingest token, best the workflow's own (`reana-log-sse token --workflow W`: it "
     "writes that workflow only; prefer the variable: arguments show in ps)"),
    ("--spool-dir", "REANA_LOG_SSE_SPOOL_DIR", None, str, "where batches wait until "
     "acknowledged; a restarted shipper must get the same one [default: "
     ".reana-log-sse-spool/WORKFLOW.JOB in the current directory]"),
    ("--spool-max-bytes", "REANA_LOG_SSE_SPOOL_MAX_BYTES", 64 * 2**20, int,
     "spool cap; past it reading pauses until the service acknowledges"),
    ("--exit-code-file", "REANA_LOG_SSE_EXIT_CODE_FILE", None, str, "following files: when "
     "this file appears holding the job's exit code, read the files to their end, post "
     "the job's status and exit"),
    ("--drain-timeout", "REANA_LOG_SSE_DRAIN_TIMEOUT", 600.0, float, "at the end, how long "
     "to keep trying to deliver; what is left stays spooled for a later run"),
    ("--log-file", "REANA_LOG_SSE_SHIP_LOG_FILE", None, str,
     "the shipper's own messages [default: stderr]"),
    ("--log-level", "REANA_LOG_SSE_SHIP_LOG_LEVEL", "warning",
     ("debug", "info", "warning", "error"), "the shipper's own log level"),
)


@dataclasses.dataclass
class Config:
    workflow: str
    job: str | None = None
    step: str | None = None
    kind: str = "job"
    server: str = "http://127.0.0.1:8000"
    token: str | None = None
    spool_dir: str | None = None
    spool_max_bytes: int = 64 * 2**20
    exit_code_file: str | None = None
    drain_timeout: float = 600.0
    log_file: str | None = None
    log_level: str = "warning"
    files: tuple[str, ...] = ()
    command: tuple[str, ...] = ()


class UsageError(Exception):
    pass


def rfc3339(ns: int) -> str:
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


class Clock:
    """Strictly increasing nanosecond timestamps, continuing after a restart's last one:
    two lines never share a timestamp, so the ingest's dedupe never merges two lines."""

    def __init__(self, after_ns: int) -> None:
        self.last = after_ns
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self.last = max(time.time_ns(), self.last + 1)
            return self.last


class Aborted(Exception):
    pass


class Spool:
    """Batches on disk until acknowledged; state.json holds what was acknowledged."""

    def __init__(self, path: str, cap: int, abort: threading.Event) -> None:
        self.path, self.cap, self.abort = path, cap, abort
        os.makedirs(path, exist_ok=True)
        self._lockfile = open(os.path.join(path, "lock"), "w")  # noqa: SIM115 - held
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(f"another shipper uses the spool {path}") from None
        self.cond = threading.Condition()
        self.state = {"acked_seq": 0, "cursors": {}, "last_ts": 0}
        state_path = os.path.join(path, "state.json")
        if os.path.exists(state_path):
            with open(state_path) as f:
                self.state = json.load(f)
        self.pending: list[tuple[int, str, int]] = []  # (seq, path, size), oldest first
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if name.endswith(".tmp"):
                os.unlink(full)  # a batch that was never completely written: never sent
            elif name.endswith(".batch"):
                seq = int(name.split(".")[0])
                if seq <= self.state["acked_seq"]:
                    os.unlink(full)
                else:
                    self.pending.append((seq, full, os.path.getsize(full)))
        self.bytes = sum(p[2] for p in self.pending)
        self.finished = False
        self._full_logged = False

    def position(self) -> tuple[dict[str, Any], int, int]:
        """(cursors, last timestamp, last seq) after the newest spooled batch."""
        if self.pending:
            header = self.read(self.pending[-1][1])[0]
            return header["cursors"], header["last_ts"], header["seq"]
        return self.state["cursors"], self.state["last_ts"], self.state["acked_seq"]

    @staticmethod
    def read(path: str) -> tuple[dict[str, Any], bytes]:
        with open(path, "rb") as f:
            data = f.read()
        if data[:4] != MAGIC:
            raise ValueError(f"{path} is not a spooled batch")
        (n,) = struct.unpack(">I", data[4:8])
        return json.loads(data[8:8 + n]), data[8 + n:]

    def put(self, header: dict[str, Any], body: bytes) -> None:
        head = json.dumps(header).encode()
        data = MAGIC + struct.pack(">I", len(head)) + head + body
        with self.cond:
            while self.pending and self.bytes + len(data) > self.cap:
                if not self._full_logged:
                    log.warning("spool full (%d bytes, cap %d): reading paused until the "
                                "service acknowledges", self.bytes, self.cap)
                    self._full_logged = True
                if self.abort.is_set():
                    raise Aborted
                self.cond.wait(0.5)
            self._full_logged = False
        final = os.path.join(self.path, f"{header['seq']:012d}.batch")
        self._write(final, data)
        with self.cond:
            self.pending.append((header["seq"], final, len(data)))
            self.bytes += len(data)
            self.cond.notify_all()

    def _write(self, final: str, data: bytes) -> None:
        tmp = final + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, final)
        dirfd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    def idle(self) -> bool:
        with self.cond:
            return not self.pending

    def next(self) -> tuple[int, str] | None:
        """The oldest batch to send; None once finished and empty."""
        with self.cond:
            while not self.pending:
                if self.finished or self.abort.is_set():
                    return None
                self.cond.wait(0.5)
            return self.pending[0][:2]

    def ack(self, seq: int, header: dict[str, Any]) -> None:
        self.state = {"acked_seq": seq, "cursors": header["cursors"],
                      "last_ts": header["last_ts"]}
        self._write(os.path.join(self.path, "state.json"), json.dumps(self.state).encode())
        with self.cond:
            _, path, size = self.pending.pop(0)
            os.unlink(path)
            self.bytes -= size
            self.cond.notify_all()

    @property
    def status_path(self) -> str:
        return os.path.join(self.path, "status.json")

    def put_status(self, body: dict[str, Any]) -> None:
        self._write(self.status_path, json.dumps(body).encode())

    def finish(self) -> None:
        with self.cond:
            self.finished = True
            self.cond.notify_all()


class Permanent(Exception):
    """An answer that retrying cannot change (4xx other than 408/429)."""


def post(url: str, token: str | None, body: bytes, *, gzipped: bool,
         abort: threading.Event, what: str) -> dict[str, Any]:
    """POST until a 2xx (its JSON answer), retrying 5xx, 408, 429 and connection errors
    with exponential backoff and jitter; Permanent for any other answer."""
    headers = {"Content-Type": "application/json", "User-Agent": "reana-log-sse-ship"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    if token:
        headers["Authorization"] = "Bearer " + token
    attempt = 0
    while True:
        retry_after = 0.0
        try:
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                answer = resp.read()
            try:  # acknowledged; the answer's counts are only for the log
                return dict(json.loads(answer))
            except (ValueError, TypeError):
                return {}
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            if exc.code not in RETRY_CODES and not 500 <= exc.code < 600 or exc.code == 501:
                raise Permanent(f"{exc.code} {detail}") from None
            problem = f"{exc.code} {detail}"
            with contextlib.suppress(ValueError):
                retry_after = float(exc.headers.get("Retry-After") or 0)
        except (OSError, http.client.HTTPException) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(attempt, 10))
        delay = max(random.uniform(delay / 2, delay), min(retry_after, 30.0))
        if attempt in (0, 5) or attempt % 20 == 0:
            log.warning("%s: %s; retrying (attempt %d)", what, problem, attempt + 1)
        attempt += 1
        if abort.wait(delay):
            raise Aborted


class Sender(threading.Thread):
    """Sends spooled batches oldest first; marks each acknowledged, then the job status."""

    def __init__(self, cfg: Config, spool: Spool, abort: threading.Event) -> None:
        super().__init__(name="sender", daemon=True)
        self.cfg, self.spool, self.abort = cfg, spool, abort
        self.url = cfg.server.rstrip("/") + "/ingest/vector"
        self.sent = 0
        fault = os.environ.get("REANA_LOG_SSE_SHIP_FAULT", "")  # tests: kill-after-send:N
        self.kill_after = int(fault.split(":")[1]) if fault.startswith("kill-after-send:") else 0

    def run(self) -> None:
        try:
            while True:
                item = self.spool.next()
                if item is None:
                    break
                seq, path = item
                header, body = self.spool.read(path)
                try:
                    answer = post(self.url, self.cfg.token, body, gzipped=True,
                                  abort=self.abort, what=f"batch {seq} ({header['lines']} lines)")
                    if answer.get("rejected"):
                        log.error("batch %d: the ingest rejected %s of its %d lines (kept in "
                                  "its rejected_events)", seq, answer["rejected"],
                                  header["lines"])
                except Permanent as exc:
                    log.error("batch %d (%d lines) refused for good: %s", seq,
                              header["lines"], exc)
                self.sent += 1
                if self.sent == self.kill_after:  # the worst moment: sent, not yet recorded
                    os.kill(os.getpid(), signal.SIGKILL)
                self.spool.ack(seq, header)
            if not self.abort.is_set() and os.path.exists(self.spool.status_path):
                self._post_status()
        except Aborted:
            pass

    def _post_status(self) -> None:
        with open(self.spool.status_path, "rb") as f:
            body = f.read()
        url = f"{self.cfg.server.rstrip('/')}/api/workflows/{self.cfg.workflow}/status"
        try:
            post(url, self.cfg.token, body, gzipped=False, abort=self.abort, what="status")
        except Permanent as exc:
            log.error("status refused for good: %s", exc)
        os.unlink(self.spool.status_path)


Entry = tuple[str, str, int, str, Any]  # source key, stream, timestamp ns, message, cursor


class Collector(threading.Thread):
    """Turns lines from the sources into batches (<= 0.2 s, <= 1 MB) in the spool."""

    def __init__(self, cfg: Config, spool: Spool, lines: queue.Queue[Any],
                 cursors: dict[str, Any], seq: int, sources: int) -> None:
        super().__init__(name="collector", daemon=True)
        self.spool, self.lines, self.cursors, self.seq = spool, lines, dict(cursors), seq
        self.sources = sources
        self.limit = min(BATCH_BYTES, spool.cap)  # a batch never overfills the spool alone
        self.base = {"workflow_id": cfg.workflow, "kind": cfg.kind, "job_id": cfg.job,
                     "step": cfg.step}
        self.parts: list[bytes] = []
        self.size = 0
        self.last_ts = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except Aborted:
            pass
        except BaseException as exc:  # noqa: BLE001 - raised again by the main thread
            log.exception("shipping stopped; the job goes on (its output still passes "
                          "through) but its lines are no longer sent")
            self.error = exc
            while self.sources:  # never block the job: take and drop what the sources read
                if self.lines.get() is None:
                    self.sources -= 1

    def _run(self) -> None:
        first = 0.0
        while self.sources:
            timeout = max(0.0, first + BATCH_SECONDS - time.monotonic()) if self.parts else 1.0
            try:
                chunk = self.lines.get(timeout=timeout)
            except queue.Empty:
                chunk = []
            if chunk is None:
                self.sources -= 1
                continue
            for key, stream, ts, message, cursor in chunk:
                event = dict(self.base, stream=stream, timestamp=rfc3339(ts), message=message)
                part = json.dumps(event, ensure_ascii=False).encode("utf-8", "replace")
                if self.parts and self.size + len(part) + 2 > self.limit:
                    self.flush()
                if not self.parts:
                    first = time.monotonic()
                self.parts.append(part)
                self.size += len(part) + 1
                self.last_ts = ts
                if cursor is not None:
                    self.cursors[key] = cursor
            # at most 0.2 s, and sooner when nothing more is waiting to be read and the
            # sender is idle: low delay for a slow job, big batches for a fast one
            if self.parts and (time.monotonic() - first >= BATCH_SECONDS
                               or (self.lines.empty() and self.spool.idle())):
                self.flush()
        self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        self.seq += 1
        body = gzip.compress(b"[" + b",".join(self.parts) + b"]", compresslevel=5)
        self.cursors = {key: file_cursor(c) for key, c in self.cursors.items()}
        header = {"seq": self.seq, "cursors": self.cursors, "last_ts": self.last_ts,
                  "lines": len(self.parts)}
        self.spool.put(header, body)
        self.parts, self.size = [], 0
        self.cursors = dict(self.cursors)


def file_cursor(cursor: Any) -> Any:
    """A file cursor as a batch records it, [dev, inode, offset, crc32 of the CHECK_BYTES
    before offset, crc32 of the file's head], from a line's (dev, inode, offset, the bytes
    read, where the line ends in them, crc32 of the head): one digest per batch, not per
    line. A cursor read back from the spool is already one."""
    if not isinstance(cursor, tuple):
        return cursor
    dev, ino, offset, ctx, stop, head = cursor
    window = zlib.crc32(ctx[max(0, stop - CHECK_BYTES):stop])
    return [dev, ino, offset, window, window if offset <= CHECK_BYTES else head]


class Splitter:
    """Bytes in, lines out: complete lines at once, a partial one when told to."""

    def __init__(self, key: str, stream: str, clock: Clock, out: queue.Queue[Any]) -> None:
        self.key, self.stream, self.clock, self.out = key, stream, clock, out
        self.buf = b""
        self.since = 0.0  # when the buffer's partial line was last extended
        self.before = b""  # a file's CHECK_BYTES before self.buf (for the cursors' digests)
        self.head = b""  # a file's first CHECK_BYTES, once read
        self.head_crc = 0

    def start_at(self, before: bytes, head: bytes) -> None:
        """A file (again) read from the offset `before` ends at; `head`: its first
        CHECK_BYTES, or b"" if the offset is within them (they are in `before`)."""
        self.before, self.head = before, head
        self.head_crc = zlib.crc32(head)

    def feed(self, data: bytes, end: tuple[int, int, int] | None) -> None:
        """`end`: (dev, inode, offset after `data`) for a file, None for a pipe."""
        buf = self.buf + data
        ctx = memoryview(self.before + buf) if end is not None else None
        if ctx is not None and len(self.head) < CHECK_BYTES and end[2] == len(ctx):
            self.head = bytes(ctx[:CHECK_BYTES])  # ctx starts at the file's start
            self.head_crc = zlib.crc32(self.head)
        lines: list[Entry] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start, start + MAX_LINE_BYTES)
            if nl < 0:
                if len(buf) - start < MAX_LINE_BYTES:
                    break
                nl = start + MAX_LINE_BYTES - 1  # an overlong line: send it in pieces
            lines.append(self._entry(buf[start:nl + 1], end, len(buf) - nl - 1, ctx))
            start = nl + 1
        if ctx is not None:
            cut = len(self.before) + start
            self.before = bytes(ctx[max(0, cut - CHECK_BYTES):cut])
        self.buf = buf[start:]
        self.since = time.monotonic()
        if lines:
            self.out.put(lines)

    def flush_partial(self, end: tuple[int, int, int] | None, force: bool = False) -> None:
        if self.buf and (force or time.monotonic() - self.since >= PARTIAL_SECONDS):
            ctx = memoryview(self.before + self.buf) if end is not None else None
            self.out.put([self._entry(self.buf, end, 0, ctx)])
            if ctx is not None:
                self.before = bytes(ctx[-CHECK_BYTES:])
            self.buf = b""

    def _entry(self, raw: bytes, end: tuple[int, int, int] | None, after: int,
               ctx: memoryview | None) -> Entry:
        if raw.endswith(b"\n"):
            raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        cursor = None  # digested only if it is the one a batch records (file_cursor)
        if end is not None and ctx is not None:
            cursor = (end[0], end[1], end[2] - after, ctx, len(ctx) - after, self.head_crc)
        return (self.key, self.stream, self.clock.next(), raw.decode("utf-8", "replace"),
                cursor)


class FileFollower(threading.Thread):
    """tail -F: waits for the file, reads on after rotation (the old file to its end, then
    the new one) and truncation, sends a last line without newline after a short delay."""

    def __init__(self, spec: str, clock: Clock, out: queue.Queue[Any],
                 cursor: list[int] | None) -> None:
        super().__init__(name=f"follow {spec}", daemon=True)
        path, _, stream = spec.rpartition(":")
        if stream not in ("stdout", "stderr"):
            path, stream = spec, "stdout"
        self.path, self.out, self.cursor = path, out, cursor
        self.splitter = Splitter(spec, stream, clock, out)
        self.finishing = threading.Event()

    def _open(self) -> tuple[Any, tuple[int, int], int, bytes] | None:
        """The file to read, its identity, the offset to read from and the CHECK_BYTES
        before that offset."""
        candidates = [self.path]
        cursor, self.cursor = self.cursor, None
        if cursor:  # after a restart: the file we were in, even if rotated meanwhile
            folder = os.path.dirname(self.path) or "."
            with contextlib.suppress(OSError):
                candidates += [e.path for e in os.scandir(folder) if e.is_file()]
        for path in candidates:
            try:
                f = open(path, "rb", buffering=0)  # noqa: SIM115 - followed
            except OSError:
                continue
            st = os.fstat(f.fileno())
            ident = (st.st_dev, st.st_ino)
            if cursor and list(ident) == cursor[:2]:
                if len(cursor) < 5:  # a cursor of a shipper before digests: trust the inode
                    offset = cursor[2] if st.st_size >= cursor[2] else 0
                    f.seek(offset)
                    self.splitter.start_at(b"", b"")
                    return f, ident, offset, b""
                found = self._resume(f, cursor)
                if found is not None:
                    return found
                log.info("%s: not the file the last run was in (the bytes before its "
                         "offset changed)", path)  # that file is gone; this one is new
            elif path == self.path and not cursor:
                self.splitter.start_at(b"", b"")
                return f, ident, 0, b""
            f.close()
        if cursor:  # the file we were in is gone: the path is a new file, from its start
            return self._open()
        return None

    def _resume(self, f: Any, cursor: list[int]) -> tuple[Any, tuple[int, int], int,
                                                          bytes] | None:
        """The cursor's file at its offset, if the bytes the cursor digested are there."""
        offset = cursor[2]
        n = min(CHECK_BYTES, offset)
        before = os.pread(f.fileno(), n, offset - n)
        head = os.pread(f.fileno(), CHECK_BYTES, 0) if offset > CHECK_BYTES else b""
        if (len(before) != n or zlib.crc32(before) != cursor[3]
                or zlib.crc32(head or before) != cursor[4]):
            return None
        f.seek(offset)
        self.splitter.start_at(before, head)
        st = os.fstat(f.fileno())
        return f, (st.st_dev, st.st_ino), offset, before

    def _replaced(self, f: Any, pos: int, tail: bytes) -> bool:
        """Are the bytes before `pos` no longer those read (truncated and rewritten)?"""
        return bool(pos) and os.pread(f.fileno(), len(tail), pos - len(tail)) != tail

    def run(self) -> None:
        f: Any = None
        while True:
            if f is None:
                finishing = self.finishing.is_set()
                opened = self._open()
                if opened is None:
                    if finishing:
                        break
                    time.sleep(POLL_SECONDS)
                    continue
                f, ident, pos, tail = opened
            finishing = self.finishing.is_set()  # before the read: nothing written before
            data = f.read(1 << 16)                # the end was signalled is left unread
            end = (ident[0], ident[1], pos)
            # truncated (copytruncate), or truncated and rewritten, maybe past our offset
            # already, since the last read: then `data` is the new content's, not the rest
            # of what was read before (unless the file changed just after this read); the
            # bytes before our offset tell
            if (not data and os.fstat(f.fileno()).st_size < pos
                    or self._replaced(f, pos, tail)):
                if data and os.pread(f.fileno(), len(data), pos) != data:
                    pos += len(data)  # read just before the file changed: the old file's
                    end = (ident[0], ident[1], pos)
                    self.splitter.feed(data, end)
                log.info("%s truncated: reading from its start", self.path)
                self.splitter.flush_partial(end, force=True)
                self.splitter.start_at(b"", b"")
                f.seek(0)
                pos, tail = 0, b""
                continue
            if data:
                pos += len(data)
                tail = (tail + data)[-CHECK_BYTES:]
                self.splitter.feed(data, (ident[0], ident[1], pos))
                continue
            try:
                st = os.stat(self.path)
                now = (st.st_dev, st.st_ino)
            except OSError:
                now = None
            if now is not None and now != ident:  # rotated: the old one is read to its end
                log.info("%s rotated: following the new file", self.path)
                self.splitter.flush_partial(end, force=True)
                f.close()
                f = None
                continue
            self.splitter.flush_partial(end, force=finishing)
            if finishing:
                break
            time.sleep(POLL_SECONDS)
        if f is not None:
            f.close()
        self.out.put(None)


class PipeReader(threading.Thread):
    """A command's stdout or stderr: passed through unchanged, and split into lines."""

    def __init__(self, stream: str, fd: int, passthrough: int, clock: Clock,
                 out: queue.Queue[Any]) -> None:
        super().__init__(name=f"pipe {stream}", daemon=True)
        self.fd, self.passthrough, self.out = fd, passthrough, out
        self.splitter = Splitter(stream, stream, clock, out)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], PARTIAL_SECONDS / 2)
            if not ready:
                self.splitter.flush_partial(None)
                continue
            data = os.read(self.fd, 1 << 16)
            if not data:
                break
            self._write(data)
            self.splitter.feed(data, None)
        self.splitter.flush_partial(None, force=True)
        self.out.put(None)

    def _write(self, data: bytes) -> None:
        if self.passthrough < 0:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.passthrough, view):]
        except OSError:
            self.passthrough = -1  # our own stdout went away: keep shipping


def exit_code_of(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def run(cfg: Config) -> int:
    """Ship until the command ends (its exit code) or the files are done (0)."""
    try:
        uuid.UUID(cfg.workflow or "")
    except ValueError:
        raise UsageError(f"--workflow must be a workflow UUID, not {cfg.workflow!r}") from None
    if not cfg.server.startswith(("http://", "https://")):
        raise UsageError(f"--server must be an http:// or https:// URL, not {cfg.server!r}")
    if cfg.files and cfg.command:
        raise UsageError("give files to follow or a command after --, not both")
    if cfg.token and cfg.token.startswith("wf1.") and cfg.token.split(".")[1] != cfg.workflow:
        raise UsageError(f"the token writes workflow {cfg.token.split('.')[1]} only, not "
                         f"{cfg.workflow} (reana-log-sse token --workflow {cfg.workflow})")
    abort = threading.Event()
    spool = Spool(cfg.spool_dir or os.path.join(
        ".reana-log-sse-spool", f"{cfg.workflow}.{cfg.job or '-'}"), cfg.spool_max_bytes, abort)
    cursors, last_ts, seq = spool.position()
    clock = Clock(last_ts)
    lines: queue.Queue[Any] = queue.Queue(64)
    sender = Sender(cfg, spool, abort)
    sender.start()
    sources: list[Any] = []
    proc: subprocess.Popen[bytes] | None = None
    signals: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if proc is not None:  # the command decides; it sees the signal as from a terminal
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signum)
        else:
            if signals:
                abort.set()
            signals.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        if cfg.command:
            try:
                proc = subprocess.Popen(list(cfg.command), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, start_new_session=True)
            except OSError as exc:
                raise UsageError(f"cannot run {cfg.command[0]}: {exc}") from None
            assert proc.stdout is not None and proc.stderr is not None
            sources = [PipeReader("stdout", proc.stdout.fileno(), 1, clock, lines),
                       PipeReader("stderr", proc.stderr.fileno(), 2, clock, lines)]
        else:
            sources = [FileFollower(spec, clock, lines, cursors.get(spec)) for spec in cfg.files]
        collector = Collector(cfg, spool, lines, cursors, seq, len(sources))
        collector.start()
        for source in sources:
            source.start()
        status: int | None = None
        if proc is not None:
            rc = proc.wait()
            status = code = rc if rc >= 0 else 128 - rc
            for source in sources:  # a daemon the job left behind may hold its pipes open
                source.join(5)
                source.stop.set()
        elif sources:
            while not signals and not abort.is_set():
                if cfg.exit_code_file and exit_code_of(cfg.exit_code_file) is not None:
                    status = exit_code_of(cfg.exit_code_file)
                    break
                time.sleep(0.2)
            for source in sources:
                source.finishing.set()
        deadline = time.monotonic() + cfg.drain_timeout
        collector.join(cfg.drain_timeout)
        if collector.error is not None:
            raise collector.error
        if status is not None and not (cfg.job or cfg.step):
            log.info("no --job or --step: no job status to post (a workflow-level status "
                     "would end every stream of the workflow)")
        elif status is not None and not collector.is_alive():
            spool.put_status({
                "status": "finished" if status == 0 else "failed", "job_id": cfg.job,
                "step": cfg.step, "exit_code": status,
                "finished_at": rfc3339(time.time_ns())})
        spool.finish()
        sender.join(max(0.0, deadline - time.monotonic()))
        if sender.is_alive() or collector.is_alive():
            abort.set()
            sender.join(5)
            log.error("gave up after --drain-timeout %gs: %d batches stay in %s; run the "
                      "shipper again with that spool to send them", cfg.drain_timeout,
                      len(spool.pending), spool.path)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc is not None and proc.poll() is None:
            proc.kill()
    return code


def setup_logging(cfg: Config) -> None:
    handler: logging.Handler = (logging.FileHandler(cfg.log_file) if cfg.log_file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s reana-log-sse ship %(levelname)s: "
                                           "%(message)s"))
    log.addHandler(handler)
    log.setLevel(cfg.log_level.upper())
    log.propagate = False


def main(argv: list[str] | None = None) -> int:
    """`python3 -I ship.py [options] [FILE[:stdout|:stderr]...] [-- CMD ARGS...]`"""
    args = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, command = args[:i], args[i + 1:]
    parser = argparse.ArgumentParser(prog="ship.py", description=__doc__.split("\n\n")[0])
    for flag, env, default, kind, text in OPTIONS:
        value = os.environ.get(env) or default
        extra: dict[str, Any] = {"choices": kind} if isinstance(kind, tuple) else {"type": kind}
        parser.add_argument(flag, default=value, help=f"{text} (env {env})", **extra)
    parser.add_argument("files", nargs="*", metavar="FILE[:stdout|:stderr]")
    ns = parser.parse_args(args)
    values = vars(ns)
    values["files"], values["command"] = tuple(values["files"]), tuple(command)
    cfg = Config(**values)
    setup_logging(cfg)
    try:
        return run(cfg)
    except UsageError as exc:
        parser.error(str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())
