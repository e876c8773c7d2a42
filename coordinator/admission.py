"""Admission at the coordinator: at most `max_concurrent_requests` run at once; the excess
is refused at once (RESOURCE_EXHAUSTED) with a hint of when to retry, not queued.

Refusing rather than queueing keeps every admitted request's latency bounded and leaves
the waiting, and its deadline, with the caller: a client with a deadline shorter than the
hint gives up at once instead of holding a connection in a queue it cannot leave.

The hint (trailing metadata `retry-after-ms`, specdec/rpc/retry_after.py) is the mean
time until some running request frees its slot: with `running` requests that each hold a
slot for `hold` seconds on average, started at spread-out times, one ends every
`hold / running` seconds (Little's law). `hold` is a moving average over the requests that
finished, whatever their outcome: a cancelled request frees its slot as much as a complete one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from specdec.rpc.retry_after import RETRY_AFTER_KEY


class Overloaded(RuntimeError):
    """The coordinator is at its concurrency limit (RESOURCE_EXHAUSTED); `retry_after_ms`
    goes back as trailing metadata."""

    def __init__(self, message: str, retry_after_ms: int):
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


@dataclass(frozen=True)
class RetryAfter:
    """How the retry hint is estimated (CoordinatorConfig.retry_after)."""

    floor_ms: int = 50  # never less: a retry sooner would most likely be refused again
    cap_ms: int = 30_000  # never more: a few very long requests would otherwise push clients away for minutes
    unmeasured_s: float = 1.0  # a slot's holding time assumed until a request has finished
    smoothing: float = 0.2  # weight of the newest finished request in the moving average

    def __post_init__(self):
        if not 0 <= self.floor_ms <= self.cap_ms:
            raise ValueError(f"retry_after needs 0 <= floor_ms <= cap_ms, got {self.floor_ms} and {self.cap_ms}")
        if self.unmeasured_s <= 0 or not 0 < self.smoothing <= 1:
            raise ValueError(f"retry_after needs unmeasured_s > 0 and smoothing in (0, 1], got "
                             f"{self.unmeasured_s} and {self.smoothing}")


class Admission:
    """Counts the running requests against `limit` and learns how long one holds its slot.
    Used from the coordinator's event loop only, so plain counters suffice."""

    def __init__(self, limit: int, config: RetryAfter = RetryAfter()):
        self.limit = limit
        self.config = config
        self.running = 0
        self.hold_s: float | None = None  # moving average of slot holding times; None until one finished

    def enter(self) -> float:
        """Take a slot and return when (perf_counter); Overloaded when none is free."""
        if self.running >= self.limit:
            hint = self.retry_after_ms()
            raise Overloaded(
                f"the coordinator is at its limit of {self.limit} concurrent requests: retry in {hint} ms "
                f"(trailing metadata {RETRY_AFTER_KEY}), or send fewer requests at once",
                hint,
            )
        self.running += 1
        return time.perf_counter()

    def leave(self, began: float) -> None:
        """Free the slot taken at `began` and learn from how long it was held."""
        self.running -= 1
        held = time.perf_counter() - began
        weight = self.config.smoothing
        self.hold_s = held if self.hold_s is None else (1 - weight) * self.hold_s + weight * held

    def retry_after_ms(self) -> int:
        """The estimated wait until a slot frees, within [floor_ms, cap_ms]."""
        hold = self.hold_s if self.hold_s is not None else self.config.unmeasured_s
        estimate = 1000.0 * hold / max(1, self.running)
        return int(min(self.config.cap_ms, max(self.config.floor_ms, round(estimate))))
