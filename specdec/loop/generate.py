"""The request loop: autoregressive, sequential, PEARL and GSD rounds against two endpoints.

The same code runs embedded (specdec.backend.local) and distributed (gRPC
endpoints in coordinator/remote.py). The coordinator's `committed` list is the
truth; workers only cache it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Sequence

from specdec.backend.endpoints import DraftEndpoint, EndpointUnavailable, TargetEndpoint
from specdec.core import goodput, rng
from specdec.core.policies import DraftLengthPolicy, make_policy
from specdec.core.request import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    Mode,
    RequestStats,
)
from specdec.core.speed import SpeedRatio
from specdec.runtime.drafting import DraftToken
from specdec.telemetry import spans

log = logging.getLogger(__name__)

# (new token ids) -> stop?, called as tokens are committed, in order; returning True
# finishes the request with FinishReason.STOP (the coordinator's stop strings)
OnTokens = Callable[[list[int]], "bool | None"]


@dataclass
class Output:
    """The committed sequence and the stopping rules; `emit` is the only way to grow it."""

    request: GenerationRequest
    eos_ids: frozenset[int]
    context_length: int
    on_tokens: OnTokens | None
    committed: list[int] = field(default_factory=list)
    generated: int = 0
    finish: FinishReason | None = None

    def __post_init__(self):
        self.committed = list(self.request.prompt_ids)

    @property
    def remaining(self) -> int:
        """Tokens still allowed, by max_new_tokens and by the model's context."""
        by_context = self.context_length - len(self.committed)
        return max(0, min(self.request.max_new_tokens - self.generated, by_context))

    def emit(self, tokens: Sequence[int]) -> None:
        new = []
        for token in tokens:
            if self.remaining == 0 or self.finish is not None:
                break
            new.append(token)
            self.committed.append(token)
            self.generated += 1
            if token in self.eos_ids:
                self.finish = FinishReason.STOP
                break
        if self.finish is None and self.remaining == 0:
            self.finish = FinishReason.LENGTH
        if new and self.on_tokens is not None and self.on_tokens(new):
            self.finish = FinishReason.STOP

    @property
    def done(self) -> bool:
        return self.finish is not None


@dataclass
class _Clock:
    """Compute intervals seen by the coordinator, for the critical-path time split."""

    intervals: list[tuple[float, float]] = field(default_factory=list)

    def add(self, end: float, seconds: float) -> None:
        self.intervals.append((end - seconds, end))

    def union(self) -> float:
        total, cur_start, cur_end = 0.0, None, None
        for start, end in sorted(self.intervals):
            if cur_end is None or start > cur_end:
                if cur_end is not None:
                    total += cur_end - cur_start
                cur_start, cur_end = start, end
            else:
                cur_end = max(cur_end, end)
        return total + ((cur_end - cur_start) if cur_end is not None else 0.0)


