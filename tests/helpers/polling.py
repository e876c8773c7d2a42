"""Waiting for something that happens on another thread or process."""

from __future__ import annotations

import time


def wait_for(predicate, timeout_s: float = 10.0, every_s: float = 0.05):
    """Poll `predicate()` until it returns something truthy; returns it (or the last value)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)
