"""Per-process request throttling (`DEFAULT_THROTTLE_RATES`, requests per minute).

Like the reference's cache-based throttles, the counts live in the process: with several server
workers, each enforces the rate on the requests it receives.
"""

from __future__ import annotations

import threading
import time
from collections import deque

WINDOW_SECONDS = 60.0
_MAX_TRACKED = 10_000


class RateLimiter:
    def __init__(self, rate_per_minute: int) -> None:
        self.rate = rate_per_minute
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, scope: str, ident: str) -> bool:
        """Record a request of `ident` in `scope`; False when over the rate. A rate of 0 disables it."""
        if self.rate <= 0:
            return True
        now = time.monotonic()
        key = f"{scope}:{ident}"
        with self._lock:
            if len(self._hits) > _MAX_TRACKED:
                self._forget_idle(now)
            hits = self._hits.setdefault(key, deque())
            while hits and now - hits[0] >= WINDOW_SECONDS:
                hits.popleft()
            if len(hits) >= self.rate:
                return False
            hits.append(now)
            return True

    def _forget_idle(self, now: float) -> None:
        for key in [key for key, hits in self._hits.items() if not hits or now - hits[-1] >= WINDOW_SECONDS]:
            del self._hits[key]
