"""Optional: sample the service process with py-spy during each scenario and keep the
functions where it spends its time (self time, and inclusive time of our own code)."""

from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None, name: str) -> Iterator[None]:
    """Record `pid` while the block runs into out/profile-<name>.txt (collapsed stacks)."""
    exe = shutil.which("py-spy")
    if out is None or exe is None:
        yield
        return
    raw = out / f"profile-{name}.txt"
    proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "200", "--format",
                             "raw", "--output", str(raw), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if raw.exists():
            (out / f"profile-{name}-top.txt").write_text(top(raw))


def _frame(frame: str) -> str:
    # "function (path/to/file.py:line)" -> "function (file.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({path.rsplit('site-packages/', 1)[-1]})"


def top(raw: Path, n: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        k = int(count)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += k
        own[frames[-1]] += k
        for f in set(frames):
            if "reana_log_sse" in f:
                incl[f] += k
    lines = [f"{total} samples", "", "self time:"]
    lines += [f"{100 * c / total:5.1f}%  {f}" for f, c in own.most_common(n)]
    lines += ["", "inclusive time, reana_log_sse code:"]
    lines += [f"{100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(n)]
    return "\n".join(lines) + "\n"
