"""The real peer: nginx + nchan (a C pub/sub server with an EventSource endpoint), run in
the same bench, with the same reader, pace and bytes as our delivery runs.

When `nginx` and the nchan module are on the machine (Debian: `apt-get install nginx
libnginx-mod-nchan`), `nchan_run` starts nginx from its own prefix in a temporary
directory (conf, pid, error log and temp paths there; `daemon off`, `master_process on`,
so it runs as any user) with ONE worker process, to compare with our one service
process, and the nchan module loaded with `load_module`. A publisher location takes
POSTs; an EventSource subscriber location serves followers, on a fresh channel per run.

Set up the way that serves nchan best: one `data:` line per batch (a body without a
newline: nchan's EventSource writes a multi-line body as one `data:` line per line, which
costs it more), request bodies kept in memory (no temp file), new followers starting at
the newest message. The batch's bytes on the wire are the same as ours: `batch` x
`frame_bytes`, its one data line starting with the batch's last line id, which the
followers (rawhttp.Follower, reading the number after `\\ndata: ` instead of after
`\\nid: `: nchan sends its own `id: <time>:<tag>`) record as ours. Publishing is paced by
harness.paced, like our ingest; the time is taken just before each publish POST.

Figures: p50/p99/max from publish to parsed, the achieved rate, and the nginx worker's CPU
time (from /proc, via psutil) over the publishing phase, per follower per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from reana_log_sse.bench import harness as h
from reana_log_sse.bench.rawhttp import Follower, close_all, open_followers
from reana_log_sse.bench.report import Row

INSTALL = ("nginx with the nchan module not found: the nchan peer was not run "
           "(to compare with it: apt-get install nginx libnginx-mod-nchan)")
MODULE = "ngx_nchan_module.so"
MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/lib64/nginx/modules",
               "/usr/local/nginx/modules", "/usr/share/nginx/modules",
               "/etc/nginx/modules", "/usr/local/lib/nginx/modules")

CONF = """\
load_module {module};
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections {connections};
    multi_accept on;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 16m;
    client_body_buffer_size 16m;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location ~ ^/pub/(\\w+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
        }}
        location ~ ^/sub/(\\w+)$ {{
            nchan_subscriber eventsource;
            nchan_channel_id $1;
            nchan_subscriber_first_message newest;
        }}
    }}
}}
"""


class NchanFollower(Follower):
    """The same reader as ours; the batch's last id follows `data: `."""

    marker = b"\ndata: "


def find() -> tuple[str, str] | None:
    """(the nginx binary, the nchan module) if both are on this machine."""
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/nginx/sbin/nginx") if os.access(p, os.X_OK)),
        None)
    if nginx is None:
        return None
    for d in MODULE_DIRS:
        if os.path.isfile(os.path.join(d, MODULE)):
            return nginx, os.path.join(d, MODULE)
    return None


def version(nginx: str) -> str:
    """`nginx/1.22.1 + nchan 1:1.3.6+dfsg-2` (the package's version when dpkg knows it)."""
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    text = (out.stderr or out.stdout).strip().rpartition(" ")[2] or "nginx"
    with contextlib.suppress(OSError):
        pkg = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"],
                             capture_output=True, text=True, check=False)
        if pkg.returncode == 0 and pkg.stdout:
            return f"{text} + nchan {pkg.stdout.strip()}"
    return f"{text} + nchan"


