"""The bench's output: rows with their baselines and ratios, the table, JSON, the plot
and docs/performance.md."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

SHARED_MACHINE = (
    "The service, PostgreSQL and the load generator all run on this one machine "
    "({cores} cores): every figure is measured while they compete for it, so each is a "
    "floor for what the service does on a machine of its own."
)


@dataclasses.dataclass
class Row:
    scenario: str
    figure: str
    value: float
    unit: str
    baseline: str = ""
    base_value: float | None = None
    goal: str = ""
    met: bool | None = None
    cpu: dict[str, float] | None = None  # % of one core: service, postgres, loadgen
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.base_value in (None, 0) or _nan(self.value) or _nan(self.base_value):
            return None
        return self.value / self.base_value  # type: ignore[operator]

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ratio": self.ratio}


def _nan(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt(value: float | None, unit: str = "") -> str:
    if _nan(value):
        return "n/a"
    assert value is not None
    if unit == "ms":
        text = f"{value:.1f}" if value < 100 else f"{value:,.0f}"
    elif unit == "KiB":
        text = f"{value:.1f}"
    elif abs(value) >= 100 or value == int(value):
        text = f"{value:,.0f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def ratio_text(row: Row) -> str:
    r = row.ratio
    if r is None:
        return ""
    return f"{r:.2f}x" if r < 10 else f"{r:,.0f}x"


def goal_text(row: Row) -> str:
    if not row.goal:
        return ""
    mark = {True: "met", False: "MISSED", None: ""}[row.met]
    return f"{row.goal} {mark}".strip()


def cpu_text(row: Row) -> str:
    if not row.cpu:
        return ""
    return "/".join(str(int(row.cpu.get(k, 0)))
                    for k in ("service", "postgres", "loadgen", "other"))


HEADER = ("scenario", "figure", "value", "baseline (same run)", "ratio", "goal",
          "CPU % svc/pg/gen/other", "note")


def cells(row: Row) -> tuple[str, ...]:
    base = f"{row.baseline}: {fmt(row.base_value, row.unit)}" if row.baseline else ""
    return (row.scenario, row.figure, fmt(row.value, row.unit), base, ratio_text(row),
            goal_text(row), cpu_text(row), row.note)


def text_table(rows: list[Row]) -> str:
    table = [HEADER] + [cells(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    lines = []
    for k, r in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |")
    return "\n".join(out)


def write_json(path: Path, machine: dict[str, Any], rows: list[Row], extra: dict[str, Any]) -> None:
    data = {"machine": machine, "rows": [r.as_dict() for r in rows], **extra}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def plot(path: Path, latency: list[dict[str, Any]], floor: dict[str, float] | None,
         polling: list[dict[str, Any]], title: str,
         sockets: dict[int, dict[str, Any]] | None = None,
         peer: dict[int, dict[str, Any]] | None = None) -> None:
    """Delivery latency percentiles vs followers (log-log), with the floor and polling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    styles = {"p50": ":", "p99": "-", "max": "--"}
    for layout, color in (("one workflow", "tab:blue"), ("spread", "tab:green")):
        runs = sorted((r for r in latency if r["layout"] == layout and r["n"] > 0),
                      key=lambda r: r["followers"])
        if not runs:
            continue
        label = (layout if layout == "one workflow"
                 else f"spread over {runs[0]['workflows']:,} workflows")
        for q, style in styles.items():
            ax.plot([r["followers"] for r in runs], [max(r[q], 0.01) for r in runs], style,
                    marker="o", color=color, label=f"SSE, {label}: {q}")
    runs = sorted(polling, key=lambda r: r["followers"])
    if runs:
        for q, style in (("p50", ":"), ("p99", "-")):
            ax.plot([r["followers"] for r in runs], [max(r[q], 0.01) for r in runs], style,
                    marker="s", color="tab:red",
                    label=f"polling every {runs[0]['interval']:g} s: {q}")
    if floor:
        ax.axhline(floor["p50"], color="grey", linestyle=":", label="floor (NOTIFY + write): p50")
        ax.axhline(floor["p99"], color="black", linestyle="-", linewidth=0.8,
                   label="floor: p99")
    if sockets:
        ns = sorted(sockets)
        ax.plot(ns, [max(sockets[n]["p99"], 0.01) for n in ns], "-", marker="^",
                color="tab:purple", label="floor: bare asyncio, same bytes to N sockets: p99")
        goal = [n for n in ns if n in (100, 1000)]
        if goal:
            ax.plot(goal, [2 * sockets[n]["p99"] for n in goal], "kx", markersize=10, mew=2,
                    label="goal: p99 <= 2x that floor at 100 / 1,000 followers")
    measured = sorted(n for n, p in (peer or {}).items() if "p99" in p)
    if measured:
        assert peer is not None
        ax.plot(measured, [max(peer[n]["p99"], 0.01) for n in measured], "-", marker="D",
                color="tab:orange", label="nginx + nchan, one data line per batch: p99 "
                "from publish")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent followers")
    ax.set_ylabel("commit -> parsed by follower (ms)")
    ax.set_title(title, fontsize=9, loc="left")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


CHANGES_BEGIN = "<!-- changes:begin: written by hand, kept by --write-docs -->"
CHANGES_END = "<!-- changes:end -->"


def kept_changes(page: str) -> str:
    """The hand-written section of an existing performance.md (empty if none)."""
    start, end = page.find(CHANGES_BEGIN), page.find(CHANGES_END)
    if start < 0 or end < start:
        return ""
    return page[start:end + len(CHANGES_END)]


