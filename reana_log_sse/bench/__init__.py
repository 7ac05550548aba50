"""`reana-log-sse bench`: the benchmark of ingest, delivery latency, fan-out, catch-up,
polling and the CLI, each next to a baseline measured in the same run.

Modules: command (the click command and sizes), run (orders the scenarios, builds rows),
harness (database, service process, commit log, CPU), rawhttp (cheap followers),
throughput (ingest, catch-up, CLI), latency (floor, SSE latency, polling), fanout,
report (table, JSON, plot, docs), profile (py-spy). Run on their own: cli_throughput
(`python -m reana_log_sse.bench.cli_throughput`) and widget (the widget in Chromium,
`python -m reana_log_sse.bench.widget`, from a checkout: it uses tests/browser.py).

May import: anything. Only cli.py imports it.
"""
