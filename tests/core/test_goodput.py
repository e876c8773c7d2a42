"""The goodput estimator and policy auto (specdec/core/goodput.py, docs/algorithms.md §6):
the formulas on hand-computed numbers, the choices they imply on CPU-like and GPU-like
costs, under load and on a shared device, and the policy's probing at k = 0."""

from __future__ import annotations

import pytest

from specdec import Engine
from specdec.core import goodput
from specdec.core.names import Mode
from specdec.core.pipeline import steady_state
from specdec.core.policies import Auto, make_policy
from specdec.core.speed import SpeedRatio
from specdec.runtime.cost import CostProfile
from tests.helpers.fakes import fake_pair

A = [0.73] * 8


def costs(t_d: float, t: callable, k_max: int = 8, **kw) -> goodput.Costs:
    return goodput.Costs(draft_step=t_d, target_pass={n: t(n) for n in range(1, k_max + 2)}, **kw)


FLAT = costs(0.267, lambda n: 1.0)  # the gpu-like profile: a pass is flat, a draft step c = 0.267
LINEAR = costs(0.33, lambda n: float(n))  # this CPU in fp32: a pass over n tokens costs ~n steps


def test_expected_tokens_and_round_seconds_by_hand():
    assert goodput.expected_tokens([0.5, 0.5], 2) == pytest.approx(1 + 0.5 + 0.25)
    assert goodput.expected_tokens(A, 0) == 1.0
    c = costs(0.25, lambda n: 1.0, draft_overhead=0.01, target_overhead=0.02)
    assert goodput.round_seconds(0, c) == pytest.approx(1.02)  # no draft call at k = 0
    assert goodput.round_seconds(4, c) == pytest.approx(4 * 0.25 + 0.01 + 1.0 + 0.02)
    assert goodput.round_seconds(4, c, sessions=4) == pytest.approx(4 * 1.02)  # behind the others' passes


def test_pearl_goodput_is_the_pipeline_model():
    """a = 0.73, c = 0.267, K = 4: the pipeline model of docs/algorithms.md §4 gives ~1.70x
    over the target alone in steady state; PEARL's goodput is that rate, in seconds."""
    speedup, passes = steady_state(0.73, 0.73, 0.267, 4)
    assert speedup == pytest.approx(1.70, abs=0.03) and 0 < passes < 1
    assert goodput.goodput(Mode.PEARL, 4, A, FLAT) == pytest.approx(speedup / 1.0)
    # a slower draft (c = 0.5) hides less
    assert goodput.goodput(Mode.PEARL, 4, A, costs(0.5, lambda n: 1.0)) < speedup


def test_cpu_like_costs_choose_the_target_alone():
    chosen = goodput.plan([0.6] * 8, LINEAR, 8, modes=(Mode.SEQUENTIAL, Mode.PEARL))
    assert (chosen.mode, chosen.k) == (Mode.AUTOREGRESSIVE, 0)
    assert chosen.goodput == chosen.baseline
    # ... unless the draft almost always agrees and costs little
    cheap = costs(0.05, lambda n: 1.0 + 0.1 * (n - 1))
    assert goodput.plan([0.95] * 8, cheap, 8).k > 0


def test_gpu_like_costs_choose_to_speculate_and_pearl_when_devices_are_separate():
    sequential = goodput.plan(A, FLAT, 8)
    assert sequential.mode is Mode.SEQUENTIAL and 2 <= sequential.k <= 6
    both = goodput.plan(A, FLAT, 8, modes=(Mode.SEQUENTIAL, Mode.PEARL))
    assert both.mode is Mode.PEARL and both.goodput > sequential.goodput
    # on a shared device each model computes ~2x slower while the other runs: PEARL no longer pays
    shared = costs(0.267, lambda n: 1.0, draft_slowdown=2.0, target_slowdown=2.0)
    assert goodput.plan(A, shared, 8, modes=(Mode.SEQUENTIAL, Mode.PEARL)).mode is Mode.SEQUENTIAL


def test_low_acceptance_shortens_drafts():
    high, low = goodput.plan([0.9] * 8, FLAT, 8).k, goodput.plan([0.3] * 8, FLAT, 8).k
    assert high > low


