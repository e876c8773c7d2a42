"""Draft-length policies: when does the draft stop proposing in a round?

A policy is split in two so that drafting never needs a round trip per token:
- `DraftLengthPolicy` lives with the request (in the coordinator): it holds the
  adaptive state and, once per round, hands out a `StopRule`; after the target's
  verdict it `observe`s how many were drafted and accepted.
- `StopRule` is a small frozen value that travels to the drafter (in-process or a
  draft worker over gRPC). The drafter asks it twice per token (specdec/runtime/drafting.py):
  right after drawing token n (`stops_after_drawing`: the cap, before any further
  forward) and after the forward that feeds token n, before drawing token n + 1
  (`stops_before_drawing`: AdaEDL's entropy bound on the distribution token n + 1
  would come from, SpecDec++'s head on the state whose input is token n).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from specdec.core import goodput
from specdec.core.names import Mode, PolicyName
from specdec.core.speed import SpeedRatio, count_positions

ADAEDL_GAMMA = 0.2
SPECDECPP_K_MAX = 20  # the paper's k_max (its reference range 2..20): the head, not the cap, should end rounds
REPLAN_STREAMS = 8  # policy auto in PEARL: a new plan every 8 draft streams


class EntropyOf(str, enum.Enum):
    """Which distribution's entropy AdaEDL's bound reads (docs/algorithms.md §2)."""

    NEXT = "next"  # the paper: the one the next token would be drawn from, tested before drawing it
    # The earlier rule, kept only to compare against (policy adaedl_late): the one the token
    # just drafted came from; that token is still sent, so the stop comes one token late.
    DRAFTED = "drafted"


@dataclass(frozen=True)
class DraftStep:
    """What the drafter knows after the forward that fed its n-th token of the round,
    before it draws token n + 1 (`StopRule.stops_before_drawing`)."""

    n_drafted: int  # tokens drafted so far this round (>= 1)
    next_entropy: float  # nats, untempered: the distribution token n + 1 would be drawn from
    # the acceptance head's P(accepted) for token n, read from the hidden state whose input
    # is token n (None without a head)
    p_accept: float | None = None


@dataclass(frozen=True)
class StopRule:
    """Asked by the drafter at two points per token; stops at `max_tokens` at the latest."""

    max_tokens: int  # hard cap for this round (>= 1)
    min_tokens: int = 1
    entropy_lambda: float | None = None  # AdaEDL: stop when 1 - sqrt(gamma * H) < lambda
    reject_threshold: float | None = None  # SpecDec++: stop when 1 - prod(p_acc) > threshold
    entropy_of: EntropyOf = EntropyOf.NEXT  # which H AdaEDL reads (DRAFTED: the earlier, late rule)

    def stops_after_drawing(self, n_drafted: int, drafted_entropy: float) -> bool:
        """Right after token n is drawn, before any forward: the cap (so no forward runs
        after the last token), and AdaEDL with `entropy_of` DRAFTED on the entropy of the
        distribution token n came from."""
        if n_drafted >= self.max_tokens:
            return True
        late_rule = self.entropy_lambda is not None and self.entropy_of is EntropyOf.DRAFTED
        return late_rule and n_drafted >= self.min_tokens and self._uncertain(drafted_entropy)

    def stops_before_drawing(self, step: DraftStep, p_all_accepted: float = 1.0) -> bool:
        """After the forward that fed token n (n >= 1), before token n + 1 is drawn: True
        ends the round with n tokens. `p_all_accepted` = the product of the head's
        p_accept over tokens 1..n of this round."""
        if step.n_drafted < self.min_tokens:
            return False
        if self.entropy_lambda is not None and self.entropy_of is EntropyOf.NEXT:
            if self._uncertain(step.next_entropy):
                return True
        return self.reject_threshold is not None and 1.0 - p_all_accepted > self.reject_threshold

    def _uncertain(self, entropy: float) -> bool:
        """AdaEDL's bound: 1 - sqrt(gamma * H) lower-bounds the token's acceptance."""
        return 1.0 - math.sqrt(ADAEDL_GAMMA * max(entropy, 0.0)) < self.entropy_lambda

    @property
    def needs_acceptance_head(self) -> bool:
        return self.reject_threshold is not None


class DraftLengthPolicy:
    """Per-request policy state. Subclasses override `rule` and maybe `observe`."""

    name: PolicyName

    def rule(self, limit: int) -> StopRule:
        """The stop rule for the next round; `limit` caps it (tokens left to generate)."""
        raise NotImplementedError

    def observe(self, drafted: int, accepted: int) -> None:
        """The target's verdict on the last round."""

    def wants_draft(self, limit: int) -> bool:
        """Whether the next round drafts at all (False: the target alone, k = 0)."""
        return True


