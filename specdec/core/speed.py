"""What the models cost, as measured: shared by the requests of one engine or coordinator.

The endpoints report the compute seconds of every call (in-process or over gRPC alike:
the same figures the request stats add up). Kept here, over a short history each:
- the draft's step (seconds per drafted token) and the target's pass, by the number of
  tokens in the forward that ran it (a pass over k+1 tokens is flat on a GPU, nearly k+1
  steps on a CPU; a worker that merges sessions (--max-batch) reports the tokens of all of
  them, so the same table is the device's cost curve over batch sizes, roofline included);
- whether the target worker merges sessions into one forward (then S requests share a
  forward instead of queueing for it);
- each of them again while the other model was computing at the same time (PEARL), so
  a shared device shows as a slowdown;
- each call's time outside the model (transport, scheduling; a low quantile, not the
  queueing behind other sessions);
- the per-position acceptance recent requests saw (the prior of a new request's);
- how many requests are decoding now (they share the workers; one still waiting for its
  prefill does not share a decoding forward yet).

PEARL's default window (`window()`) and the auto policy (specdec/core/goodput.py) read it.
Medians (overheads: a low quantile), so a prompt's prefill or one slow call does not move anything.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence

DEFAULT_DRAFT_LENGTH = 4  # k when a request names none (and PEARL's window before any measurement)
MAX_AUTO_WINDOW = 16
MAX_PASS_TOKENS = 64  # passes over more tokens (prefills, merged batches) are kept in buckets of 16
PASS_BUCKET = 16
OVERHEAD_QUANTILE = 0.25


def interpolate(points: Sequence[tuple[int, float]], n: int) -> float:
    """T(n) from measured (size, seconds) points sorted by size: exact where measured,
    linear between the nearest sizes, no cheaper than the smallest below it, and beyond the
    largest the last slope (never below the largest)."""
    below = [p for p in points if p[0] <= n]
    above = [p for p in points if p[0] > n]
    if below and below[-1][0] == n:
        return below[-1][1]
    if below and above:
        (lo, t_lo), (hi, t_hi) = below[-1], above[0]
        return t_lo + (t_hi - t_lo) * (n - lo) / (hi - lo)
    if above:
        return above[0][1]
    if len(below) >= 2:
        (lo, t_lo), (hi, t_hi) = below[-2], below[-1]
        return t_hi + max(0.0, (t_hi - t_lo) / (hi - lo)) * (n - hi)
    return below[-1][1]


def count_positions(accepted_at: list, judged_at: list, drafted: int, accepted: int) -> None:
    """Add one round's verdict to per-position counts (1-based): positions 1..accepted were
    accepted, accepted+1 rejected (if drafted); deeper positions were not judged."""
    for i in range(1, min(accepted + 1, drafted, len(judged_at) - 1) + 1):
        judged_at[i] += 1.0
        accepted_at[i] += 1.0 if i <= accepted else 0.0


class SpeedRatio:
    """Recent compute times and acceptance; `window()` = target pass / draft step."""

    def __init__(self, history: int = 64, positions: int = 32):
        self.history = history
        self._draft_steps: dict[bool, deque[float]] = {False: deque(maxlen=history), True: deque(maxlen=history)}
        self._target_passes: dict[bool, dict[int, deque[float]]] = {False: {}, True: {}}  # concurrent -> n -> s
        self._overhead: dict[str, deque[float]] = {"draft": deque(maxlen=history), "target": deque(maxlen=history)}
        # acceptance by position in a round (1-based): judged and accepted, decayed so it follows the traffic
        self.judged = [0.0] * (positions + 1)
        self.accepted = [0.0] * (positions + 1)
        self.decay = 0.995
        self.in_flight = 0  # requests decoding now (past their first token; a prefill shares no decoding forward)
        self._merged: deque[bool] = deque(maxlen=history)  # recent passes: was another session in the forward?
        self.max_batch: int | None = None  # sessions the target merges into one forward at most (None: not known)
        self.shared_device = False  # draft and target compute on the same device (one CPU, one GPU)
        self.costs_cache: dict = {}  # k_max -> (when, goodput.Costs): refreshed by goodput.Costs.measured

    # -- observations ------------------------------------------------------------------

    def observe_draft_step(self, seconds: float, concurrent: bool = False) -> None:
        if seconds > 0:
            self._draft_steps[concurrent].append(seconds)

    def observe_target_pass(
        self, seconds: float, n_tokens: int = 1, concurrent: bool = False, merged: bool | None = None
    ) -> None:
        """A pass's seconds by the tokens of its forward (all merged sessions'); `merged`:
        whether other sessions shared it (None: not known, as for a prefill)."""
        if seconds > 0 and n_tokens > 0:
            n = n_tokens if n_tokens <= MAX_PASS_TOKENS else PASS_BUCKET * -(-n_tokens // PASS_BUCKET)
            self._target_passes[concurrent].setdefault(n, deque(maxlen=self.history)).append(seconds)
        if merged is not None:
            self._merged.append(merged)

    def observe_overhead(self, role: str, seconds: float) -> None:
        """A call's wall time outside the model: role "draft" (a whole draft round) or "target"."""
        if seconds >= 0:
            self._overhead[role].append(seconds)

    def observe_acceptance(self, drafted: int, accepted: int) -> None:
        """One round's verdict: positions 1..accepted accepted, accepted+1 rejected (if drafted)."""
        for i in range(len(self.judged)):
            self.judged[i] *= self.decay
            self.accepted[i] *= self.decay
        count_positions(self.accepted, self.judged, drafted, accepted)

    # -- reads --------------------------------------------------------------------------

    def draft_step(self, concurrent: bool = False) -> float | None:
        steps = self._draft_steps[concurrent]
        return statistics.median(steps) if steps else None

    def target_pass(self, n_tokens: int, concurrent: bool = False) -> float | None:
        """Median seconds of a forward over `n_tokens` (see `interpolate`); None before any."""
        table = self.pass_table(concurrent)
        return interpolate(table, n_tokens) if table else None

    def pass_table(self, concurrent: bool = False) -> list[tuple[int, float]]:
        """(tokens in the forward, median seconds) for every size measured, by size."""
        passes = self._target_passes[concurrent]
        return [(n, statistics.median(passes[n])) for n in sorted(passes)]

    def merges(self) -> bool:
        """Whether the target worker has lately merged this engine's sessions into shared forwards."""
        return any(self._merged)

    def measured_pass_sizes(self, concurrent: bool = False) -> list[int]:
        return sorted(self._target_passes[concurrent])

    def overhead(self, role: str) -> float:
        """A call's time outside the model that every call pays (transport, scheduling): the
        OVERHEAD_QUANTILE of recent calls, not their median, because under load a call also
        waits for other sessions' forwards, and the goodput model counts that queueing itself
        (its S terms): taking it in here as well would count it twice."""
        samples = sorted(self._overhead[role])
        return samples[int(OVERHEAD_QUANTILE * (len(samples) - 1))] if samples else 0.0

    def acceptance_prior(self, position: int) -> tuple[float, float]:
        """(accepted, judged) pseudo-counts recent requests give position `position`."""
        i = min(position, len(self.judged) - 1)
        return self.accepted[i], self.judged[i]

    def window(self) -> int:
        """round(median target pass / median draft step), clamped to 1..MAX_AUTO_WINDOW;
        DEFAULT_DRAFT_LENGTH until both sides have been measured."""
        all_passes = [s for by_n in self._target_passes.values() for d in by_n.values() for s in d]
        all_steps = [s for d in self._draft_steps.values() for s in d]
        if not all_steps or not all_passes:
            return DEFAULT_DRAFT_LENGTH
        ratio = statistics.median(all_passes) / statistics.median(all_steps)
        return max(1, min(MAX_AUTO_WINDOW, round(ratio)))