def test_load_removes_pearls_advantage_and_linear_costs_stay_at_zero():
    """16 requests on the same workers: every worker is busy anyway, so PEARL's overlap is
    worth nothing while its rejected windows still cost passes."""
    busy = goodput.plan(A, FLAT, 8, sessions=16, modes=(Mode.SEQUENTIAL, Mode.PEARL))
    assert busy.mode is Mode.SEQUENTIAL
    assert goodput.plan(A, LINEAR, 8, sessions=16).k == 0


def roofline(budget: int = 32) -> goodput.Costs:
    """The gpu-batch profile: a forward is flat up to `budget` tokens of all merged sessions,
    linear past it; the worker merges sessions."""
    table = tuple((n, max(1.0, n / budget)) for n in (1, 2, 5, 8, 16, 32, 64, 128, 256))
    return costs(0.267, lambda n: max(1.0, n / budget), merged=True, table=table)


def test_merged_batches_speculate_within_the_budget_and_stop_past_it():
    """Sessions merged into one forward: speculation is free while S (k+1) tokens fit the
    budget, and costs the other sessions compute past it, so k falls, to 0 at 32 sessions."""
    c = roofline()
    assert c.pass_at(160) == pytest.approx(5.0) and c.pass_at(48) == pytest.approx(1.5)
    assert goodput.round_seconds(4, c, sessions=16) == pytest.approx(4 * 0.267 + 80 / 32)  # shared, not queued
    alone, some, many = (goodput.plan(A, c, 8, sessions=s) for s in (1, 16, 32))
    assert alone.k > some.k >= 1 and (many.mode, many.k) == (Mode.AUTOREGRESSIVE, 0)
    assert goodput.round_seconds(0, c, sessions=32) == pytest.approx(1.0)  # 32 tokens: one flat forward
    # a worker that merges 16 at most runs 32 sessions as two forwards of 16: a window of 1
    # fills each to the budget (2 x 32 tokens) for the same time as k = 0
    capped = goodput.Costs(c.draft_step, c.target_pass, merged=True, max_batch=16, table=c.table)
    assert goodput.round_seconds(0, capped, sessions=32) == pytest.approx(2.0)
    assert goodput.plan(A, capped, 8, sessions=32).k == 1
    # the same devices without merging: the sessions queue, one pass each
    queued = goodput.Costs(c.draft_step, c.target_pass)
    assert goodput.round_seconds(0, queued, sessions=32) == pytest.approx(32.0)


def test_measured_costs_know_merged_forwards():
    speed = SpeedRatio()
    speed.observe_draft_step(0.01)
    speed.observe_target_pass(0.03, n_tokens=5, merged=False)
    assert not goodput.Costs.measured(speed, 4).merged
    speed.observe_target_pass(0.09, n_tokens=93, merged=True)  # bucketed to 96
    speed.costs_cache.clear()
    c = goodput.Costs.measured(speed, 4)
    assert c.merged and c.table[-1] == (96, pytest.approx(0.09))
    assert c.pass_at(50) == pytest.approx(0.03 + 0.06 * 45 / 91)


def test_measured_costs_interpolate_pass_sizes():
    speed = SpeedRatio()
    assert goodput.Costs.measured(speed, 4) is None
    speed.observe_draft_step(0.01)
    speed.observe_target_pass(0.10, n_tokens=1)
    speed.observe_target_pass(0.30, n_tokens=5)
    c = goodput.Costs.measured(speed, 4)
    assert c.target_pass[1] == pytest.approx(0.10) and c.target_pass[3] == pytest.approx(0.20)
    assert c.target_pass[5] == pytest.approx(0.30) and c.draft_slowdown == 1.0
    speed.observe_draft_step(0.02, concurrent=True)
    assert goodput.Costs.measured(speed, 4).draft_slowdown == 1.0  # recomputed at most every REFRESH_S
    speed.costs_cache.clear()
    assert goodput.Costs.measured(speed, 4).draft_slowdown == pytest.approx(2.0)


def test_acceptance_prior_comes_from_recent_requests():
    speed = SpeedRatio()
    fresh = goodput.position_acceptance([], [], speed, 3)
    assert fresh == [goodput.ACCEPTANCE_PRIOR] * 3
    for _ in range(20):
        speed.observe_acceptance(drafted=3, accepted=3)
    assert all(a > 0.95 for a in goodput.position_acceptance([], [], speed, 3))
    own_rejections = [0.0, 0.0, 0.0, 0.0]
    judged = [0.0, 40.0, 0.0, 0.0]
    assert goodput.position_acceptance(own_rejections, judged, speed, 3)[0] < 0.1


