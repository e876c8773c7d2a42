"""The reference every greedy-equality test compares against: the target alone."""

from __future__ import annotations

import torch

_cache: dict = {}


def target_alone(engine, prompt: str, max_new_tokens: int, ignore_eos: bool = True):
    """The embedded engine's autoregressive result (the target alone), cached per
    (engine, prompt, length, ignore_eos): many tests compare against the same runs."""
    key = (id(engine), prompt, max_new_tokens, ignore_eos)
    if key not in _cache:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # two OpenMP threads on a 2-core box make tiny models ~10x slower
        try:
            _cache[key] = engine.generate(
                prompt, mode="autoregressive", max_new_tokens=max_new_tokens, ignore_eos=ignore_eos
            )
        finally:
            torch.set_num_threads(threads)
    return _cache[key]


def reference(engine, prompt: str, n: int) -> list[int]:
    """The target alone's first `n` tokens (EOS ignored)."""
    return target_alone(engine, prompt, n).token_ids
