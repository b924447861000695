"""Injected time: cores and actors never read the wall clock directly, so tests can drive it."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_us(self) -> int:
        """UTC wall time in microseconds since the Unix epoch (record timestamps)."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock (timeouts)."""


class SystemClock:
    def now_us(self) -> int:
        return time.time_ns() // 1000

    def monotonic(self) -> float:
        return time.monotonic()
