"""A wall-clock budget for a run made of steps (scripts/gpu_check.sh): each step says what
it needs before it starts; one that does not fit in what is left is skipped with a note,
and a long step asks `enough(seconds)` between its items and stops early."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class StepRecord:
    name: str
    status: str  # ok | skipped | failed | cut (ran, stopped early by the budget)
    seconds: float = 0.0
    note: str = ""


@dataclass
class Budget:
    seconds: float
    started: float = field(default_factory=time.monotonic)
    steps: list[StepRecord] = field(default_factory=list)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def enough(self, seconds: float) -> bool:
        return self.left() >= seconds

    def run(self, name: str, needs_s: float, fn: Callable[[], str | None], always: bool = False) -> StepRecord:
        """Run `fn` if `needs_s` seconds are left (or `always`); it may return a note, or
        "cut: ..." when it stopped early. An exception fails the step, not the run."""
        if not always and not self.enough(needs_s):
            record = StepRecord(name, "skipped", 0.0, f"needs ~{needs_s:.0f} s, {max(0.0, self.left()):.0f} s left")
            self.steps.append(record)
            return record
        began = time.monotonic()
        try:
            note = fn() or ""
            status = "cut" if note.startswith("cut") else "ok"
        except Exception as exc:  # noqa: BLE001 - reported in the summary, the run goes on
            note = f"{type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=6)
            status = "failed"
        record = StepRecord(name, status, time.monotonic() - began, note)
        self.steps.append(record)
        return record
