"""Cost shaping for the GPU-like regime (docs/benchmarking.md, regime 2).

Each model forward is held to a fixed latency that does not grow with the number
of tokens (up to `flat_tokens`; longer inputs such as prompt prefills cost one
budget per started chunk). The forward runs for real, then the worker sleeps out the
rest of its budget; a forward that overran its budget is counted, and a benchmark
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
        return cls(**data)

    def budget(self, role: str, preset: str | None = None) -> "ForwardBudget":
        """The per-forward budget for `role` ("draft" or "target"), scaled for a preset."""
        ms = self.target_ms if role == "target" else self.draft_ms
        scale = float(self.preset_scale.get(preset or "", 1.0))
        return ForwardBudget(seconds=ms * scale / 1000.0, flat_tokens=self.flat_tokens)


@dataclass
class ForwardBudget:
    """Holds every forward to `seconds` per started chunk of `flat_tokens` tokens."""

    seconds: float
    flat_tokens: int = 32
    forwards: int = 0
    overruns: int = 0
    worst_overrun_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def settle(self, n_tokens: int, started: float) -> None:
        """Called right after a real forward over `n_tokens` that began at `started`."""
        allowed = self.seconds * max(1, math.ceil(n_tokens / self.flat_tokens))
        spent = time.perf_counter() - started
        with self._lock:
            self.forwards += 1
            if spent > allowed:
                self.overruns += 1
                self.worst_overrun_s = max(self.worst_overrun_s, spent - allowed)
        if spent < allowed:
            time.sleep(allowed - spent)