@dataclass
class Fixed(DraftLengthPolicy):
    k: int
    name = PolicyName.FIXED

    def rule(self, limit: int) -> StopRule:
        return StopRule(max_tokens=max(1, min(self.k, limit)))


@dataclass
class Heuristic(DraftLengthPolicy):
    """Hugging Face's schedule: k += 2 when all were accepted, else k = max(1, k - 1)."""

    k: int
    k_max: int = 32
    name = PolicyName.HEURISTIC

    def rule(self, limit: int) -> StopRule:
        return StopRule(max_tokens=max(1, min(self.k, limit)))

    def observe(self, drafted: int, accepted: int) -> None:
        if drafted == 0:
            return
        self.k = min(self.k_max, self.k + 2) if accepted == drafted else max(1, self.k - 1)


@dataclass
class AdaEDL(DraftLengthPolicy):
    """Entropy-bound early stopping with the adaptive lambda of docs/algorithms.md §2;
    `entropy_of` DRAFTED is the earlier one-token-late rule (policy adaedl_late)."""

    k_max: int
    lam: float = 0.6
    b1: float = 0.5
    b2: float = 0.9
    eps: float = 0.01
    alpha: float = 0.9
    acceptance_rate: float = field(default=1.0)
    entropy_of: EntropyOf = EntropyOf.NEXT

    @property
    def name(self) -> PolicyName:
        return PolicyName.ADAEDL if self.entropy_of is EntropyOf.NEXT else PolicyName.ADAEDL_LATE

    def rule(self, limit: int) -> StopRule:
        return StopRule(max_tokens=max(1, min(self.k_max, limit)), entropy_lambda=self.lam, entropy_of=self.entropy_of)

    def observe(self, drafted: int, accepted: int) -> None:
        if drafted == 0:
            return
        self.acceptance_rate = self.b1 * self.acceptance_rate + (1 - self.b1) * accepted / drafted
        if self.acceptance_rate < self.alpha:
            target = self.lam + self.eps
        elif accepted != self.k_max:
            target = self.lam - self.eps
        else:
            target = self.lam
        self.lam = self.b2 * self.lam + (1 - self.b2) * target


@dataclass
class SpecDecPP(DraftLengthPolicy):
    """SpecDec++: stop once P(some draft token this round is rejected) > threshold."""

    k_max: int = SPECDECPP_K_MAX
    k_min: int = 2
    threshold: float = 0.7  # the best of 0.3-0.8 on the real pair (BENCHMARKS.md §10)
    name = PolicyName.SPECDECPP

    def rule(self, limit: int) -> StopRule:
        cap = max(1, min(self.k_max, limit))
        return StopRule(max_tokens=cap, min_tokens=min(self.k_min, cap), reject_threshold=self.threshold)