class Request:
    """One request's state across rounds."""

    def __init__(self, request, draft, target, eos_ids, context_length, on_tokens, speed=None):
        self.req: GenerationRequest = request
        self.draft: DraftEndpoint | None = draft
        self.target: TargetEndpoint = target
        self.params = request.sampling
        self.seed = request.seed if request.seed is not None else rng.fresh_seed()
        self.session_id = uuid.uuid4().hex
        self.speed: SpeedRatio | None = speed  # shared across requests: what the models cost, as measured
        self.mode, self.mode_plan = choose_mode(request, draft is not None, speed)
        self.draft_length = request.resolved_draft_length(speed, self.mode)
        self.policy: DraftLengthPolicy = make_policy(
            request.policy, self.draft_length, request.threshold, speed=speed, mode=self.mode
        )
        self._target_calls = 0
        self._decoding = False  # counted in speed.in_flight (past its first token)
        eos = frozenset() if request.ignore_eos else frozenset(eos_ids)
        self.out = Output(request, eos | frozenset(request.stop_token_ids), context_length, on_tokens)
        self.stats = RequestStats()
        self.clock = _Clock()
        self.started = time.perf_counter()

    # -- the two calls, timed -------------------------------------------------------

    async def verify(self, draft: Sequence[DraftToken], phase: str = spans.VERIFY):
        tokens = [d.token for d in draft]
        proposals = None if self.params.greedy else [d.q for d in draft]
        with spans.phase(phase, draft_tokens=len(tokens)) as span:
            began = time.perf_counter()
            v = await self.target.verify(self.session_id, self.out.committed, tokens, proposals, self.params, self.seed)
            ended = time.perf_counter()
            span.set_attribute(spans.ACCEPTED_TOKENS, v.verdict.accepted)
            if not v.passes:
                span.set_attribute(spans.KEPT_ROW_ONLY, True)
        self.clock.add(ended, v.seconds)
        self._target_calls += 1
        if self.speed is not None and v.passes:
            # a round's pass covers the token committed since the last one and the draft; the first, the prompt.
            # A worker that merged sessions reports the forward's tokens, all sessions': that keys the cost.
            prefill = self._target_calls == 1
            own = len(self.out.committed) if prefill else len(tokens) + 1
            merged = None if prefill or not v.batch_tokens else v.batch_tokens > own
            self.speed.observe_target_pass(
                v.seconds, max(own, v.batch_tokens), concurrent=self.mode is Mode.PEARL, merged=merged
            )
            self.speed.observe_overhead("target", max(0.0, ended - began - v.seconds))
        self.stats.target_compute_s += v.seconds
        self.stats.network_s += max(0.0, ended - began - v.seconds)
        self.stats.rounds += v.passes  # a verdict from the kept row alone took no pass
        self.stats.draft_tokens += len(tokens)
        self.stats.accepted_tokens += v.verdict.accepted
        return v.verdict

    def observe(self, drafted: int, accepted: int) -> None:
        """One draft round's outcome, for the adaptive policies: how many of its tokens
        the target judged and how many it accepted."""
        if drafted:
            self.policy.observe(drafted, accepted)
            if self.speed is not None:
                self.speed.observe_acceptance(drafted, accepted)

    def draft_stream(self, committed: Sequence[int], limit: int):
        return self.draft.draft(self.session_id, committed, self.policy.rule(limit), self.params, self.seed)

    def note_draft(self, token: DraftToken) -> None:
        self.clock.add(time.perf_counter(), token.seconds)
        if self.speed is not None:
            self.speed.observe_draft_step(token.seconds, concurrent=self.mode is Mode.PEARL)
        self.stats.draft_compute_s += token.seconds

    def commit(self, tokens: Sequence[int]) -> None:
        self.stats.emitted_tokens += len(tokens)
        if tokens and self.stats.time_to_first_token_s == 0.0:
            self.stats.time_to_first_token_s = time.perf_counter() - self.started
            if self.speed is not None:  # decoding from now on: it shares the decoding forwards
                self.speed.in_flight += 1
                self._decoding = True
        self.out.emit(tokens)

    def leave_pearl(self) -> bool:
        """Mode auto only: PEARL was chosen from recent requests' acceptance; after a
        rejection the policy may find with this request's own that sequential rounds (or
        the target alone) pay more. Then the rest of the request runs them."""
        leave = getattr(self.policy, "leave_pearl", None)
        if self.mode_plan is None or self.mode is not Mode.PEARL or leave is None or not leave():
            return False
        self.mode = Mode.SEQUENTIAL
        self.stats.mode_run = f"{Mode.PEARL.value},{Mode.SEQUENTIAL.value}"
        return True

    def fall_back(self, exc: Exception) -> None:
        """A dead draft degrades the request to target-only decoding, never to an error."""
        log.warning("draft endpoint failed (%s); session %s continues target-only", exc, self.session_id)
        spans.add_event("specdec.draft_fallback", error=str(exc))
        self.draft = None
        self.stats.draft_fallback = True

    # -- rounds' spans (specdec.telemetry.spans; no-ops without an OpenTelemetry SDK) -

    def round_span(self):
        return spans.round_span(self.stats.rounds + 1, **self._span_attributes())

    def start_round(self):
        return spans.start_round(self.stats.rounds + 1, **self._span_attributes())

    def record_round(self, span, drafted: int, accepted: int, recovered: bool, bonus: bool) -> None:
        spans.record_round(span, drafted, accepted, recovered, bonus, self.stats.mean_acceptance_length)

    def _span_attributes(self) -> dict:
        return dict(session=self.session_id, mode=self.mode.value, policy=self.req.policy,
                    auto_k=getattr(self.policy, "chosen", None))

    # -- modes ----------------------------------------------------------------------

    async def autoregressive_round(self) -> None:
        with self.round_span() as span:
            verdict = await self.verify([])
            self.commit([verdict.next_token])
            self.record_round(span, 0, 0, recovered=False, bonus=False)

    async def sequential_round(self) -> None:
        limit = self.out.remaining - 1
        if limit < 1 or self.draft is None or not self.policy.wants_draft(limit):
            return await self.autoregressive_round()
        with self.round_span() as span:
            draft: list[DraftToken] = []
            try:
                with spans.phase(spans.DRAFT) as drafting:
                    began = time.perf_counter()
                    async for token in self.draft_stream(self.out.committed, limit):
                        self.note_draft(token)
                        draft.append(token)
                    drafting.set_attribute(spans.DRAFT_TOKENS, len(draft))
                    if self.speed is not None and draft:
                        outside = time.perf_counter() - began - sum(d.seconds for d in draft)
                        self.speed.observe_overhead("draft", max(0.0, outside))
            except EndpointUnavailable as exc:
                return self.fall_back(exc)
            verdict = await self.verify(draft)
            self.observe(len(draft), verdict.accepted)
            self.commit([d.token for d in draft[: verdict.accepted]] + [verdict.next_token])
            all_in = verdict.all_accepted
            self.record_round(span, len(draft), verdict.accepted, recovered=not all_in, bonus=all_in)

    async def gsd_round(self) -> None:
        """GSD: the draft sends a token tree, the target keeps one root path of it."""
        limit = self.out.remaining - 1
        if limit < 1 or self.draft is None:
            return await self.autoregressive_round()
        shape = dataclasses.replace(self.req.tree, depth=min(self.req.tree.depth, limit))
        with self.round_span() as span:
            await self._gsd_round(shape, span)

    async def _gsd_round(self, shape, span) -> None:
        began = time.perf_counter()
        try:
            with spans.phase(spans.DRAFT) as draft_span:
                tree = await self.draft.draft_tree(self.session_id, self.out.committed, shape, self.params, self.seed)
                spans.record_tree(draft_span, tree)
        except EndpointUnavailable as exc:
            return self.fall_back(exc)
        drafted = time.perf_counter()
        with spans.phase(spans.VERIFY, draft_tokens=len(tree)):
            v = await self.target.verify_tree(self.session_id, self.out.committed, tree, self.params, self.seed)
        ended = time.perf_counter()
        self.clock.add(drafted, tree.seconds)
        self.clock.add(ended, v.seconds)
        s = self.stats
        s.draft_compute_s += tree.seconds
        s.target_compute_s += v.seconds
        s.network_s += max(0.0, drafted - began - tree.seconds) + max(0.0, ended - drafted - v.seconds)
        s.rounds += 1
        s.draft_tokens += len(tree)
        s.accepted_tokens += v.verdict.accepted
        s.tree_nodes += len(tree)
        s.dag_nodes += tree.dag_nodes
        s.merged_nodes += tree.merged_nodes
        s.saved_rows += tree.saved_rows
        s.saved_forwards += tree.saved_forwards
        self.commit(list(v.verdict.tokens) + [v.verdict.next_token])
        at_leaf = bool(v.verdict.path) and v.verdict.path[-1] not in tree.parents  # then next_token is a bonus
        self.record_round(span, len(tree), v.verdict.accepted, recovered=not at_leaf, bonus=at_leaf)

    async def run(self) -> GenerationResult:
        with spans.request_span(self.session_id, self.req, self.draft_length) as span:
            if self.mode_plan is not None or self.mode is not self.req.mode:
                spans.record_auto_mode(span, self.mode.value, self.mode_plan.why if self.mode_plan else "")
            try:
                result = await self._run()
            finally:
                if self._decoding:
                    self.speed.in_flight -= 1
            spans.record_result(span, result.stats, len(result.token_ids), result.finish_reason.value)
        return result

    async def _run(self) -> GenerationResult:
        mode = self.mode
        self.stats.mode_run = mode.value
        try:
            if mode is Mode.PEARL:
                from specdec.loop.pearl import run_pearl

                await run_pearl(self)
            while not self.out.done:
                if mode is Mode.AUTOREGRESSIVE:
                    await self.autoregressive_round()
                elif mode in (Mode.SEQUENTIAL, Mode.PEARL):
                    await self.sequential_round()
                elif mode is Mode.GSD:
                    await self.gsd_round()
                else:
                    raise ValueError(f"mode {mode.value} is not available in this build")
        except asyncio.CancelledError:
            self.out.finish = FinishReason.CANCELLED
            raise
        finally:
            await self.release()
        self.stats.auto_k_rounds = dict(getattr(self.policy, "k_rounds", {}))
        self.stats.wall_s = time.perf_counter() - self.started
        self.stats.critical_compute_s = self.clock.union()
        prompt_len = len(self.req.prompt_ids)
        return GenerationResult(self.out.committed[prompt_len:], self.out.finish, self.stats, self.seed)

    async def release(self) -> None:
        endpoints = [e for e in (self.draft, self.target) if e is not None]
        results = await asyncio.gather(*(e.release(self.session_id) for e in endpoints), return_exceptions=True)
        for r in results:
            if isinstance(r, Exception):
                log.debug("release of session %s failed: %s", self.session_id, r)


