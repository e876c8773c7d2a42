"""The sampled output has exactly the target's distribution (the lossless claim, tested).

Over thousands of seeded requests the joint histogram of the first two generated
tokens must match the target's exact distribution, computed directly from the target
model. The draft disagrees with the target often, so rejections really happen.

Each check runs on two pairs with the same number of requests and the same thresholds:
the fake n-gram pair (forwards cost microseconds: the default suite) and the tiny
transformers pair (`make test-full`). The loop and the verifiers are the same code for
both; the tiny pair adds a real model's logits.

With top-k and a draft whose proposal q is cut to its top N of a larger vocabulary, the
draft samples from exactly that truncated q and sends it (docs/algorithms.md §0): the
output still follows the target's top-k distribution, and a verifier that ignores the
truncation fails the same check.
"""

import statistics

import pytest

from specdec import Engine
from specdec.core.sampling import SamplingParams
from tests.helpers.distributions import exact_two_token_distribution, prompt_of, sample_pairs
from tests.helpers.distributions import truncating_engine as truncating_engine_of
from specdec.runtime.cost import CostProfile
from tests.helpers.fakes import TOP_K_BEYOND_N as TOP_K
from tests.helpers.fakes import fake_engine, fake_pair, watch_truncation
from tests.helpers.stats import chi_square_pvalue, position_pvalues

N = 2000
N_CONTROL = 400  # the lossy verifier is far off: first token p ~ 1e-33 with 400 samples
PAIRS = ["fake", pytest.param("tiny", marks=pytest.mark.full)]


@pytest.fixture(scope="module", params=PAIRS)
def engine(request):
    return fake_engine() if request.param == "fake" else Engine.from_preset("tiny", seed=0)


@pytest.fixture(scope="module", params=PAIRS)
def truncating_engine(request):
    """The draft's q cut to its top 8 tokens of 96 (the tiny pair: of 69)."""
    return truncating_engine_of(request.param)


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
    pvalues = position_pvalues(pairs, expected)  # (x1, x2) jointly, x1, x2
    assert all(p > 1e-3 for p in pvalues), pvalues  # (all: a NaN, every bin pooled into one, fails)


def test_top_k_and_a_truncated_proposal_follow_the_target_distribution(truncating_engine, monkeypatch):
    """top_k = 16 (at T = 2) while the draft's q keeps only its top 8 (PEARL at every position:
    test_pearl_distribution.py, GSD: test_gsd_distribution.py)."""
    engine = truncating_engine
    dropped = watch_truncation(monkeypatch)
    prompt_ids = prompt_of(engine)
    pairs, acceptance = sample_pairs(engine, prompt_ids, N, mode="sequential", policy="fixed", draft_length=3, **TOP_K)
    assert 0.2 < acceptance < 0.95, f"the draft must really get rejected (acceptance {acceptance:.2f})"
    cut = statistics.mean(dropped)
    assert cut > 0.05, f"the truncation must drop real mass from q ({cut:.3f} on average)"
    pvalues = position_pvalues(pairs, exact_two_token_distribution(engine, prompt_ids, SamplingParams(**TOP_K)))
    assert all(p > 1e-3 for p in pvalues), pvalues
    # the check sees top-k: at each position the same samples fail against the target without it
    # (the joint is left out: over 96 x 96 outcomes every bin expects < 5 and is pooled into one)
    no_top_k = exact_two_token_distribution(engine, prompt_ids, SamplingParams(temperature=1.0))
    assert all(p < 1e-6 for p in position_pvalues(pairs, no_top_k)[1:])


def test_the_check_rejects_a_verifier_that_ignores_the_truncation(monkeypatch):
    """Negative control: the draft samples from its renormalised top 8, but each token is
    judged with q not renormalised (the draft's untruncated probabilities)."""
    engine = truncating_engine_of("fake")
    watch_truncation(monkeypatch, lossy=True)
    prompt_ids = prompt_of(engine)
    expected = exact_two_token_distribution(engine, prompt_ids, SamplingParams(**TOP_K))
    pairs, _ = sample_pairs(engine, prompt_ids, N_CONTROL, mode="sequential", policy="fixed", draft_length=3, **TOP_K)
    pvalues = position_pvalues(pairs, expected)
    assert pvalues[1] < 1e-6, pvalues  # the first token


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
