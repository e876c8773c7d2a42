"""PEARL's default window: the measured draft/target speed ratio (docs/algorithms.md §4).

PEARL overlaps drafting with verification; the window that keeps both busy is the
number of draft steps that fit in one target verification pass. Requests that name no
`draft_length` in mode pearl get that number, measured from the compute seconds the
endpoints report for recent calls (in-process or over gRPC alike: the same figures the
request stats add up). Medians over a short history, so a prompt's prefill or one slow
call does not move the window.
"""

from __future__ import annotations

import statistics
from collections import deque

DEFAULT_DRAFT_LENGTH = 4  # k when a request names none (and PEARL's window before any measurement)
MAX_AUTO_WINDOW = 16


class SpeedRatio:
    """Recent draft-step and target-pass compute times; `window()` = passes / steps."""

    def __init__(self, history: int = 64):
        self._draft_steps: deque[float] = deque(maxlen=history)  # seconds per drafted token
        self._target_passes: deque[float] = deque(maxlen=history)  # seconds per verification call

    def observe_draft_step(self, seconds: float) -> None:
        if seconds > 0:
            self._draft_steps.append(seconds)

    def observe_target_pass(self, seconds: float) -> None:
        if seconds > 0:
            self._target_passes.append(seconds)

    def window(self) -> int:
        """round(median target pass / median draft step), clamped to 1..MAX_AUTO_WINDOW;
        DEFAULT_DRAFT_LENGTH until both sides have been measured."""
        if not self._draft_steps or not self._target_passes:
            return DEFAULT_DRAFT_LENGTH
        ratio = statistics.median(self._target_passes) / statistics.median(self._draft_steps)
        return max(1, min(MAX_AUTO_WINDOW, round(ratio)))
