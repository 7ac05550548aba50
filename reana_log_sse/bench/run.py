"""Runs the scenarios in order against one service process and turns results into rows."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from reana_log_sse.bench import fanout as fo
from reana_log_sse.bench import harness as h
from reana_log_sse.bench import latency as lat
from reana_log_sse.bench import nchan, shipper, soak, tap
from reana_log_sse.bench import socketfloor as sf
from reana_log_sse.bench import throughput as tp
from reana_log_sse.bench.profile import py_spy
from reana_log_sse.bench.report import (
    SHARED_MACHINE,
    Row,
    docs,
    kept_changes,
    plot,
    readme_block,
    replace_block,
    text_table,
    write_json,
)

GIB = 2**30


def _limit(cpu: dict[str, float], cores: int) -> str:
    """Which resource was saturated, read from the CPU shares."""
    total = sum(cpu.values())
    parts = [f"service {cpu['service']:.0f}%", f"PostgreSQL {cpu['postgres']:.0f}%",
             f"load generator {cpu['loadgen']:.0f}%", f"other processes {cpu['other']:.0f}%"]
    text = f"CPU (% of one core): {', '.join(parts)}: "
    if cpu["service"] >= 85:
        text += "bound by the service's one event loop (one core)"
    elif total >= 85 * cores:
        text += f"bound by the machine's {cores} cores, shared"
    elif cpu["postgres"] >= 85:
        text += "bound by PostgreSQL"
    else:
        text += "not CPU-bound (commit latency, round trips or pacing)"
    if cpu["other"] >= 30:
        text += " (other processes on the machine disturbed this figure)"
    return text


async def run(opts: dict[str, Any]) -> str:
    echo, sizes, only, out = opts["echo"], opts["sizes"], opts["only"], opts["out"]
    with h.database(opts["database_url"], opts["data_dir"]) as (url, embedded):
        machine = h.machine_info(url)
        cores = int(machine["cores"] or 1)
        echo(SHARED_MACHINE.format(cores=cores))
        tree = opts.get("service_tree")
        server = h.Server(url, tree=tree.resolve() if tree else None).start()
        try:
            results = await _scenarios(server, url, sizes, only, out if opts["profile"] else None,
                                       echo, opts.get("soak_seconds", 1200.0))
        finally:
            server.stop()
    results["machine"] = machine
    rows, notes = rows_and_notes(results, sizes, cores)
    table = text_table(rows)
    extra = {k: v for k, v in results.items() if k != "machine"}
    write_json(out / "results.json", machine, rows, {"size": opts["size"], **extra})
    title = (f"reana-log-sse delivery latency, {sizes.rate:,.0f} lines/s ingested, "
             f"{machine['date']}\n{machine['cpu']}, {cores} cores shared by the service, "
             "PostgreSQL and the load generator (other processes: see the table's CPU column)")
    if results.get("latency"):
        plot(out / "perf-latency.png", results["latency"], results.get("floor"),
             results.get("polling", []), title, results.get("socket_floor"),
             results.get("nchan"))
    if opts["write_docs"]:
        d = opts["docs_dir"]
        d.mkdir(parents=True, exist_ok=True)
        if (out / "perf-latency.png").exists():
            shutil.copyfile(out / "perf-latency.png", d / "perf-latency.png")
        page = d / "performance.md"
        changes = kept_changes(page.read_text()) if page.exists() else ""
        page.write_text(docs(machine, rows, notes, "perf-latency.png", opts["command"],
                             changes))
        echo(_update_readme(opts["readme"], d, machine, rows, notes))
    footer = [f"{machine['date']} | {machine['cpu']} | {cores} cores | "
              f"PostgreSQL {machine['postgresql']} | Python {machine['python']}",
              SHARED_MACHINE.format(cores=cores), "", *notes, "",
              f"results: {out / 'results.json'}" + (f", {out / 'perf-latency.png'}"
                                                     if results.get("latency") else "")]
    return table + "\n\n" + "\n".join(footer)


def _opening_row(o: dict[str, Any]) -> Row:
    """Streams opened at once: seconds from the first connect until every stream has its
    first frame and then a new line (fanout.opening); the goal is 5,000 in 2 s."""
    layout = "one workflow" if o["workflows"] == 1 else f"{o['workflows']:,} workflows"
    goal_rate = 5000 / fo.OPEN_GOAL_SECONDS
    ok = o["live"] == o["streams"] and o["rate"] >= goal_rate
    return Row("3 fan-out", f"{o['streams']:,} streams opened at once, {layout} (first "
               f"frames in {o['first_seconds']:.2f} s, then a new line to all in "
               f"{o['live_seconds']:.2f} s)", o["seconds"], "s",
               goal=f"5,000 in <= {fo.OPEN_GOAL_SECONDS:g} s (>= {goal_rate:,.0f}/s)",
               met=ok, cpu=o["cpu"],
               note=f"{o['rate']:,.0f} streams/s; CPU per stream: service "
               f"{o['service_cpu_us_per_stream']:,.0f} µs, load generator "
               f"{o.get('loadgen_cpu_us_per_stream', 0):,.0f} µs; "
               f"{o.get('opening_reads', 0):,.0f} opening reads"
               + (f"; {o['streams'] - o['live']:,} not live" if o["live"] < o["streams"]
                  else "")
               + (f"; {o['refused']:,} refused ({', '.join(o['refusals'])})"
                  if o["refused"] else ""))


async def _scenarios(server: h.Server, url: str, s: Any, only: set[str], prof: Any,
                     echo: Any, soak_seconds: float = 1200.0) -> dict[str, Any]:
    meter = h.CpuMeter(server)
    pid = server.proc.pid if server.proc else 0
    r: dict[str, Any] = {}

    def step(name: str) -> contextlib.AbstractContextManager[None]:
        echo(f"[{time.strftime('%H:%M:%S')}] {name} ...")
        return py_spy(pid, prof, name)

    async with h.CommitLog(url) as commits:
        if "ingest" in only:
            with step("ingest"):
                r["ingest"] = await tp.ingest(server, meter, lines=s.ingest_lines,
                                              batch=s.ingest_batch, senders=s.senders)
        if "latency" in only or "polling" in only:
            with step("floor"):
                r["floor"] = await lat.floor(url, s.floor_samples)
        if "latency" in only:
            r["socket_floor"] = {}
            size = h.frame_bytes()
            for n in sorted({*s.followers, *(n for n, _ in s.spread)}):
                with step(f"socket floor: {n} sockets"):
                    r["socket_floor"][n] = await sf.socket_floor(
                        url, followers=n, rate=s.rate, duration=s.duration,
                        batch=s.live_batch, frame_bytes=size)
            r["latency"] = []
            runs = [(n, 1, "one workflow") for n in s.followers]
            runs += [(n, w, "spread") for n, w in s.spread]
            for n, w, layout in runs:
                echo(f"[{time.strftime('%H:%M:%S')}] latency: {n} followers of {w} "
                     "workflow(s) ...")
                r["latency"].append(await lat.sse_run(
                    server, meter, commits, followers=n, workflows=w, rate=s.rate,
                    duration=s.duration, batch=s.live_batch, layout=layout,
                    measured=lambda n=n, w=w: py_spy(pid, prof, f"latency-{n}x{w}")))
            r["nchan"] = await nchan.each(s.followers, rate=s.rate, duration=s.duration,
                                          batch=s.live_batch, frame_bytes=size, echo=echo)
        if "polling" in only:
            r["polling"] = []
            for n in s.polling:
                with step(f"polling-{n}"):
                    r["polling"].append(await lat.polling_run(
                        server, meter, commits, clients=n, interval=s.poll_interval,
                        rate=s.rate, duration=s.duration, batch=s.live_batch))
        if "fanout" in only:
            # a service process of its own, as the bare holder's: in the shared one, the
            # memory earlier scenarios' streams freed held many of the new streams, and
            # RSS per stream came out at half its cost in a fresh process
            fresh = h.Server(url, tree=server.tree).start()
            try:
                echo(f"[{time.strftime('%H:%M:%S')}] fanout ...")
                with py_spy(fresh.proc.pid if fresh.proc else 0, prof, "fanout"):
                    r["fanout"] = await fo.fanout(fresh, h.CpuMeter(fresh), streams=s.fanout,
                                                  workflows=s.fanout_workflows)
            finally:
                fresh.stop()
            r["opening"] = []
            for n, w in s.opening:
                with step(f"opening: {n} streams of {w} workflow(s) at once"):
                    r["opening"].append(await fo.opening(server, meter, streams=n,
                                                         workflows=w))
        if "catchup" in only:
            with step("catchup"):
                r["catchup"] = await tp.catchup(server, meter, lines=s.catchup_lines)
        if "cli" in only:
            if tp.cli_available():
                with step("cli"):
                    r["cli"] = await tp.cli(server, meter, lines=s.cli_lines)
            else:
                r["cli"] = None
        if "reana-client" in only:
            from reana_log_sse.bench import reana_client as rc  # needs a checkout's tests/

            with step("reana-client"):
                r["reana_client"] = await asyncio.to_thread(
                    rc.run, s.reana_client_lines, 0.5, 10, database_url=url)
        if "tap" in only:
            with step("tap"):
                r["tap"] = await tap.tap_vs_vector(url, samples=s.tap_samples,
                                                   tree=server.tree)
            name = f"tap: {s.tap_follows} busy follows"
            echo(f"[{time.strftime('%H:%M:%S')}] {name} ...")
            # its own service process: the profile (if any) is of that one
            r["tap_busy"] = await tap.busy(url, commits, follows=s.tap_follows,
                                           rate=s.tap_rate, seconds=s.tap_seconds,
                                           tree=server.tree,
                                           measured=lambda p: py_spy(p, prof, name))
        if "ship" in only:
            with step("ship"):
                r["ship"] = await shipper.throughput(server, meter, lines=s.ship_lines)
                r["ship"]["latency"] = await shipper.latency(server, meter, rate=s.ship_rate,
                                                             duration=s.duration)
        if "soak" in only:
            with step(f"soak: {soak_seconds:,.0f} s"):
                r["soak"] = await soak.soak(server, meter, seconds=soak_seconds, echo=echo)
    await asyncio.sleep(0)
    return r


def _update_readme(readme: Path, docs_dir: Path, machine: dict[str, Any], rows: list[Row],
                   notes: list[str]) -> str:
    if not readme.exists():
        return f"{readme} not found: only {docs_dir}/performance.md written"
    base = readme.resolve().parent
    rel = os.path.relpath(docs_dir.resolve(), base)
    block = readme_block(machine, rows, notes, f"{rel}/perf-latency.png",
                         f"{rel}/performance.md")
    text = replace_block(readme.read_text(), block)
    if text is None:
        return f"{readme} has no bench markers: its Performance table was not updated"
    readme.write_text(text)
    return f"updated the Performance section of {readme}"


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _ms(run: dict[str, Any]) -> str:
    return f"p50 {run['p50']:.1f}, max {run['max']:.1f} ms"


def rows_and_notes(r: dict[str, Any], s: Any, cores: int) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []
    if "ingest" in r:
        i = r["ingest"]
        ok = i["rate"] >= 0.6 * i["copy_rate"]  # issue 22: 0.6x raw COPY, same run
        stored = i.get("stored", i["lines"])
        counted = (f"accepted {i['accepted']:,}, stored {stored:,} of {i['lines']:,} sent"
                   + ("" if i["accepted"] == stored == i["lines"] else ": COUNTS DIFFER"))
        # CPU time per line: what a busy machine disturbs least
        per_line = {k: i["cpu"][k] / 100 * i["seconds"] / i["lines"] * 1e6
                    for k in ("service", "postgres")}
        counted += (f"; CPU per line: service {per_line['service']:.1f} µs, PostgreSQL "
                    f"{per_line['postgres']:.1f} µs (raw COPY: PostgreSQL "
                    f"{i['copy_cpu']['postgres'] / 100 * i['copy_seconds'] / i['lines'] * 1e6:.1f}"
                    " µs)")
        rows.append(Row("1 ingest", f"POST /ingest/vector, {i['batch']:,}-line gzip batches, "
                        f"{i['senders']} senders", i["rate"], "lines/s",
                        "raw COPY of the same rows", i["copy_rate"],
                        ">= 0.6x", ok, i["cpu"], counted))
        notes.append(f"Ingest: {_limit(i['cpu'], cores)}. Raw COPY: "
                     f"{_limit(i['copy_cpu'], cores)}.")
    floor = r.get("floor")
    if floor:
        rows.append(Row("2 latency", "floor: committed NOTIFY -> LISTEN -> socket write, p99 "
                        f"(p50 {floor['p50']:.1f} ms)", floor["p99"], "ms"))
    sockets = r.get("socket_floor", {})
    for n, sf_run in sorted(sockets.items()):
        rows.append(Row("2 latency", f"floor: bare asyncio writing the same bytes to "
                        f"{_n(n, 'socket')}, p99 ({_ms(sf_run)})", sf_run["p99"], "ms",
                        note=sf.note(sf_run)))
    for run in r.get("latency", []):
        rows.append(_latency_row(run, sockets.get(run["followers"]), floor))
    if "latency" in r:
        rows += nchan.rows(r.get("nchan"), r["latency"], sockets)
        if r.get("nchan") is None:
            notes.append(nchan.INSTALL + ".")
    if r.get("latency"):
        worst = max(r["latency"], key=lambda x: x["followers"] * x["workflows"])
        notes.append(f"Delivery at {worst['followers']:,} followers ({worst['layout']}): "
                     f"{_limit(worst['cpu'], cores)}. Each line is written once per follower: "
                     f"{worst['followers'] * s.rate / max(1, worst['workflows']):,.0f} frames/s.")
    if "fanout" in r:
        f = r["fanout"]
        per = f["rss_per_stream"]
        projected = f["rss_before"] + 10_000 * per
        rows.append(Row("3 fan-out", f"streams held by one process, live (got a new line in "
                        f"{f['deliver_seconds']:.1f} s)", f["delivered"], "streams", "opened",
                        f["streams"], "10,000 within 1 GiB RSS",
                        f["delivered"] == f["streams"] and projected <= GIB, f["cpu"],
                        (f"{f['refused']:,} refused ({', '.join(f['refusals'])}); "
                         if f["refused"] else "") + f"RSS {f['rss_after'] / 2**20:,.0f} MiB"
                        + ("" if f["streams"] >= 10_000 else
                           f"; projected at 10,000: {projected / 2**20:,.0f} MiB")))
        bare = f["bare_rss_per_stream"]
        rows.append(Row("3 fan-out", "RSS per stream", per / 1024, "KiB",
                        "bare asyncio holder", bare / 1024, "<= 2x", per <= 2 * bare))
        notes.append(f"Fan-out: opening {f['streams']:,} streams, at most 200 connecting "
                     f"at once, ran at {f['connects_per_s']:,.0f}/s (each new stream costs "
                     "one opening read, shared with the streams of its workflow that open "
                     "alongside); memory is the service's per-stream tasks and buffers.")
    for o in r.get("opening", []):
        rows.append(_opening_row(o))
    if "catchup" in r:
        c = r["catchup"]
        others = (f"; 29 earlier days hold {c['other_lines']:,} lines of other workflows"
                  if c.get("other_lines") else "")
        rows.append(Row("4 catch-up", f"one follower joining {c['lines']:,} stored lines, "
                        f"then live ({c['live_ms']:.0f} ms{others})", c["rate"], "lines/s",
                        "COPY TO of the same rows", c["copy_rate"], ">= 0.5x",
                        c["rate"] >= 0.5 * c["copy_rate"], c["cpu"],
                        "CPU per line: " + ", ".join(
                            f"{who} {c['cpu'][k] / 100 * c['seconds'] / c['lines'] * 1e6:.2f} µs"
                            for k, who in (("service", "service"),
                                           ("postgres", "PostgreSQL")))))
        notes.append(f"Catch-up: {_limit(c['cpu'], cores)}.")
    sse_by_n = {x["followers"]: x for x in r.get("latency", []) if x["layout"] == "one workflow"}
    for p in r.get("polling", []):
        sse = sse_by_n.get(p["followers"])
        label = f"{_n(p['followers'], 'follower')}, polling every {p['interval']:g} s"
        rows.append(Row("5 polling", f"p99 latency, SSE vs {label}",
                        sse["p99"] if sse else math.nan, "ms", "polling p99", p["p99"],
                        cpu=p["cpu"], note=f"polling {_ms(p)}"))
        rows.append(Row("5 polling", f"DB reads (SSE: or handoffs)/s, SSE vs {label}",
                        sse["db_reads_per_s"] if sse else math.nan, "reads/s", "polling",
                        p["db_reads_per_s"]))
    if len(sse_by_n) > 1:
        lo, hi = min(sse_by_n), max(sse_by_n)
        a, b = sse_by_n[lo]["db_reads_per_s"], sse_by_n[hi]["db_reads_per_s"]
        rows.append(Row("5 polling", f"SSE DB reads (or handoffs)/s at "
                        f"{_n(hi, 'follower')} vs {lo:,}", b,
                        "reads/s", f"at {lo:,}", a, "independent of followers",
                        b <= 1.5 * a + 1))
        notes.append("Database reads: one read per committed batch per followed "
                     "workflow, whatever the number of its followers, or none when the "
                     "commit was this process's own and its lines were handed to the feed "
                     "(follow/handoff.py, counted in its place); a follower that falls "
                     "more than its queue behind reads its gap itself (catch-up reads). "
                     "Polling costs one read per client per interval.")
    if "cli" in r:
        c = r["cli"]
        if c is None:
            rows.append(Row("6 CLI", "`logs --json` to a pipe", math.nan, "lines/s",
                            note="NOT MEASURED: no `logs` command yet"))
            notes.append("CLI: not measured, the `logs` command did not exist in this tree.")
        else:
            rows.append(Row("6 CLI", f"`logs --follow --json` to a pipe, {c['lines']:,} lines "
                            f"(exit {c['exit']})", c["rate"], "lines/s",
                            "raw socket, same stream", c["raw_rate"], cpu=c["cpu"],
                            note=f"first line after {c['startup']:.2f} s (start-up)"
                            if c.get("startup") is not None else ""))
            notes.append(f"CLI: {_limit(c['cpu'], cores)} (the CLI's own process is "
                         "counted as load generator).")
    if "reana_client" in r:
        patched, polled, ours = r["reana_client"]
        rows.append(Row("9 reana-client", "`logs --follow`, patched (SSE), commit -> stdout, "
                        "p99", patched["p99_ms"], "ms", "`reana-log-sse logs --follow`",
                        ours["p99_ms"], "within 2x", patched["p99_ms"] <= 2 * ours["p99_ms"],
                        note=f"{patched['lines']}/{patched['of']} lines"))
        rows.append(Row("9 reana-client", "`logs --follow`, REANA's 10 s poll, p99",
                        polled["p99_ms"], "ms", "patched (SSE)", patched["p99_ms"],
                        note=f"median {polled['median_ms']:,.0f} ms; "
                        f"{polled['lines']}/{polled['of']} lines"))
        notes.append("reana-client: the real 0.95.0a6 from PyPI; patched by "
                     "integrations/reana-client/apply.py; its 10 s poll is REANA's own "
                     "follow loop (the patch's fallback, unchanged); one line every 0.5 s.")
    if "tap" in r:
        t = r["tap"]
        if "skipped" in t:
            rows.append(Row("7 tap", "quiet line, write -> follower", math.nan, "ms",
                            note=f"NOT MEASURED: {t['skipped']}"))
        else:
            v = t["vector"]
            rows.append(Row("7 tap", f"quiet line, write -> follower through the tap, p99 "
                            f"({t['samples']} lines, p50 {t['tap']['p50']:.1f} ms)",
                            t["tap"]["p99"], "ms", "Vector after >= 10 s idle, p99", v["p99"],
                            "well under 1 s", t["tap"]["p99"] < 1000,
                            note=f"Vector p50 {v['p50']:,.0f} ms (simulated read wait + "
                            f"measured ingest p50 {t['ingest']['p50']:.1f} ms)"))
            notes.append("Tap: Vector's idle read is simulated from its source "
                         "(file_watcher/mod.rs should_read: an idle file is tried every 10 s; "
                         "file_server.rs backoff up to 2,048 ms: U(0, 10.24 s)), plus up to "
                         "the 0.2 s batch timeout and a measured POST -> follower; the tap "
                         "is measured end to end through the fake apiserver and "
                         "kubernetes-asyncio.")
    if "tap_busy" in r:
        rows.extend(_busy_tap_rows(r["tap_busy"], r.get("tap")))
    if "ship" in r:
        sh, sl = r["ship"], r["ship"]["latency"]
        rows.append(Row("8 ship", f"`ship.py` following a {sh['lines']:,}-line file, "
                        f"start to exit ({sh['stored']:,} stored, exit {sh['exit']})",
                        sh["rate"], "lines/s", "5,000-line POSTs of the same lines",
                        sh["direct_rate"], cpu=sh["cpu"]))
        rows.append(Row("8 ship", f"write to file -> follower, p99, {sl['rate']:,.0f} lines/s "
                        f"for {sl['duration']:g} s ({_ms(sl)})", sl["p99"], "ms",
                        "POSTed straight, p99", sl["direct"]["p99"], cpu=sl["cpu"],
                        note=f"{sl['undelivered']:,} lines missing" if sl["undelivered"]
                        else ""))
        notes.append("Shipper: its lines/s include the interpreter's start-up and the final "
                     "status POST; above the direct path, a line waits for the 50 ms file "
                     "poll and for its batch (sent at once when the sender is idle, else "
                     f"within 0.2 s). {_limit(sh['cpu'], cores)}.")
    if "soak" in r:
        rows.append(_soak_row(r["soak"]))
    return rows, notes


def _soak_row(k: dict[str, Any]) -> Row:
    """RSS slope after warm-up, with RSS at warm-up and at the end and the line rate."""
    mib = 2**20
    per_min = " ".join(f"{r / mib:.1f}" for _, r in k["per_minute"])
    return Row("10 soak", f"RSS slope after {k['warmup']:.0f} s, {k['seconds'] / 60:.1f} min, "
               f"{k['followers']} followers of {k['workflows']} workflows resuming every "
               f"0.2-3 s, {k['rate']:,.0f} lines/s", k["slope"], "MiB/min",
               goal=f"< {soak.FLAT_MB_PER_MIN} MiB/min (flat)",
               met=k["slope"] < soak.FLAT_MB_PER_MIN and not k["out_of_order"], cpu=k["cpu"],
               note=f"RSS {k['rss_warm'] / mib:.1f} MiB at {k['rss_warm_at']:.0f} s, "
               f"{k['rss_end'] / mib:.1f} MiB at the end; {k['sent']:,} lines sent, "
               f"{k['received']:,} delivered, {k['resumes']:,} resumes, {k['errors']} errors"
               + (f", {k['out_of_order']} OUT OF ORDER" if k["out_of_order"] else "")
               + f"; RSS per minute (MiB): {per_min}")


def _latency_row(run: dict[str, Any], sockets: dict[str, Any] | None,
                 notify: dict[str, Any] | None) -> Row:
    """A delivery latency row, against the bare-socket floor at the same number of
    followers (else the NOTIFY floor), with the ingest rate it achieved."""
    where = ("one workflow" if run["layout"] == "one workflow"
             else f"spread over {run['workflows']:,} workflows")
    base = sockets or notify
    label = (f"floor p99, {_n(run['followers'], 'bare socket')}" if sockets
             else "floor p99 (NOTIFY)" if notify else "")
    factor = 2 if run["layout"] == "one workflow" and run["followers"] in (100, 1000) else 10
    achieved = run.get("achieved_rate", run["rate"])
    rate_ok = achieved >= 0.95 * run["rate"]
    goal = f"<= {factor}x floor" + ("" if rate_ok else " at the target rate")
    ok = None if base is None else run["p99"] <= factor * base["p99"] and rate_ok
    note = "; ".join(x for x in (
        "" if rate_ok else f"RATE MISSED: ingest held {achieved:,.0f} of {run['rate']:,.0f} "
        "lines/s, fewer batches sampled",
        f"{run['undelivered']:,} batch deliveries missing" if run["undelivered"] else "",
        f"{run['refused']:,} streams refused ({', '.join(run['refusals'])})"
        if run["refused"] else "",
        f"from POST: p99 {run['from_post']['p99']:.1f} ms (p50 {run['from_post']['p50']:.1f})"
        if run.get("from_post") else "",
        f"commit + NOTIFY p50 {run['notify']['p50']:.1f} ms",
        _per_frame(run, achieved)) if x)
    return Row("2 latency", f"p99 from commit, {_n(run['followers'], 'follower')}, {where}, "
               f"{achieved:,.0f} of {run['rate']:,.0f} lines/s ({_ms(run)})", run["p99"], "ms",
               label, base["p99"] if base else None, goal, ok, run["cpu"], note)


def _per_frame(run: dict[str, Any], achieved: float) -> str:
    """Service CPU per line written to one follower: what a busy machine disturbs least."""
    frames = achieved * run["followers"] / max(1, run["workflows"])
    if not run.get("cpu") or frames <= 0:
        return ""
    text = f"service CPU {run['cpu']['service'] / 100 / frames * 1e6:.2f} µs per line per follower"
    per_batch = nchan.cpu_us_per_delivery(run)
    return text if per_batch is None else f"{text}, {per_batch:.1f} µs per follower per batch"


TAP_COMMITS_GOAL = 50.0  # NOTIFYing commits/s at 100 busy follows (issue 22)
TAP_QUIET_GOAL = 50.0  # ms, p99 of a quiet line beside them


def _busy_tap_rows(b: dict[str, Any], quiet: dict[str, Any] | None) -> list[Row]:
    """The tap with busy follows: commits/s against one per tapped line, and the quiet
    line's p99 against the same line through a tap that follows nothing else."""
    if "skipped" in b:
        return [Row("7 tap", "busy follows: commits/s", math.nan, "commits/s",
                    note=f"NOT MEASURED: {b['skipped']}")]
    load = (f"{b['follows']} follows x {b['rate']:g} lines/s, {b['seconds']:.0f} s: "
            f"{b['tapped_per_s']:,.0f} lines/s tapped")
    per_line = (b["cpu"]["service"] / 100 / b["tapped_per_s"] * 1e6
                if b["tapped_per_s"] > 0 else math.nan)
    ok = b["follows"] < 100 or b["commits_per_s"] <= TAP_COMMITS_GOAL
    rows = [Row("7 tap", f"NOTIFYing commits/s, {load}", b["commits_per_s"], "commits/s",
                "one per tapped line", b["tapped_per_s"],
                f"<= {TAP_COMMITS_GOAL:g} at 100 follows", ok if b["follows"] >= 100 else None,
                b["cpu"], f"service CPU {per_line:.1f} µs per tapped line; "
                f"{b['delivered_per_s']:,.0f} lines/s delivered to followers")]
    q, alone = b["quiet"], (quiet or {}).get("tap")
    rows.append(Row("7 tap", f"quiet line beside {b['follows']} busy follows, write -> "
                    f"follower, p99 ({b['samples']} lines, p50 {q['p50']:.1f} ms)", q["p99"],
                    "ms", "quiet line, tap alone, p99" if alone else "",
                    alone["p99"] if alone else None, f"< {TAP_QUIET_GOAL:g} ms",
                    q["p99"] < TAP_QUIET_GOAL, b["cpu"],
                    "write -> commit p50 {p50:.1f}, p99 {p99:.1f} ms".format(
                        **b["quiet_to_commit"]) if b.get("quiet_to_commit", {}).get("n")
                    else ""))
    return rows
