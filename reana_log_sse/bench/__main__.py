from __future__ import annotations

from .command import bench

bench()