def docs(machine: dict[str, Any], rows: list[Row], notes: list[str], plot_name: str,
         command: str, changes: str = "") -> str:
    m = machine
    return f"""# Performance

Measured by `{command}` on {m['date']}; regenerate this page and its plot with the same
command. Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, {m['os']};
Python {m['python']}, PostgreSQL {m['postgresql']} (embedded, default settings:
`fsync` and `synchronous_commit` on).

{SHARED_MACHINE.format(cores=m['cores'])}

Every figure stands next to its baseline, measured in the same run, and the ratio of the
two. CPU is the share of one core used during the measurement by the service process,
PostgreSQL (all its processes), the load generator, and everything else on the machine
("other": a busy neighbour makes every figure worse, and shows there).

{markdown_table(rows)}

![delivery latency vs followers]({plot_name})

## What limits each figure

{chr(10).join('- ' + n for n in notes)}

## How it is measured

- **Ingest**: Vector-shaped gzip'd JSON batches of 1,000 lines, built before the clock
  starts, POSTed by a few concurrent senders to `/ingest/vector` (decode and validate:
  the msgspec fast path for these canonical batches; dedupe digest, id allocation, COPY
  into `log_lines`, NOTIFY, commit). Baseline: the same rows, pre-formatted, `COPY`ed
  straight into `log_lines` 1,000 rows per transaction with the same concurrency. The
  note gives CPU time per line (share of a core x seconds / lines) of the service and of
  PostgreSQL: the figure a busy machine disturbs least.
- **Delivery latency**: followers are raw sockets in one asyncio process; a line counts
  as parsed when the follower has received the complete `log` frame carrying its id.
  "From commit": the `t` the ingest transaction puts in its NOTIFY payload, just before
  COMMIT; "from POST": the time taken just before the POST that carried the batch (its
  commit lies between that and the POST's answer). Ingest runs at the stated rate in
  small batches from one sender throughout; the figure names the rate it achieved, and
  a run whose ingest fell more than 5% short of its target is marked MISSED (fewer
  batches were sampled). Service CPU per follower per batch: the service's CPU time
  (ingest included) over the paced phase / (followers x POSTs). Floors: a bare `NOTIFY`
  (time taken just before it, committed) received on a LISTEN connection and written to
  a loopback TCP socket, timed on arrival; and, per number of followers, a bare asyncio
  process (bench/floorserver.py) that on each NOTIFY writes the same bytes (one batch's
  frames, as one HTTP chunk) to that many sockets, paced and read like the service's
  run, with flow control: while a follower's transport is paused it is owed its batches,
  which it gets joined, in order, when it resumes, so its buffer stays under asyncio's
  64 KiB high-water mark plus one chunk (the row gives the largest per-follower buffer,
  and the floor's CPU per follower per batch).
- **The peer, nginx + nchan** (when `nginx` and Debian's `libnginx-mod-nchan` are
  installed; else the bench says how to install them and the goals against it say "no
  peer"): nginx from its own prefix in a temp dir with ONE worker process (our service is
  one process), an nchan publisher location and an EventSource subscriber location, a
  fresh channel per run, set up the way that serves it best: one `data:` line per
  batch, bodies kept in memory. Same pace (the same loop), same batch bytes on the wire,
  same followers (they read the batch's last id at the start of its data line), same N
  as our runs of one workflow. p99 is from publish (time taken just before each publish
  POST); its CPU is the nginx worker's CPU time from /proc over the publishing phase /
  (followers x batches). Goals, same run: our service CPU per follower per batch at
  1,000 followers <= nchan's; our p99 from commit at 100 and 1,000 followers <= nchan's
  p99 from publish.
- **Fan-out**: streams held open by the service process, RSS growth divided by the
  number of streams, after one line was delivered to every one of them. Baseline: a bare
  asyncio server holding as many connections, each with a task waiting on it.
- **Catch-up**: one follower joins a workflow with the stated number of stored lines and
  reads until it has the last one. Each of the 29 days before today holds lines of other
  workflows (1 per 50 of the followed ones), so every daily partition of the default
  30-day retention has rows, as in a database in use. Baseline: `COPY (SELECT ...) TO
  STDOUT` of the same rows.
- **Polling**: clients GET `/logs?since=` every interval (today's REANA way), against
  the SSE path at the same number of followers; database reads are snapshot transactions
  (the service's feed and catch-up reads, one per poll for polling).
{chr(10) + changes + chr(10) if changes else ""}"""


BEGIN = "<!-- bench:begin: generated by `reana-log-sse bench --write-docs`, do not edit -->"
END = "<!-- bench:end -->"


def readme_block(machine: dict[str, Any], rows: list[Row], notes: list[str], plot_path: str,
                 page_path: str) -> str:
    m = machine
    return f"""{BEGIN}
Measured on {m['date']}: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM,
Python {m['python']}, PostgreSQL {m['postgresql']}. {SHARED_MACHINE.format(cores=m['cores'])}

{markdown_table(rows)}

![delivery latency vs followers]({plot_path})

What limits each figure:

{chr(10).join('- ' + n for n in notes)}

How each figure is measured: [{page_path}]({page_path}).
{END}"""


def replace_block(text: str, block: str) -> str | None:
    """text with its generated block replaced; None when it has no markers."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return None
    return text[:start] + block + text[end + len(END):]
