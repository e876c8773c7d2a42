"""policies.py: stop rules and the adaptive state of each draft-length policy."""


import pytest

from specdec.core.policies import (
    SPECDECPP_K_MAX,
    AdaEDL,
    DraftStep,
    EntropyOf,
    Fixed,
    Heuristic,
    SpecDecPP,
    StopRule,
    make_policy,
)
from specdec.core.request import GenerationRequest, Mode


def step(n, entropy=0.0, p_accept=None):
    return DraftStep(n_drafted=n, next_entropy=entropy, p_accept=p_accept)


def test_fixed_stops_at_k_and_respects_the_limit():
    rule = Fixed(k=4).rule(limit=100)
    assert [rule.stops_after_drawing(n, 9.0) for n in range(1, 5)] == [False, False, False, True]
    assert not any(rule.stops_before_drawing(step(n, entropy=9.0), 0.0) for n in range(1, 4))
    assert Fixed(k=4).rule(limit=2).max_tokens == 2
    assert Fixed(k=4).rule(limit=0).max_tokens == 1  # always at least one draft token


def test_heuristic_schedule_is_plus_two_or_minus_one():
    h = Heuristic(k=4)
    h.observe(drafted=4, accepted=4)
    assert h.k == 6
    h.observe(drafted=6, accepted=2)
    assert h.k == 5
    for _ in range(10):
        h.observe(drafted=h.k, accepted=0)
    assert h.k == 1
    h.observe(drafted=0, accepted=0)  # a round without drafting changes nothing
    assert h.k == 1


def test_adaedl_stops_before_drawing_a_token_whose_distribution_is_uncertain():
    rule = AdaEDL(k_max=8, lam=0.6).rule(limit=100)
    assert rule.entropy_of is EntropyOf.NEXT
    # 1 - sqrt(0.2 * H) < 0.6  <=>  H > 0.8, H of the distribution the next token would come from
    assert not rule.stops_before_drawing(step(1, entropy=0.79))
    assert rule.stops_before_drawing(step(1, entropy=0.81))
    assert not rule.stops_after_drawing(1, 5.0)  # the drafted token's own entropy no longer decides
    assert rule.stops_after_drawing(8, 0.0)  # k_max caps it, before any further forward


def test_adaedl_late_keeps_the_earlier_rule_on_the_drafted_token():
    policy = make_policy("adaedl_late", 8)
    rule = policy.rule(limit=100)
    assert isinstance(policy, AdaEDL) and policy.name.value == "adaedl_late" and rule.entropy_of is EntropyOf.DRAFTED
    assert rule.stops_after_drawing(1, 0.81) and not rule.stops_after_drawing(1, 0.79)
    assert not rule.stops_before_drawing(step(1, entropy=5.0))
    assert make_policy("adaedl", 8).name.value == "adaedl"


def test_adaedl_lambda_adapts_per_the_paper():
    a = AdaEDL(k_max=8, lam=0.6)
    a.observe(drafted=8, accepted=0)  # AR = 0.5 < alpha: lambda moves toward lambda + eps
    assert a.acceptance_rate == pytest.approx(0.5)
    assert a.lam == pytest.approx(0.9 * 0.6 + 0.1 * 0.61)
    b = AdaEDL(k_max=8, lam=0.6)
    b.observe(drafted=4, accepted=4)  # AR stays 1 >= alpha, not all k_max accepted: lambda - eps
    assert b.lam == pytest.approx(0.9 * 0.6 + 0.1 * 0.59)
    c = AdaEDL(k_max=8, lam=0.6)
    c.observe(drafted=8, accepted=8)  # all k_max accepted: lambda unchanged
    assert c.lam == pytest.approx(0.6)


def test_specdecpp_threshold_and_clamps():
    rule = SpecDecPP(k_max=5, k_min=2, threshold=0.5).rule(limit=100)
    assert not rule.stops_before_drawing(step(1, p_accept=0.1), p_all_accepted=0.1)  # below k_min
    assert rule.stops_before_drawing(step(2, p_accept=0.1), p_all_accepted=0.1 * 0.9)
    assert not rule.stops_before_drawing(step(2, p_accept=0.9), p_all_accepted=0.9 * 0.9)  # 0.19 rejected
    assert not rule.stops_before_drawing(step(3), p_all_accepted=0.5)  # exactly at the threshold: go on
    assert rule.stops_before_drawing(step(3), p_all_accepted=0.49)
    assert not rule.stops_before_drawing(step(3, entropy=9.0), p_all_accepted=1.0)  # no entropy bound here
    assert rule.stops_after_drawing(5, 0.0) and not rule.stops_after_drawing(4, 9.0)  # k_max
    assert SpecDecPP(k_max=5, k_min=2).rule(limit=1).min_tokens == 1
    assert rule.needs_acceptance_head and not StopRule(max_tokens=3).needs_acceptance_head


@pytest.mark.parametrize(
    "args,field",
    [(("nope", 4), "policy"), (("fixed", 0), "draft_length"), (("fixed", 65), "draft_length"),
     (("specdecpp", 4, 1.5), "threshold")],
)
def test_make_policy_names_the_bad_field(args, field):
    with pytest.raises(ValueError, match=field):
        make_policy(*args)


def test_specdecpp_defaults_to_the_papers_k_max_of_20_and_the_others_keep_theirs():
    assert SPECDECPP_K_MAX == 20 and SpecDecPP().k_max == 20
    for mode in (Mode.SEQUENTIAL, Mode.PEARL):
        request = GenerationRequest(prompt_ids=(1, 2), mode=mode, policy="specdecpp")
        assert request.resolved_draft_length(None) == 20
    assert GenerationRequest(prompt_ids=(1, 2), policy="specdecpp", draft_length=6).resolved_draft_length(None) == 6
    for policy, k in (("fixed", 4), ("heuristic", 4), ("adaedl", 4), ("adaedl_late", 4), ("auto", 8)):
        assert GenerationRequest(prompt_ids=(1, 2), mode=Mode.SEQUENTIAL, policy=policy).resolved_draft_length(None) == k


def test_each_request_gets_fresh_state():
    a, b = make_policy("heuristic", 4), make_policy("heuristic", 4)
    a.observe(4, 4)
    assert (a.k, b.k) == (6, 4)