def test_auto_policy_runs_the_target_alone_on_cpu_costs_and_probes():
    speed = SpeedRatio()
    speed.observe_draft_step(0.33)
    for n in range(1, 10):
        speed.observe_target_pass(float(n), n_tokens=n)
    policy = make_policy("auto", 8, speed=speed)
    assert isinstance(policy, Auto)
    drafts = [policy.wants_draft(100) for _ in range(2 * Auto.PROBE_EVERY)]
    assert drafts.count(True) == 2 and policy.k_rounds == {0: 2 * Auto.PROBE_EVERY - 2, 1: 2}
    assert policy.rule(100).max_tokens == 1  # a probe drafts one token


def test_auto_policy_speculates_on_flat_costs_and_follows_its_own_acceptance():
    speed = SpeedRatio()
    speed.observe_draft_step(0.267)
    speed.observe_target_pass(1.0, n_tokens=1)
    speed.observe_target_pass(1.0, n_tokens=9)
    policy = make_policy("auto", 8, speed=speed)
    assert policy.wants_draft(100) and policy.rule(100).max_tokens >= 2
    first = policy.chosen
    for _ in range(30):
        policy.observe(drafted=first, accepted=0)  # this request's draft is always wrong
    assert not policy.wants_draft(100)


def test_auto_mode_and_policy_keep_greedy_output_exact():
    """Policy auto at k = 0 and k > 0 in one engine: the target's own tokens either way."""
    engine = Engine.from_preset("tiny", seed=0, cost=CostProfile("test-auto", target_ms=20.0, draft_ms=2.0))
    prompt = [5, 9, 13, 2, 7]
    reference = engine.generate(prompt, max_new_tokens=24, mode="autoregressive", ignore_eos=True).token_ids
    runs = [engine.generate(prompt, max_new_tokens=24, ignore_eos=True) for _ in range(2)]  # the defaults: auto
    assert all(r.token_ids == reference for r in runs)
    assert runs[-1].stats.mode_run in ("sequential", "pearl", "pearl,sequential") and runs[-1].stats.auto_k_rounds
    expensive = Engine.from_preset("tiny", seed=0, cost=CostProfile("test-auto-slow-draft", target_ms=10.0, draft_ms=15.0))
    slow = [expensive.generate(prompt, max_new_tokens=24, ignore_eos=True) for _ in range(2)]
    assert slow[-1].token_ids == reference
    assert slow[-1].stats.mode_run == "sequential" and slow[-1].stats.auto_k_rounds.get(0, 0) > 0


def test_auto_policy_leaves_pearl_when_its_own_acceptance_says_sequential_pays():
    speed = SpeedRatio()
    speed.observe_draft_step(0.1)
    speed.observe_target_pass(1.0, n_tokens=1)
    speed.observe_target_pass(1.0, n_tokens=9)
    for _ in range(50):
        speed.observe_acceptance(drafted=8, accepted=8)  # recent requests: the draft always right
    policy = make_policy("auto", 8, speed=speed, mode=Mode.PEARL)
    assert not policy.leave_pearl()  # too early: fewer than REPLAN_STREAMS streams
    for _ in range(8):
        policy.rule(100)
        assert policy.mode is Mode.PEARL
    assert not policy.leave_pearl()  # its own acceptance is not known yet: the prior still says PEARL
    for _ in range(8):
        policy.rule(100)
        policy.observe(drafted=4, accepted=0)  # this request's draft is always wrong
    assert policy.leave_pearl() and policy.mode is Mode.SEQUENTIAL
    # a_1 ~ 1/3 now, carried to the deeper positions: sequential k = 1 (1.21 tok/s) beats
    # PEARL's best (1.12) and the target alone (1.0) on these flat costs
    assert policy.wants_draft(100) and policy.chosen == 1 and policy.last.mode is Mode.SEQUENTIAL


