"""Exact target distributions computed straight from a tiny target model, and seeded
samples to compare them with (the lossless claim, tested by chi-square)."""

from __future__ import annotations

import asyncio

import torch

from specdec.core.sampling import SamplingParams, logits_to_probs
from specdec.models import load_preset

PROMPT = "the cat"  # (with 69 tokens, after "the cat sat" the tiny target is nearly certain: 0.985)


def truncating_engine(pair: str):
    """An engine whose draft cuts its q to the top TRUNCATING_TOP_N tokens of a larger
    vocabulary: "fake" (96 tokens, tests/helpers/fakes.py) or "tiny" (69 tokens)."""
    from specdec import Engine
    from tests.helpers.fakes import TRUNCATING, TRUNCATING_TOP_N, fake_engine

    return fake_engine(**TRUNCATING) if pair == "fake" else Engine.from_preset("tiny", proposal_top_n=TRUNCATING_TOP_N)


def prompt_of(engine) -> list[int]:
    """PROMPT's ids, or fixed ids for a token-id engine (the fake pair has no tokenizer)."""
    return engine.encode(PROMPT) if engine.tokenizer is not None else [1, 2, 3]


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