@dataclass
class Auto(DraftLengthPolicy):
    """Goodput-aware: each round drafts the k in 0..k_max (0: the target alone) that
    maximises expected tokens per second (specdec/core/goodput.py) from the costs the
    engine or coordinator measured (`speed`), this request's acceptance by position (with
    recent requests' as the prior) and the requests running now. Until both models have
    been measured it drafts `start` tokens. After PROBE_EVERY rounds in a row at k = 0 it
    drafts one token, so that acceptance keeps being measured (other requests' rounds feed
    the prior too)."""

    k_max: int
    speed: SpeedRatio | None = None
    mode: Mode = Mode.SEQUENTIAL
    start: int = 4
    name = PolicyName.AUTO
    PROBE_EVERY = 32
    accepted: list = field(default_factory=lambda: [0.0] * 65)
    judged: list = field(default_factory=lambda: [0.0] * 65)
    last: goodput.Plan | None = None  # the plan of the latest round (why it chose k)
    k_rounds: dict = field(default_factory=dict)  # k -> rounds that chose it
    chosen: int | None = None  # the k of the latest round
    _idle: int = 0
    _next: int | None = None
    _streams: int = 0
    _checked: int = 0  # _streams when leave_pearl last replanned

    def choose(self, limit: int) -> int:
        cap = max(0, min(self.k_max, limit))
        replan = self.mode is not Mode.PEARL or self.last is None or self._streams % REPLAN_STREAMS == 0
        self._streams += 1
        if not replan:  # PEARL keeps its window a while: each plan simulates the pipeline per k
            return self._record(max(1, min(self.last.k, cap)))
        costs = goodput.Costs.measured(self.speed, cap) if self.speed is not None and cap else None
        if costs is None:
            k = min(self.start, cap)
        else:
            acceptance = goodput.position_acceptance(self.accepted, self.judged, self.speed, cap)
            sessions = max(1, self.speed.in_flight)
            modes = (self.mode,) if self.mode is Mode.PEARL else (Mode.SEQUENTIAL,)
            self.last = goodput.plan(acceptance, costs, cap, sessions, modes)
            k = self.last.k
            if self.mode is Mode.PEARL:
                k = max(1, k)  # a PEARL window drafts; the request chose PEARL knowing k = 0 was there
        if k == 0 and cap:
            self._idle += 1
            if self._idle >= self.PROBE_EVERY:
                self._idle, k = 0, 1
        else:
            self._idle = 0
        return self._record(k)

    def leave_pearl(self) -> bool:
        """Mode auto chose PEARL for the request from the acceptance recent requests saw.
        Called after a rejection (nothing in flight), at most every REPLAN_STREAMS draft
        streams: replan over sequential and PEARL with this request's own acceptance; True,
        and from now on plan sequential rounds (k = 0 included), when those pay more."""
        if self.mode is not Mode.PEARL or self.speed is None or self._streams - self._checked < REPLAN_STREAMS:
            return False
        self._checked = self._streams
        costs = goodput.Costs.measured(self.speed, self.k_max)
        if costs is None:
            return False
        acceptance = goodput.position_acceptance(self.accepted, self.judged, self.speed, self.k_max)
        chosen = goodput.plan(acceptance, costs, self.k_max, max(1, self.speed.in_flight), (Mode.SEQUENTIAL, Mode.PEARL))
        if chosen.mode is Mode.PEARL:
            return False
        self.mode, self.last = Mode.SEQUENTIAL, chosen
        return True

    def _record(self, k: int) -> int:
        self.k_rounds[k] = self.k_rounds.get(k, 0) + 1
        self.chosen = k
        return k

    def wants_draft(self, limit: int) -> bool:
        self._next = self.choose(limit)
        return self._next > 0

    def rule(self, limit: int) -> StopRule:
        k, self._next = self._next, None
        if k is None:  # PEARL asks for a rule per draft stream without wants_draft
            k = self.choose(limit)
        return StopRule(max_tokens=max(1, min(k, limit)))

    def observe(self, drafted: int, accepted: int) -> None:
        count_positions(self.accepted, self.judged, drafted, accepted)


def make_policy(
    name: str, draft_length: int, threshold: float | None = None, speed: SpeedRatio | None = None,
    mode: Mode = Mode.SEQUENTIAL,
) -> DraftLengthPolicy:
    """Build a fresh per-request policy; `draft_length` is k (fixed/heuristic start) or k_max
    (GenerationRequest.resolved_draft_length fills in each policy's default); `speed` (the
    measured costs) and `mode` are what policy auto plans with."""
    try:
        which = PolicyName(name)
    except ValueError:
        choices = ", ".join(p.value for p in PolicyName)
        raise ValueError(f"policy must be one of {choices}; got {name!r}") from None
    if draft_length < 1 or draft_length > 64:
        raise ValueError(f"draft_length must be in 1..64, got {draft_length}")
    if threshold is not None and not (0.0 < threshold < 1.0):
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if which is PolicyName.FIXED:
        return Fixed(k=draft_length)
    if which is PolicyName.HEURISTIC:
        return Heuristic(k=draft_length)
    if which in (PolicyName.ADAEDL, PolicyName.ADAEDL_LATE):
        late = which is PolicyName.ADAEDL_LATE
        return AdaEDL(k_max=draft_length, entropy_of=EntropyOf.DRAFTED if late else EntropyOf.NEXT)
    if which is PolicyName.AUTO:
        return Auto(k_max=draft_length, speed=speed, mode=mode, start=min(4, draft_length))
    if threshold is None:
        return SpecDecPP(k_max=draft_length)
    return SpecDecPP(k_max=draft_length, threshold=threshold)
