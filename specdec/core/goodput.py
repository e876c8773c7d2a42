"""Goodput: which mode and draft length pay, from what was measured (docs/algorithms.md §6).

The estimator. For a round that drafts k tokens, with a_i the chance that the i-th draft
token is accepted given the ones before it were, the expected tokens it emits are

    E(k) = 1 + a_1 + a_1 a_2 + ... + a_1 ... a_k          (E(0) = 1: the target alone)

and what it costs, with t_d the draft's step, T(n) the target's pass over n tokens and
o_d, o_t each call's time outside the model (transport, scheduling):

    sequential:  R(k) = k t_d + o_d + T(k+1) + o_t        (R(0) = T(1) + o_t: no draft call)

and the goodput of a sequential round is E(k) / R(k). PEARL is a pipeline, not a round:
its rate comes from the model of exactly the loop's rules (specdec/core/pipeline.py: an
event simulation of one long request, acceptance as a two-state chain a_r = a_1 after a
rejection, a_a = the mean of a_2..a_k after an accepted token), with a pass costing
P = f_t T(k+1) + o_t and a draft step f_d t_d, so c = f_d t_d / P:

    PEARL:       G(k) = speedup(a_r, a_a, c, k) / P

f_d, f_t >= 1 are the measured slowdown of each model while the other computes (1 on
separate devices, > 1 on a shared one).

Load. With S requests sharing the workers, a worker serves their calls one after another,
so a request's rate is also bounded by its share of the busier worker:

    sequential:  E(k) / max(R(k), S (T(k+1) + o_t), S (k t_d + o_d))
    PEARL:       min(G(k), 1 / (S p (T(k+1) + o_t)))      p = the model's passes per token

Under load the drafts of one request overlap the passes of another anyway, so PEARL's
overlap is worth nothing more while its rejected windows still cost passes (p is higher
than sequential's 1 / E(k)); and a rejected draft token's share of the target is no
longer free, so the best k falls.

Merged batches. A worker that merges the S sessions' forwards into one (--max-batch)
serves them together: a forward's cost follows its total tokens, T(n) measured by the
tokens of the whole batch (flat up to the device's budget, linear past it: the roofline),
so with every request at draft length k

    sequential:  R_S(k) = k t_d + o_d + T(S (k+1)) + o_t      (R_S(0) = T(S) + o_t)
    PEARL:       P_S = f_t T(S (k+1)) + o_t in place of P

and with at most B sessions per forward, S in F = ceil(S / B) forwards of B: T(B (k+1)),
and the round no shorter than F (T(B (k+1)) + o_t), the target's time for all of them.

While S (k+1) fits the budget speculation is free; past it every drafted token, accepted
or not, costs other requests compute, and k falls to 0 once E(k) / (k+1) does not pay
for it.

The goodput of a choice is E(k) / R_S(k); `plan` returns the best (mode, k), and the
figures for every candidate so the choice can be shown (stats, spans, metrics).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from specdec.core.names import Mode
from specdec.core.pipeline import steady_state
from specdec.core.speed import SpeedRatio, interpolate

REFRESH_S = 0.25  # measured costs are recomputed at most this often
ACCEPTANCE_PRIOR = 0.6  # a_i before anything was measured, with PRIOR_WEIGHT pseudo-rounds
PRIOR_WEIGHT = 4.0
SHARED_SLOWDOWN = 2.0  # f_d, f_t on a shared device before PEARL has measured them: the two split it


@dataclass(frozen=True)
class Costs:
    """Seconds: the draft's step, the target's pass T(n) at the sizes a plan needs, the
    per-call overheads, and the slowdown of each model while the other computes."""

    draft_step: float
    target_pass: dict[int, float]  # n -> T(n) for n in 1..k_max+1
    draft_overhead: float = 0.0
    target_overhead: float = 0.0
    draft_slowdown: float = 1.0
    target_slowdown: float = 1.0
    merged: bool = False  # the target worker merges sessions into one forward
    max_batch: int = 0  # ... at most this many (0: not known, all of them)
    table: tuple = ()  # (tokens in the forward, seconds) measured, by size: T(n) for any n

    def pass_at(self, n: int) -> float:
        """T(n): the table when there is one, else the sizes in `target_pass`."""
        if n in self.target_pass:
            return self.target_pass[n]
        return interpolate(self.table or sorted(self.target_pass.items()), n)

    def batch(self, sessions: int) -> tuple[int, int]:
        """(sessions per merged forward, forwards per round) for `sessions` requests."""
        per = min(sessions, self.max_batch) if self.max_batch else sessions
        return per, -(-sessions // per)

    def round_pass(self, k: int, sessions: int) -> float:
        """The target forward of a round at draft length k: merged with the other sessions' when
        the worker merges them (all at k), else this request's alone."""
        if self.merged and sessions > 1:
            return self.pass_at(self.batch(sessions)[0] * (k + 1))
        return self.target_pass[k + 1]

    @classmethod
    def measured(cls, speed: SpeedRatio, k_max: int) -> "Costs | None":
        """From what `speed` holds; None until both models have been measured. Computed at
        most every REFRESH_S per k_max (medians over the history are not free, and a round
        of a few milliseconds must not pay them each time)."""
        now = time.monotonic()
        cached = speed.costs_cache.get(k_max)
        if cached is not None and now - cached[0] < REFRESH_S:
            return cached[1]
        costs = cls._measure(speed, k_max)
        if costs is not None:
            speed.costs_cache[k_max] = (now, costs)
        return costs

    @classmethod
    def _measure(cls, speed: SpeedRatio, k_max: int) -> "Costs | None":
        t_d = speed.draft_step()
        if t_d is None or speed.target_pass(1) is None:
            return None
        passes = {n: speed.target_pass(n) for n in range(1, k_max + 2)}
        # a shared device (one CPU, one GPU) is split between the two models while both compute,
        # until PEARL's own rounds measure by how much; separate devices: no slowdown
        prior = SHARED_SLOWDOWN if speed.shared_device else 1.0
        slow_d = _ratio(speed.draft_step(concurrent=True), t_d, prior)
        pearl_sizes = speed.measured_pass_sizes(concurrent=True)
        slow_t = prior
        if pearl_sizes:
            n = pearl_sizes[0]
            slow_t = _ratio(speed.target_pass(n, concurrent=True), speed.target_pass(n), prior)
        return cls(
            t_d, passes, speed.overhead("draft"), speed.overhead("target"), slow_d, slow_t,
            merged=speed.merges(), max_batch=speed.max_batch or 0, table=tuple(speed.pass_table()),
        )


