from __future__ import annotations

from reana_log_sse.cli import main

main()
