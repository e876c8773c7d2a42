"""The sampled output has exactly the target's distribution (the lossless claim, tested).

Over thousands of seeded requests the joint histogram of the first two generated
tokens must match the target's exact distribution, computed directly from the target
model. The draft disagrees with the target often, so rejections really happen.
"""

import asyncio

import pytest
import torch

from specdec import Engine
from specdec.sampling import SamplingParams, logits_to_probs
from tests.stats_util import chi_square_pvalue

PROMPT = "the cat sat"
N = 2000


@pytest.fixture(scope="module")
def engine():
    return Engine.from_preset("tiny", seed=0)


def exact_two_token_distribution(engine, prompt_ids, params) -> dict:
    """{(x1, x2): p} of the target sampling on its own."""
    vocab = engine.vocab_size
    with torch.inference_mode():
        p1 = logits_to_probs(engine.target(torch.tensor([prompt_ids])).logits[0, -1], params)
        batch = torch.tensor([prompt_ids + [x] for x in range(vocab)])
        p2 = logits_to_probs(engine.target(batch).logits[:, -1], params)  # [V, V]
    joint = p1[:, None] * p2
    return {(a, b): float(joint[a, b]) for a in range(vocab) for b in range(vocab) if joint[a, b] > 0}


def sample_pairs(engine, prompt_ids, n, **kwargs):
    async def run():
        outs = []
        for seed in range(n):
            r = await engine.agenerate(prompt_ids, max_new_tokens=4, seed=seed, ignore_eos=True, **kwargs)
            outs.append(r)
        return outs

    results = asyncio.run(run())
    drafted = sum(r.stats.draft_tokens for r in results)
    accepted = sum(r.stats.accepted_tokens for r in results)
    return [tuple(r.token_ids[:2]) for r in results], accepted / drafted if drafted else None


CASES = [
    ("sequential", dict(temperature=1.0)),
    ("sequential", dict(temperature=0.7, top_p=0.9)),
    ("pearl", dict(temperature=1.0)),
]


@pytest.mark.parametrize("mode,sampling", CASES)
def test_first_two_tokens_follow_the_target_distribution(engine, mode, sampling):
    prompt_ids = engine.encode(PROMPT)
    expected = exact_two_token_distribution(engine, prompt_ids, SamplingParams(**sampling))
    pairs, acceptance = sample_pairs(engine, prompt_ids, N, mode=mode, policy="fixed", draft_length=3, **sampling)
    assert 0.2 < acceptance < 0.95, f"the draft must really get rejected (acceptance {acceptance:.2f})"
    assert chi_square_pvalue(pairs, expected) > 1e-3
    first = [p[0] for p in pairs]
    p1 = {}
    for (a, _), p in expected.items():
        p1[a] = p1.get(a, 0.0) + p
    assert chi_square_pvalue(first, p1) > 1e-3


def test_the_check_rejects_the_draft_distribution(engine):
    """Negative control: samples of the DRAFT alone must fail the same check."""
    prompt_ids = engine.encode(PROMPT)
    params = SamplingParams(temperature=1.0)
    expected = exact_two_token_distribution(engine, prompt_ids, params)
    draft_only = Engine(None, engine.draft, engine.tokenizer)  # the draft model as a "target"
    pairs, _ = sample_pairs(draft_only, prompt_ids, N, mode="autoregressive", temperature=1.0)
    assert chi_square_pvalue(pairs, expected) < 1e-6
