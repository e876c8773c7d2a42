"""The PEARL loop under every interleaving of its events, with scripted endpoints.

The fakes block each call until the test releases it, so a test decides exactly
which event comes first: a draft token or the target's verdict. The world is greedy:
the target's own continuation is TARGET, the draft proposes DRAFT[p] at position p;
the fake target judges like the real one, including the kept row (a window sent right
after a fully accepted pass has its first token judged with no pass: passes = 0).
"""

from __future__ import annotations

import asyncio

import pytest

from specdec.backend.endpoints import EndpointUnavailable
from specdec.core.acceptance import Verdict
from specdec.core.request import FinishReason, GenerationRequest, Mode
from specdec.loop.generate import generate
from specdec.runtime.drafting import DraftToken
from specdec.runtime.verifying import Verification
from specdec.telemetry import spans

PROMPT = (100, 101)
TARGET = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]
EOS = 99


async def settle() -> None:
    """Let the loop run until it blocks on a fake."""
    for _ in range(50):
        await asyncio.sleep(0)


class ScriptedDraft:
    """draft() streams DRAFT[p] for each next position, one token per `emit()`."""

    def __init__(self, draft: list[int], die_after: int | None = None):
        self.guess = draft
        self.calls: list[tuple[int, int]] = []  # (positions already held, the rule's cap)
        self.closed = 0
        self._tokens = asyncio.Semaphore(0)
        self.die_after = die_after  # raise EndpointUnavailable after this many tokens in all
        self.emitted = 0

    def emit(self, n: int = 1) -> None:
        for _ in range(n):
            self._tokens.release()

    def draft(self, session_id, committed, rule, params, seed):
        self.calls.append((len(committed), rule.max_tokens))
        return self._stream(len(committed) - len(PROMPT), rule.max_tokens)

    async def _stream(self, position: int, cap: int):
        try:
            for i in range(cap):
                await self._tokens.acquire()
                if self.die_after is not None and self.emitted >= self.die_after:
                    raise EndpointUnavailable("draft worker died")
                self.emitted += 1
                yield DraftToken(self.guess[position + i], None, 0.1, 0.001)
        finally:
            self.closed += 1

    async def release(self, session_id) -> None:
        pass


class ScriptedTarget:
    """verify() returns the greedy verdict once the test calls `finish()`."""

    def __init__(self, target: list[int]):
        self.truth = target
        self.calls: list[tuple[int, list[int]]] = []  # (committed length, draft tokens)
        self._done = asyncio.Semaphore(0)
        self.row_at: int | None = None  # committed length its last pass ended at (the kept row)

    def finish(self, n: int = 1) -> None:
        for _ in range(n):
            self._done.release()

    @property
    def waiting(self) -> int:
        return len(self.calls) - self.answered

    answered = 0
    row_only = 0  # verdicts given from the kept row, with no pass

    async def verify(self, session_id, committed, draft, proposals, params, seed) -> Verification:
        self.calls.append((len(committed), list(draft)))
        position = len(committed) - len(PROMPT)
        kept = self.row_at == len(committed)
        if kept and draft and draft[0] != self.truth[position]:  # judged against the kept row: no pass
            self.answered += 1
            self.row_only += 1
            self.row_at = None
            return Verification(Verdict(0, self.truth[position], len(draft)), 0.0, passes=0)
        await self._done.acquire()
        self.answered += 1
        accepted = 0
        while accepted < len(draft) and draft[accepted] == self.truth[position + accepted]:
            accepted += 1
        self.row_at = len(committed) + len(draft) if accepted == len(draft) else None
        return Verification(Verdict(accepted, self.truth[position + accepted], len(draft)), 0.03)

    async def release(self, session_id) -> None:
        pass


def request(max_new_tokens=8, window=3, ignore_eos=True) -> GenerationRequest:
    return GenerationRequest(PROMPT, max_new_tokens=max_new_tokens, mode=Mode.PEARL, policy="fixed",
                             draft_length=window, ignore_eos=ignore_eos, seed=0)


def start(draft, target, req) -> asyncio.Task:
    return asyncio.ensure_future(generate(req, draft, target, [EOS], 4096))


def run(coro):
    return asyncio.run(coro)


def test_the_target_starts_on_the_prompt_at_once_and_judges_tokens_that_came_before_its_verdict():
    async def scenario():
        draft, target = ScriptedDraft(TARGET), ScriptedTarget(TARGET)
        task = start(draft, target, request(max_new_tokens=6))
        await settle()
        assert target.calls == [(2, [])]  # the pre-verify pass over the prompt needs no draft token
        assert draft.calls == [(2, 3)]  # while the draft starts its first window
        draft.emit(2)  # two tokens arrive before the verdict
        await settle()
        target.finish()  # verdict of the prompt pass: the target keeps its row
        await settle()
        assert target.calls[1] == (2, [10, 11])  # the window: everything drafted meanwhile
        draft.emit(10)
        target.finish(10)
        result = await task
        assert result.token_ids == TARGET[:6]
        assert result.finish_reason is FinishReason.LENGTH
        return result

    result = run(scenario())
    assert result.stats.accepted_tokens == result.stats.draft_tokens  # a perfect draft


def test_a_verdict_before_any_token_waits_for_the_first_token_then_sends_it_alone():
    async def scenario():
        draft, target = ScriptedDraft(TARGET), ScriptedTarget(TARGET)
        task = start(draft, target, request(max_new_tokens=4))
        await settle()
        target.finish()  # the prompt pass ends before the draft has anything
        await settle()
        assert len(target.calls) == 1  # nothing to send: the target waits (it holds the row)
        draft.emit()
        await settle()
        assert target.calls[1] == (2, [10])  # sent as soon as it exists
        draft.emit(10)
        target.finish(10)
        return await task

    assert run(scenario()).token_ids == TARGET[:4]


