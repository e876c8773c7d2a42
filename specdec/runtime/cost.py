"""Cost shaping for the GPU-like regime (docs/benchmarking.md, regime 2).

Each model forward is held to a fixed latency that does not grow with the number
of tokens up to `flat_tokens`. Past it, a forward costs one budget per started chunk of
`flat_tokens` (prompt prefills), or, in a `roofline` profile, in proportion to its tokens:
the device is compute-bound there, so a merged batch of sessions (`--max-batch`) whose
tokens exceed the budget costs budget x tokens / flat_tokens (gpu-batch: the regime in
which verifying rejected draft tokens takes compute from other requests). The forward runs for real, then the worker sleeps out the
rest of its budget, spinning through its last SPIN_S (as a CUDA synchronize spins: a
sleeping thread wakes up to ~0.5 ms late on an idle VM, a device does not); a forward that overran its budget is counted, and a benchmark
with overruns is reported as invalid.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROFILE_DIR = Path(__file__).parent / "cost_profiles"


@dataclass(frozen=True)
class CostProfile:
    name: str
    target_ms: float
    draft_ms: float
    flat_tokens: int = 32
    preset_scale: dict = field(default_factory=dict)
    roofline: bool = False  # past flat_tokens: linear in tokens (else a step per started chunk)

    @classmethod
    def load(cls, name_or_path: str) -> "CostProfile":
        path = Path(name_or_path)
        if not path.suffix:
            path = PROFILE_DIR / f"{name_or_path}.json"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.json")))
            raise ValueError(f"unknown cost profile {name_or_path!r}; known: {known} (or a path to a JSON file)")
        data = json.loads(path.read_text())
        data.pop("description", None)
        data.pop("measured", None)  # a measured profile's curves (specdec/bench/cost_curve.py): data, not settings
        return cls(**data)

    def budget(self, role: str, preset: str | None = None) -> "ForwardBudget":
        """The per-forward budget for `role` ("draft" or "target"), scaled for a preset."""
        ms = self.target_ms if role == "target" else self.draft_ms
        scale = float(self.preset_scale.get(preset or "", 1.0))
        return ForwardBudget(seconds=ms * scale / 1000.0, flat_tokens=self.flat_tokens, roofline=self.roofline)


SPIN_S = 0.001  # measured: k=0 verify over gRPC, gpu-like, 32.40 -> 31.73 ms per round (compute 30.14 -> 30.00 ms)


@dataclass
class ForwardBudget:
    """Holds every forward to `seconds` up to `flat_tokens` tokens; past it, to `seconds`
    per started chunk of `flat_tokens`, or (roofline) `seconds` x tokens / flat_tokens."""

    seconds: float
    flat_tokens: int = 32
    roofline: bool = False
    forwards: int = 0
    overruns: int = 0
    worst_overrun_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def allowed(self, n_tokens: int) -> float:
        """The seconds a forward over `n_tokens` (all merged sessions together) takes."""
        chunks = n_tokens / self.flat_tokens if self.roofline else math.ceil(n_tokens / self.flat_tokens)
        return self.seconds * max(1.0, chunks)

    def settle(self, n_tokens: int, started: float) -> None:
        """Called right after a real forward over `n_tokens` that began at `started`."""
        allowed = self.allowed(n_tokens)
        spent = time.perf_counter() - started
        with self._lock:
            self.forwards += 1
            if spent > allowed:
                self.overruns += 1
                self.worst_overrun_s = max(self.worst_overrun_s, spent - allowed)
        if spent < allowed:
            deadline = started + allowed
            if allowed < 10 * SPIN_S:  # a short budget (tests' 1 ms targets): spinning would cost more CPU than it saves
                time.sleep(allowed - spent)
                return
            if allowed - spent > SPIN_S:
                time.sleep(allowed - spent - SPIN_S)
            while time.perf_counter() < deadline:
                time.sleep(0)  # lets go of the GIL: the event loop and the other model's thread run meanwhile
