from __future__ import annotations

from reana_log_sse.bench.command import bench

bench()