def test_a_rejection_mid_window_commits_the_recovered_token_and_restarts_both_sides_at_once():
    guess = list(TARGET)
    guess[2] = 55  # the draft is wrong at generated position 2
    async def scenario():
        draft, target = ScriptedDraft(guess), ScriptedTarget(TARGET)
        task = start(draft, target, request(max_new_tokens=8, window=4))
        await settle()
        draft.emit(4)  # 10 11 55 13
        await settle()
        target.finish()  # prompt pass
        await settle()
        assert target.calls[1] == (2, [10, 11, 55, 13])
        draft.emit(2)  # the draft goes on past the window (14 15) while it is verified
        await settle()
        target.finish()  # verdict: 10 11 accepted, 55 rejected -> 12
        await settle()
        assert draft.closed >= 2, (draft.calls, target.calls)  # the stale stream was cancelled
        assert target.calls[2] == (5, [])  # the pre-verify pass over [.., 12] started at once
        assert draft.calls[-1][0] == 5  # and the draft restarted from the committed sequence
        draft.emit(20)
        target.finish(20)
        return await task

    result = run(scenario())
    assert result.token_ids == TARGET[:8]


def test_a_first_token_rejected_by_the_kept_row_costs_no_pass():
    guess = list(TARGET)
    guess[3] = 77
    async def scenario():
        draft, target = ScriptedDraft(guess), ScriptedTarget(TARGET)
        task = start(draft, target, request(max_new_tokens=6, window=3))
        await settle()
        draft.emit(3)  # 10 11 12
        await settle()
        target.finish()
        await settle()
        assert target.calls[1] == (2, [10, 11, 12])
        draft.emit(1)  # 77: the next window's first token, wrong
        await settle()
        target.finish()  # all three accepted: the row after 12 is kept
        await settle()
        assert target.calls[2] == (5, [77])  # judged against the kept row...
        assert target.calls[3] == (6, [])  # ...rejected with no pass; 13 committed, pre-verify at once
        draft.emit(20)
        target.finish(20)
        return await task, target

    result, target = run(scenario())
    assert result.token_ids == TARGET[:6]
    assert target.row_only >= 1
    assert result.stats.rounds == len(target.calls) - target.row_only  # rounds count passes only


def test_the_draft_dying_mid_window_finishes_the_request_target_only():
    async def scenario():
        draft, target = ScriptedDraft(TARGET, die_after=2), ScriptedTarget(TARGET)
        task = start(draft, target, request(max_new_tokens=6))
        await settle()
        draft.emit(3)  # two tokens, then the stream fails
        target.finish(20)
        await settle()
        return await task

    result = run(scenario())
    assert result.token_ids == TARGET[:6]
    assert result.stats.draft_fallback


@pytest.mark.parametrize("cut", ["eos", "length"])
def test_eos_or_max_new_tokens_inside_a_window_cuts_the_output_there(cut):
    truth = list(TARGET)
    if cut == "eos":
        truth[2] = EOS
    async def scenario():
        draft, target = ScriptedDraft(truth), ScriptedTarget(truth)
        req = request(max_new_tokens=3 if cut == "length" else 8, window=4, ignore_eos=False)
        task = start(draft, target, req)
        await settle()
        draft.emit(4)
        await settle()
        target.finish()
        await settle()
        draft.emit(10)
        target.finish(10)
        return await task

    result = run(scenario())
    assert result.token_ids == truth[:3]
    assert result.finish_reason is (FinishReason.STOP if cut == "eos" else FinishReason.LENGTH)


def test_the_policy_observes_each_draft_stream_once(monkeypatch):
    """Not each target call: a stream split over two windows is one observation."""
    from specdec.core import policies

    seen = []
    monkeypatch.setattr(policies.Fixed, "observe", lambda self, d, a: seen.append((d, a)), raising=False)
    guess = list(TARGET)
    guess[5] = 66
    async def scenario():
        draft, target = ScriptedDraft(guess), ScriptedTarget(TARGET)
        task = start(draft, target, request(max_new_tokens=8, window=3))
        await settle()
        draft.emit(1)  # 10
        target.finish()  # prompt pass
        await settle()
        assert target.calls[1] == (2, [10])  # the first stream's first token alone...
        draft.emit(2)  # 11 12: the rest of the first stream
        await settle()
        target.finish()
        await settle()
        assert target.calls[2] == (3, [11, 12])  # ...and its other two in the next window
        draft.emit(20)
        target.finish(20)
        return await task

    result = run(scenario())
    assert result.token_ids == TARGET[:8]
    assert seen[0] == (3, 3)  # stream 1: three tokens judged over two windows, all accepted


def test_spans_per_target_call_and_rollback():
    from specdec.telemetry.tracing import SpanCollector, setup_tracing

    collector = SpanCollector()
    setup_tracing("specdec-test").add_span_processor(collector)
    try:
        test_a_rejection_mid_window_commits_the_recovered_token_and_restarts_both_sides_at_once()
        got = collector.spans()
    finally:
        collector.close()
    rounds = [s for s in got if s.name == "specdec.round"]
    phases = [s.attributes.get(spans.PHASE) for s in got if s.name in ("specdec.pre-verify", "specdec.post-verify")]
    assert len(rounds) == len(phases) and phases[0] == spans.PRE_VERIFY
    assert spans.POST_VERIFY in phases
    assert [s for s in got if s.name == "specdec.rollback"]
    assert any(s.attributes.get(spans.CANCELLED) for s in got if s.name == "specdec.draft")