def _ratio(concurrent: float | None, alone: float | None, unmeasured: float = 1.0) -> float:
    """The slowdown concurrent / alone (at least 1); `unmeasured` when either is missing."""
    if concurrent is None or not alone:
        return unmeasured
    return max(1.0, concurrent / alone)


def expected_tokens(acceptance: Sequence[float], k: int) -> float:
    """E(k) with acceptance[i] = a_{i+1}."""
    total, run = 1.0, 1.0
    for i in range(k):
        run *= acceptance[min(i, len(acceptance) - 1)]
        total += run
    return total


def round_seconds(k: int, c: Costs, sessions: int = 1) -> float:
    """A sequential round's seconds under load (k = 0: the target alone)."""
    s = max(1, sessions)
    t = c.round_pass(k, s)
    draft = k * c.draft_step + c.draft_overhead if k else 0.0
    if c.merged and s > 1:  # the sessions share each forward (max_batch at a time) rather than queue for it
        forwards = c.batch(s)[1]
        return max(draft + t + c.target_overhead, forwards * (t + c.target_overhead))
    if k == 0:
        return s * (t + c.target_overhead)
    latency = draft + t + c.target_overhead
    return max(latency, s * (t + c.target_overhead), s * (k * c.draft_step + c.draft_overhead))


