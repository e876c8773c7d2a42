"""Sampling through the gRPC stack in PEARL mode has exactly the target's distribution.

The first and second generated tokens of ~2000 seeded requests are compared with the
distribution computed directly from the target model (chi-square, small bins pooled).
The proposals q cross the network as sparse fp32 vectors, so this also checks that
nothing is lost on the wire.
"""

from __future__ import annotations

import asyncio

import torch

from specdec.models import load_preset
from specdec.sampling import SamplingParams, logits_to_probs
from tests.stats_util import chi_square_pvalue

PROMPT = "the cat sat"
N = 2000
CONCURRENCY = 16
ALPHA = 1e-3


def exact_marginals(prompt_ids: list[int], params: SamplingParams) -> tuple[dict, dict]:
    """{token: p} of the first and the second token of the target sampling alone."""
    target = load_preset("tiny", seed=0, roles=("target",)).target
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            p1 = logits_to_probs(target(torch.tensor([prompt_ids])).logits[0, -1], params)  # [V]
            vocab = p1.shape[0]
            batch = torch.tensor([prompt_ids + [x] for x in range(vocab)])
            p2 = logits_to_probs(target(batch).logits[:, -1], params)  # [V, V]: row = first token
    finally:
        torch.set_num_threads(threads)
    second = p1 @ p2  # [V]
    return {t: float(p) for t, p in enumerate(p1) if p > 0}, {t: float(p) for t, p in enumerate(second) if p > 0}


async def sample(address: str, n: int):
    from specdec.client import AsyncClient

    limit = asyncio.Semaphore(CONCURRENCY)
    async with AsyncClient(address, timeout=60.0) as client:

        async def one(seed: int):
            async with limit:
                return await client.complete(
                    PROMPT, seed=seed, temperature=1.0, max_new_tokens=3, mode="pearl", policy="fixed",
                    draft_length=2, ignore_eos=True,
                )

        return await asyncio.gather(*(one(seed) for seed in range(n)))


def test_pearl_sampling_follows_the_target_distribution(tiny_stack, tiny_engine):
    results = asyncio.run(sample(tiny_stack.address, N))
    first, second = exact_marginals(tiny_engine.encode(PROMPT), SamplingParams(temperature=1.0))

    drafted = sum(r.stats.draft_tokens for r in results)
    accepted = sum(r.stats.accepted_tokens for r in results)
    assert 0.2 < accepted / drafted < 0.95, "the test needs both acceptances and rejections"
    assert all(len(r.token_ids) == 3 and not r.stats.draft_fallback for r in results)

    p_first = chi_square_pvalue([r.token_ids[0] for r in results], first)
    p_second = chi_square_pvalue([r.token_ids[1] for r in results], second)
    assert p_first > ALPHA, f"first token: p = {p_first:.2g}"
    assert p_second > ALPHA, f"second token: p = {p_second:.2g}"
