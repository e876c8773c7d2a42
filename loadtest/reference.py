"""What every greedy output must equal: the target alone, in this process.

The embedded Engine of the same preset, seed and dtype as the workers, in mode
autoregressive (the target model decoding one token at a time), EOS ignored: the same
reference as the tests' (tests/helpers/reference.py) and the bench's baseline.
torch is imported here only, when a scenario needs the reference: the rest of the
load generator stays torch-free.
"""

from __future__ import annotations

from typing import Sequence


def target_alone(
    preset: str, prompts: Sequence[str], max_new_tokens: int, seed: int = 0, dtype: str = "float32"
) -> dict[str, tuple[int, ...]]:
    """prompt -> the target alone's first `max_new_tokens` token ids, for each distinct prompt."""
    import torch

    from specdec import Engine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads on a 2-core box make tiny models ~10x slower
    try:
        engine = Engine.from_preset(preset, seed=seed, dtype=dtype)
        return {
            prompt: tuple(engine.generate(prompt, mode="autoregressive", max_new_tokens=max_new_tokens,
                                          ignore_eos=True).token_ids)
            for prompt in dict.fromkeys(prompts)
        }
    finally:
        torch.set_num_threads(threads)