def choose_mode(request: GenerationRequest, has_draft: bool, speed: SpeedRatio | None):
    """(the mode to run, the plan behind it or None). Mode auto runs PEARL when the
    measured costs say its overlap pays more than sequential rounds (k = 0 included:
    sequential rounds under policy auto fall back to the target alone round by round),
    sequential otherwise, and the target alone without a draft."""
    if request.mode is not Mode.AUTO:
        return request.mode, None
    if not has_draft:
        return Mode.AUTOREGRESSIVE, None
    k_max = request.resolved_draft_length(None, Mode.SEQUENTIAL)
    costs = goodput.Costs.measured(speed, k_max) if speed is not None else None
    if costs is None:
        return Mode.SEQUENTIAL, None  # its rounds measure the models
    acceptance = goodput.position_acceptance([], [], speed, k_max)
    chosen = goodput.plan(acceptance, costs, k_max, max(1, speed.in_flight + 1), (Mode.SEQUENTIAL, Mode.PEARL))
    return (Mode.PEARL if chosen.mode is Mode.PEARL else Mode.SEQUENTIAL), chosen


async def generate(
    request: GenerationRequest,
    draft: DraftEndpoint | None,
    target: TargetEndpoint,
    eos_ids: Sequence[int],
    context_length: int,
    on_tokens: OnTokens | None = None,
    speed: SpeedRatio | None = None,
) -> GenerationResult:
    """Run one request to completion (or cancellation) and return its result. `speed`
    (shared by the caller's requests) measures the models and sets PEARL's default window."""
    if request.mode not in (Mode.AUTOREGRESSIVE, Mode.AUTO) and draft is None:
        raise ValueError(f"mode {request.mode.value} needs a draft model")
    return await Request(request, draft, target, eos_ids, context_length, on_tokens, speed).run()