class Nginx:
    """nginx with nchan from its own prefix; `worker` is its one worker process."""

    def __init__(self, directory: Path, nginx: str, module: str, connections: int) -> None:
        self.dir = directory
        self.nginx = nginx
        self.port = h.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        nofile = h.raise_fd_limit()
        conf = CONF.format(module=module, dir=directory, port=self.port,
                           connections=connections, nofile=min(nofile, 2 * connections))
        (directory / "nginx.conf").write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker: psutil.Process | None = None

    def start(self) -> Nginx:
        log = self.dir / "error.log"
        self.proc = subprocess.Popen(
            [self.nginx, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
             "-e", str(log)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: "
                                   f"{log.read_text()[-2000:] if log.exists() else ''}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1):
                workers = psutil.Process(self.proc.pid).children()
                if workers:
                    self.worker = workers[0]
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("nginx not listening in 30 s")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        assert self.worker is not None
        t = self.worker.cpu_times()  # /proc/<pid>/stat
        return float(t.user + t.system)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nginx: fast shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def nchan_run(directory: Path | None = None, *, followers: int, rate: float,
                    duration: float, batch: int, frame_bytes: int) -> dict[str, Any]:
    """`followers` EventSource subscribers of one nchan channel while `rate` lines/s are
    published in `batch`-line messages of `batch` x `frame_bytes` bytes on the wire."""
    found = find()
    if found is None:
        raise RuntimeError(INSTALL)
    tmp = None
    if directory is None:
        tmp = tempfile.TemporaryDirectory(prefix="reana-log-sse-nchan-")
        directory = Path(tmp.name)
    # with followers + 256, nginx 1.22 + nchan warned "worker_connections are not enough,
    # reusing connections" and closed 77 of 5,000 subscribers: room to spare
    server = Nginx(directory, *found, connections=2 * followers + 1024)
    try:
        server.start()
        return await _run(server, version(found[0]), followers, rate, duration, batch,
                          frame_bytes)
    finally:
        server.stop()
        if tmp is not None:
            tmp.cleanup()


async def each(followers: tuple[int, ...], *, rate: float, duration: float, batch: int,
               frame_bytes: int, echo: Callable[[str], None]) -> dict[int, dict[str, Any]] | None:
    """nchan_run at each number of followers; None, and a line saying how to install it,
    when nginx + nchan is not on this machine."""
    if find() is None:
        echo(INSTALL)
        return None
    out: dict[int, dict[str, Any]] = {}
    for n in followers:
        echo(f"[{time.strftime('%H:%M:%S')}] nginx + nchan: {n} followers ...")
        try:
            out[n] = await nchan_run(followers=n, rate=rate, duration=duration, batch=batch,
                                     frame_bytes=frame_bytes)
        except (RuntimeError, OSError) as e:  # a peer that fails does not stop the bench
            out[n] = {"error": str(e)[:300]}
    return out


async def _run(server: Nginx, name: str, followers: int, rate: float, duration: float,
               batch: int, frame_bytes: int) -> dict[str, Any]:
    channel = uuid.uuid4().hex
    held: list[Follower] = []
    # nchan frames a message as `id: <time>:<tag>\ndata: <body>\n\n`: the body is what
    # makes the batch's bytes on the wire ours (`batch` x `frame_bytes`)
    size = max(16, batch * frame_bytes - len(b"id: 1796628502:0\ndata: \n\n"))
    try:
        held, refused = await open_followers(server.url, [f"/sub/{channel}"] * followers,
                                             cls=NchanFollower)
        await asyncio.sleep(0.5)
        sent: list[tuple[float, int]] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            async def send(lines: int) -> None:
                seq = lines + batch
                head = b"%d " % seq
                data = head + b"x" * (size - len(head))
                t = time.time()
                r = await client.post(f"/pub/{channel}", content=data)
                r.raise_for_status()
                sent.append((t, seq))

            cpu0, t0 = server.cpu_seconds(), time.monotonic()
            await h.paced(send, rate, duration, batch)
            cpu1, t1 = server.cpu_seconds(), time.monotonic()
        stats = await h.delivery_stats(held, sent, batch, t1 - t0, cpu1 - cpu0)
        return {"server": name, "followers": followers, "opened": len(held),
                "refused": len(refused), "refusals": sorted(set(refused))[:5],
                "rate": rate, **stats,
                "wire_bytes_per_batch": size + len(b"id: 1796628502:0\ndata: \n\n")}
    finally:
        close_all(held)


# -- rows ------------------------------------------------------------------------------------

GOAL_NS = (100, 1000)  # p99 from commit <= nchan's p99 from publish at these N
CPU_GOAL_N = 1000  # service CPU per follower per batch <= nchan's at this N


def cpu_us_per_delivery(run: dict[str, Any]) -> float | None:
    """Our service's CPU time (ingest included) per follower per POSTed batch."""
    seconds = run.get("cpu_seconds", {}).get("service")
    batches = run.get("batches", 0)
    if seconds is None or not batches:
        return None
    return float(seconds) / (run["followers"] * batches) * 1e6


def _goal(value: float | None, peer: float | None, absent: bool) -> tuple[str, bool | None]:
    if absent:
        return "<= nchan's: no peer", None
    if value is None or peer is None:
        return "<= nchan's", None
    return "<= nchan's", value <= peer


def rows(peer: dict[int, dict[str, Any]] | None, ours: list[dict[str, Any]],
         sockets: dict[int, dict[str, Any]]) -> list[Row]:
    """nchan's rows beside ours at the same N, then the goal rows. `peer` is None when
    nginx + nchan is not on this machine: the goals say "no peer"."""
    one = {x["followers"]: x for x in ours if x["layout"] == "one workflow"}
    out: list[Row] = []
    for n, p in sorted((peer or {}).items()):
        if "error" in p:
            out.append(Row("2 latency", f"nginx + nchan, {n:,} followers", math.nan, "ms",
                           note=f"NOT MEASURED: {p['error']}"))
            continue
        mine = one.get(n)
        out.append(Row(
            "2 latency", f"nginx + nchan ({p['server']}, 1 worker), one data line per batch, "
            f"{n:,} follower{'' if n == 1 else 's'}, {p['achieved_rate']:,.0f} of "
            f"{p['rate']:,.0f} lines/s: p99 "
            f"from publish (p50 {p['p50']:.1f}, max {p['max']:.1f} ms)", p["p99"], "ms",
            "ours, p99 from commit" if mine else "", mine["p99"] if mine else None,
            cpu={"service": round(p["cpu_share"])},
            note="; ".join(x for x in (
                f"RATE MISSED: publishing held {p['achieved_rate']:,.0f} of {p['rate']:,.0f} "
                "lines/s" if p["achieved_rate"] < 0.95 * p["rate"] else "",
                f"{p['undelivered']:,} batch deliveries missing" if p["undelivered"] else "",
                f"{p['refused']:,} refused ({', '.join(p['refusals'])})" if p["refused"]
                else "",
                f"nginx worker CPU {p['cpu_us_per_delivery']:.1f} µs per follower per batch "
                "(CPU column: the worker's %)") if x)))
    absent = peer is None
    base = peer or {}
    mine = one.get(CPU_GOAL_N)
    if mine is not None:
        ours_cpu = cpu_us_per_delivery(mine)
        theirs = base.get(CPU_GOAL_N, {}).get("cpu_us_per_delivery")
        floor = sockets.get(CPU_GOAL_N, {}).get("cpu_us_per_delivery")
        goal, met = _goal(ours_cpu, theirs, absent)
        out.append(Row("2 vs nchan", f"server CPU per follower per batch, {CPU_GOAL_N:,} "
                       "followers: our service (ingest included)",
                       math.nan if ours_cpu is None else ours_cpu, "µs",
                       "" if absent else "nginx + nchan worker, one data line", theirs, goal,
                       met, note="" if floor is None
                       else f"bare floor (same bytes, no ingest): {floor:.1f} µs"))
    for n in GOAL_NS:
        mine = one.get(n)
        if mine is None:
            continue
        theirs = base.get(n, {}).get("p99")
        goal, met = _goal(mine["p99"], theirs, absent)
        out.append(Row("2 vs nchan", f"p99 from commit, {n:,} followers: ours", mine["p99"],
                       "ms", "" if absent else "nchan p99 from publish", theirs, goal, met,
                       note=f"ours from POST: p99 {mine['from_post']['p99']:.1f} ms"
                       if mine.get("from_post") else ""))
    return out
