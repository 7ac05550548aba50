"""Exponential backoff with jitter for the pod watch's retries.

After a failure the next attempt waits between half and all of `first * 2**n` (capped),
"equal jitter": never a tight loop, and replicas (and the three label watches) that failed
together do not come back together. client-go's reflector backs off its list+watch the same
way (staging/src/k8s.io/client-go/tools/cache/reflector.go: NewExponentialBackoffManager
(800ms, 30s, 2min, 2.0, 1.0): from 800 ms, doubling, capped at [30, 60) s).
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(self, first: float = 0.2, cap: float = 30.0,
                 rng: Callable[[], float] = random.random) -> None:
        self.first = first
        self.cap = cap
        self.rng = rng
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        ceiling = min(self.cap, self.first * 2 ** min(self.failures, 32))
        self.failures += 1
        return ceiling / 2 + self.rng() * ceiling / 2

    def reset(self) -> None:
        """An attempt went well: the next failure waits the shortest again."""
        self.failures = 0