def test_a_request_judged_below_the_traffic_is_not_assumed_to_match_it_deeper():
    speed = SpeedRatio()
    for _ in range(50):
        speed.observe_acceptance(drafted=4, accepted=4)
    judged, accepted = [0.0, 12.0], [0.0, 3.0]  # position 1: 3 of 12 accepted
    a = goodput.position_acceptance(accepted, judged, speed, 4)
    assert a[0] == pytest.approx((3 + 4 * 0.999) / 16, abs=0.01)
    assert all(x == pytest.approx(a[0], abs=0.01) for x in a[1:])  # the ratio to the prior carried deeper
    assert goodput.position_acceptance([], [], speed, 4) == pytest.approx([0.999] * 4, abs=0.01)  # no own evidence


def test_a_mode_auto_request_that_chose_pearl_on_the_prior_leaves_it_and_stays_exact():
    """An independent draft (mix 0: it rarely agrees) behind a prior of recent requests whose
    draft was always right: mode auto starts in PEARL, the request's own rejections make it
    leave for sequential rounds, and the output is still the target's own."""
    draft, target = fake_pair(mix=0.0, vocab=12)
    engine = Engine(draft, target, None, eos_token_ids=[], cost=CostProfile("leave-pearl", target_ms=20.0, draft_ms=2.0))
    prompt = [1, 2, 3]
    reference = engine.generate(prompt, max_new_tokens=48, mode="autoregressive").token_ids
    engine.generate(prompt, max_new_tokens=8, mode="sequential", policy="fixed", draft_length=2)  # measures costs
    for _ in range(200):
        engine.speed.observe_acceptance(drafted=8, accepted=8)
    result = engine.generate(prompt, max_new_tokens=48)  # mode auto, policy auto
    assert result.token_ids == reference
    assert result.stats.mode_run == "pearl,sequential", result.stats


def test_a_shared_device_is_assumed_split_until_pearl_measures_it():
    """One CPU or GPU for both models: before any PEARL round, each is assumed to run at half
    speed while the other computes, so mode auto does not pick PEARL on the strength of an
    overlap the hardware may not have; PEARL's measured rounds then replace the prior."""
    speed = SpeedRatio()
    speed.observe_draft_step(0.1)
    speed.observe_target_pass(1.0, n_tokens=1)
    speed.observe_target_pass(1.0, n_tokens=9)
    assert goodput.Costs.measured(speed, 8).draft_slowdown == 1.0  # separate devices (or not known)
    speed.shared_device, speed.costs_cache = True, {}
    shared = goodput.Costs.measured(speed, 8)
    assert (shared.draft_slowdown, shared.target_slowdown) == (goodput.SHARED_SLOWDOWN, goodput.SHARED_SLOWDOWN)
    assert goodput.plan([0.8] * 8, shared, 8, modes=(Mode.SEQUENTIAL, Mode.PEARL)).mode is Mode.SEQUENTIAL
    speed.observe_draft_step(0.12, concurrent=True)  # PEARL ran: the measured slowdown wins
    speed.observe_target_pass(1.1, n_tokens=5, concurrent=True)
    speed.costs_cache = {}
    measured = goodput.Costs.measured(speed, 8)
    assert measured.draft_slowdown == pytest.approx(1.2) and measured.target_slowdown == pytest.approx(1.1)


def test_engines_and_coordinators_know_when_the_models_share_a_device():
    from coordinator.server import share_compute
    from specdec.pb.v1 import common_pb2

    draft, target = fake_pair()
    assert Engine(draft, target, None, eos_token_ids=[]).speed.shared_device  # both on this CPU
    emulated = Engine(draft, target, None, eos_token_ids=[], cost=CostProfile("x", target_ms=1.0, draft_ms=1.0))
    assert not emulated.speed.shared_device  # a cost profile declares each model its own device

    def info(host, device, profile=""):
        return common_pb2.WorkerInfo(host=host, device=device, cost_profile=profile)

    assert share_compute(info("a", "cpu"), info("a", "cpu"))
    assert share_compute(info("a", "cuda:0"), info("a", "cuda:0"))
    assert not share_compute(info("a", "cuda:0"), info("a", "cuda:1"))
    assert not share_compute(info("a", "cpu"), info("b", "cpu"))
    assert not share_compute(info("a", "cpu", "gpu-like"), info("a", "cpu", "gpu-like"))
    assert not share_compute(None, info("a", "cpu"))
