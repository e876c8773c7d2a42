"""The sampled output has exactly the target's distribution (the lossless claim, tested).

Over thousands of seeded requests the joint histogram of the first two generated
tokens must match the target's exact distribution, computed directly from the target
model. The draft disagrees with the target often, so rejections really happen.

Each check runs on two pairs with the same number of requests and the same thresholds:
the fake n-gram pair (forwards cost microseconds: the default suite) and the tiny
transformers pair (`make test-full`). The loop and the verifiers are the same code for
both; the tiny pair adds a real model's logits.
"""

import pytest

from specdec import Engine
from specdec.core.sampling import SamplingParams
from tests.helpers.distributions import exact_two_token_distribution, prompt_of, sample_pairs
from specdec.runtime.cost import CostProfile
from tests.helpers.fakes import fake_engine, fake_pair
from tests.helpers.stats import chi_square_pvalue

N = 2000
PAIRS = ["fake", pytest.param("tiny", marks=pytest.mark.full)]


@pytest.fixture(scope="module", params=PAIRS)
def engine(request):
    return fake_engine() if request.param == "fake" else Engine.from_preset("tiny", seed=0)


CASES = [
    ("sequential", dict(temperature=1.0)),
    # more of the same checks, for `make test-full` only (the default suite stays under 6 minutes;
    # PEARL's positions 1..6 are checked by default in test_pearl_distribution.py, top-p by GSD's)
    pytest.param("sequential", dict(temperature=0.7, top_p=0.9), marks=pytest.mark.full),
    pytest.param("pearl", dict(temperature=1.0), marks=pytest.mark.full),
    pytest.param("sequential", dict(temperature=1.0, top_k=5), marks=pytest.mark.full),
    pytest.param("pearl", dict(temperature=0.7, top_p=0.9), marks=pytest.mark.full),
]


@pytest.mark.parametrize("mode,sampling", CASES)
def test_first_two_tokens_follow_the_target_distribution(engine, mode, sampling):
    prompt_ids = prompt_of(engine)
    expected = exact_two_token_distribution(engine, prompt_ids, SamplingParams(**sampling))
    pairs, acceptance = sample_pairs(engine, prompt_ids, N, mode=mode, policy="fixed", draft_length=3, **sampling)
    assert 0.2 < acceptance < 0.95, f"the draft must really get rejected (acceptance {acceptance:.2f})"
    assert chi_square_pvalue(pairs, expected) > 1e-3
    first = [p[0] for p in pairs]
    p1 = {}
    for (a, _), p in expected.items():
        p1[a] = p1.get(a, 0.0) + p
    assert chi_square_pvalue(first, p1) > 1e-3


def test_policy_and_mode_auto_follow_the_target_distribution():
    """Mode and policy auto (the defaults) choose k per round from the request's own
    verdicts so far (k = 0 included): still the target's distribution. A cheap draft
    and a flat 0.3 ms target pass make auto speculate most rounds, not all."""
    draft, target = fake_pair()
    engine = Engine(draft, target, None, eos_token_ids=[], cost=CostProfile("auto-chi2", target_ms=0.3, draft_ms=0.0))
    prompt_ids = prompt_of(engine)
    params = SamplingParams(temperature=1.0)
    expected = exact_two_token_distribution(engine, prompt_ids, params)
    pairs, acceptance = sample_pairs(engine, prompt_ids, N, draft_length=3, temperature=1.0)  # mode, policy: auto
    assert acceptance is not None and 0.2 < acceptance < 0.95, acceptance
    assert chi_square_pvalue(pairs, expected) > 1e-3


def test_the_check_rejects_the_draft_distribution(engine):
    """Negative control: samples of the DRAFT alone must fail the same check."""
    prompt_ids = prompt_of(engine)
    params = SamplingParams(temperature=1.0)
    expected = exact_two_token_distribution(engine, prompt_ids, params)
    draft_only = Engine(None, engine.draft, engine.tokenizer, eos_token_ids=engine.eos_token_ids)
    pairs, _ = sample_pairs(draft_only, prompt_ids, N, mode="autoregressive", temperature=1.0)
    assert chi_square_pvalue(pairs, expected) < 1e-6
