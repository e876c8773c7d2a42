"""speed.py: PEARL's default window is the measured draft/target speed ratio."""

import pytest

from specdec import Engine
from specdec.core.request import AUTO_K_MAX, GenerationRequest, Mode
from specdec.core.speed import DEFAULT_DRAFT_LENGTH, MAX_AUTO_WINDOW, SpeedRatio
from specdec.runtime.cost import CostProfile


def test_window_is_the_median_pass_over_the_median_step():
    speed = SpeedRatio()
    assert speed.window() == DEFAULT_DRAFT_LENGTH  # nothing measured yet
    speed.observe_target_pass(0.030)
    assert speed.window() == DEFAULT_DRAFT_LENGTH  # one side only
    for _ in range(5):
        speed.observe_draft_step(0.005)
    speed.observe_draft_step(0.500)  # a prefill: the median ignores it
    speed.observe_target_pass(0.031)
    speed.observe_target_pass(3.0)
    assert speed.window() == 6  # 0.031 / 0.005
    speed.observe_draft_step(0.0)  # not a measurement
    assert speed.window() == 6


def test_window_is_clamped():
    fast_draft, slow_draft = SpeedRatio(), SpeedRatio()
    fast_draft.observe_draft_step(0.001)
    fast_draft.observe_target_pass(1.0)
    slow_draft.observe_draft_step(1.0)
    slow_draft.observe_target_pass(0.1)
    assert fast_draft.window() == MAX_AUTO_WINDOW and slow_draft.window() == 1


def test_a_request_without_draft_length_gets_the_window_only_in_pearl():
    speed = SpeedRatio()
    speed.observe_draft_step(0.01)
    speed.observe_target_pass(0.07)
    pearl = GenerationRequest(prompt_ids=(1, 2), mode=Mode.PEARL, policy="fixed")
    assert pearl.resolved_draft_length(speed) == 7
    assert pearl.resolved_draft_length(None) == DEFAULT_DRAFT_LENGTH
    sequential = GenerationRequest(prompt_ids=(1, 2), mode=Mode.SEQUENTIAL, policy="adaedl")
    assert sequential.resolved_draft_length(speed) == DEFAULT_DRAFT_LENGTH
    assert GenerationRequest(prompt_ids=(1, 2), mode=Mode.PEARL, draft_length=3).resolved_draft_length(speed) == 3
    # policy auto plans its own window / k up to AUTO_K_MAX
    assert GenerationRequest(prompt_ids=(1, 2), mode=Mode.PEARL).resolved_draft_length(speed) == AUTO_K_MAX
    with pytest.raises(ValueError, match="draft_length must be in 1..64"):
        GenerationRequest(prompt_ids=(1, 2), draft_length=0).validate()


def test_the_engine_measures_its_models_and_pearl_uses_the_ratio():
    """Emulated costs 60 ms / 10 ms per forward (headroom for a draft step that shares two cores
    with another test worker): after one request the window is 60/10 = 6, or 5 when the two cores
    are so busy that a draft step's Python overhead exceeds ~1 ms (emulated forwards spin, so a
    step is never faster than declared); a pearl request that names no draft length drafts
    windows of that size (still the target's greedy output)."""
    engine = Engine.from_preset("tiny", seed=0, cost=CostProfile("test-6x", target_ms=60.0, draft_ms=10.0))
    prompt = [5, 9, 13, 2, 7]
    reference = engine.generate(prompt, max_new_tokens=24, mode="autoregressive", ignore_eos=True).token_ids
    first = engine.generate(prompt, max_new_tokens=24, mode="sequential", policy="fixed", ignore_eos=True)
    assert first.token_ids == reference
    assert engine.speed.window() in (5, 6)
    auto = engine.generate(prompt, max_new_tokens=24, mode="pearl", policy="fixed", ignore_eos=True)
    two = engine.generate(prompt, max_new_tokens=24, mode="pearl", policy="fixed", draft_length=2, ignore_eos=True)
    assert auto.token_ids == two.token_ids == reference
    # windows of 5-6 send more draft tokens per verification pass than windows of 2
    assert auto.stats.draft_tokens / auto.stats.rounds > two.stats.draft_tokens / two.stats.rounds


def test_overhead_is_what_every_call_pays_not_the_queueing_under_load():
    speed = SpeedRatio()
    assert speed.overhead("target") == 0.0
    for wait in [0.001] * 10 + [0.120] * 12:  # most calls also waited for another batch's forward
        speed.observe_overhead("target", wait)
    assert speed.overhead("target") == pytest.approx(0.001)
    assert speed.overhead("draft") == 0.0
