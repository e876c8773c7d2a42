"""The reference every greedy-equality test compares against: the target alone."""

from __future__ import annotations

import torch

_cache: dict = {}


def target_alone(engine, prompt: str, max_new_tokens: int, ignore_eos: bool = True, chat: bool = False):
    """The embedded engine's autoregressive result (the target alone), cached per
    (engine, prompt, length, ignore_eos, chat): many tests compare against the same runs."""
    key = (id(engine), prompt, max_new_tokens, ignore_eos, chat)
    if key not in _cache:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # two OpenMP threads on a 2-core box make tiny models ~10x slower
        try:
            _cache[key] = engine.generate(
                prompt, mode="autoregressive", max_new_tokens=max_new_tokens, ignore_eos=ignore_eos, chat=chat
            )
        finally:
            torch.set_num_threads(threads)
    return _cache[key]


def reference(engine, prompt: str, n: int) -> list[int]:
    """The target alone's first `n` tokens (EOS ignored)."""
    return target_alone(engine, prompt, n).token_ids


# Greedy equality in bfloat16. The same logits computed along two paths (one token at a time
# against the KV cache, k + 1 tokens in one verification pass, a tree mask, other batch shapes)
# are rounded differently, so where the target's two best logits (nearly) tie, speculation may
# legitimately emit the other one. bf16 keeps 8 significant bits: one step (ulp) at magnitude m
# is at most 2**-7 * m. Logits computed incrementally and in one forward differ by up to ~2.2
# such steps of the row's best logit on the tiny pair (the greedy-equality prompts of
# tests/core/test_engine.py) and ~1.5 on the real pair (24 tokens after each prompt of
# tests/e2e/test_real_pair.py). A divergence counts as rounding when both tokens lie within
# 4 steps (about twice the larger) of the best logit of one forward, and as a logic error when
# either lies further.
BF16_TIE_ULPS = 4.0


def assert_equal_or_bf16_tie(target, prompt_ids, reference, output, ulps: float = BF16_TIE_ULPS) -> str | None:
    """`output` (a greedy run in bf16) against `reference` (the target alone, bf16): None when
    equal. Else, at the first differing position i, ONE forward of the target over
    prompt + reference[:i]: when both tokens are within `ulps` bf16 steps of its best logit at
    the last position, returns a line saying where and by how much (a near tie); otherwise
    raises AssertionError (a logic error, not rounding)."""
    reference, output = list(reference), list(output)
    if output == reference:
        return None
    i = next((j for j, (a, b) in enumerate(zip(reference, output)) if a != b), None)
    assert i is not None, f"one output is a prefix of the other: {len(output)} tokens vs {len(reference)}"
    with torch.inference_mode():
        ids = torch.tensor([list(prompt_ids) + reference[:i]], device=getattr(target, "device", "cpu"))
        row = target(ids).logits[0, -1].float().cpu()
    best = float(row.max())
    ulp = 2.0**-7 * max(abs(best), 1.0)
    behind = {t: (best - float(row[t])) / ulp for t in (reference[i], output[i])}
    line = (
        f"position {i}: target alone {reference[i]}, this run {output[i]}; their logits in one forward "
        f"{float(row[reference[i]]):.5g} and {float(row[output[i]]):.5g} (best {best:.5g}) are "
        f"{behind[reference[i]]:.2f} and {behind[output[i]]:.2f} bf16 steps ({ulp:.3g}) below the best"
    )
    assert max(behind.values()) <= ulps, f"{line}: more than {ulps} steps, not a bf16 near tie (a logic error)"
    return line + f" (a near tie: within {ulps})"