def pearl_goodput(k: int, acceptance: Sequence[float], c: Costs, sessions: int = 1) -> float:
    """PEARL's tokens per second with window k, from the pipeline model."""
    pass_s = c.round_pass(k, sessions)
    unit = pass_s * c.target_slowdown + c.target_overhead
    a_r = acceptance[0]
    rest = list(acceptance[1:k])
    a_a = sum(rest) / len(rest) if rest else a_r
    speedup, passes_per_token = steady_state(a_r, a_a, c.draft_step * c.draft_slowdown / unit, k)
    rate = speedup / unit
    if sessions > 1:  # the target's share: queued behind each session's passes, or behind the other batches
        queued = c.batch(sessions)[1] if c.merged else sessions
        rate = min(rate, 1.0 / (queued * passes_per_token * (pass_s + c.target_overhead)))
    return rate


def goodput(mode: Mode, k: int, acceptance: Sequence[float], c: Costs, sessions: int = 1) -> float:
    """Expected emitted tokens per second of one request."""
    if mode is Mode.PEARL and k > 0:
        return pearl_goodput(k, acceptance, c, sessions)
    return expected_tokens(acceptance, k) / round_seconds(k, c, sessions)


@dataclass(frozen=True)
class Plan:
    mode: Mode
    k: int
    goodput: float  # tokens/s expected
    baseline: float  # tokens/s expected of the target alone (k = 0)
    candidates: dict = field(default_factory=dict)  # (mode value, k) -> tokens/s

    @property
    def why(self) -> str:
        return (f"{self.mode.value} k={self.k}: {self.goodput:.1f} tok/s expected vs "
                f"{self.baseline:.1f} for the target alone")


def plan(
    acceptance: Sequence[float], c: Costs, k_max: int, sessions: int = 1, modes: Sequence[Mode] = (Mode.SEQUENTIAL,)
) -> Plan:
    """The (mode, k) of highest goodput among k = 0 (the target alone) and k = 1..k_max in
    each of `modes`; ties go to the smaller k (less wasted work for the same speed)."""
    baseline = goodput(Mode.AUTOREGRESSIVE, 0, acceptance, c, sessions)
    candidates = {(Mode.AUTOREGRESSIVE.value, 0): baseline}
    best = (baseline, Mode.AUTOREGRESSIVE, 0)
    for mode in modes:
        for k in range(1, k_max + 1):
            g = goodput(mode, k, acceptance, c, sessions)
            candidates[(mode.value, k)] = g
            if g > best[0] * (1 + 1e-9):
                best = (g, mode, k)
    return Plan(best[1], best[2], best[0], baseline, candidates)


def position_acceptance(
    accepted: Sequence[float], judged: Sequence[float], speed: SpeedRatio | None, k_max: int
) -> list[float]:
    """a_1..a_k_max of one request: its own counts at each position, pulled toward what
    recent requests saw there (or ACCEPTANCE_PRIOR) with PRIOR_WEIGHT pseudo-rounds. A
    position with no prior borrows the one before it. Where the request has been judged,
    the ratio of its estimate to the prior carries to the deeper positions' priors: a
    request whose first tokens are rejected far more often than the traffic's (prose after
    code) is not assumed to match the traffic further on, where it has no evidence yet."""
    out: list[float] = []
    ratio = 1.0  # this request's acceptance relative to the prior, at the deepest position it was judged
    for i in range(1, k_max + 1):
        prior = out[-1] if out else ACCEPTANCE_PRIOR
        if speed is not None:
            acc, jud = speed.acceptance_prior(i)
            if jud >= 1.0:
                prior = acc / jud
        own_acc = accepted[i] if i < len(accepted) else 0.0
        own_jud = judged[i] if i < len(judged) else 0.0
        shifted = min(prior * ratio, 0.999)
        a = min(max((own_acc + PRIOR_WEIGHT * shifted) / (own_jud + PRIOR_WEIGHT), 0.0), 0.999)
        if own_jud >= 1.0 and prior > 0.0:
            ratio = a / prior
        out.append(a)
    return out
