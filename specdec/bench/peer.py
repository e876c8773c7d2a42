"""The outside peer: Hugging Face assisted generation on the same pair and settings.

    target.generate(input_ids, assistant_model=draft, max_new_tokens=N, do_sample=False)

Same models (the very modules the engine holds, so the same dtype and threads), the
same prompt token ids, and EOS switched off like our `ignore_eos` so both emit exactly
N tokens. The assistant's schedule is whatever transformers does by default (recorded
in the JSON by `peer_settings`); tuning it would no longer be "the peer as shipped".
"""

from __future__ import annotations

from typing import Sequence

import torch

PEER_CALL = "target.generate(input_ids, assistant_model=draft, max_new_tokens=N, do_sample=False, eos_token_id=None)"


def assisted_generate(engine, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float, seed: int) -> list[int]:
    """The new token ids of one assisted-generation call (greedy unless temperature > 0)."""
    from transformers.utils import logging as hf_logging

    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=engine.target.device)
    sampling = dict(do_sample=False)
    if temperature > 0.0:
        torch.manual_seed(seed)
        sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # assisted generation warns about its own internal config on every call
    try:
        with torch.inference_mode():
            out = engine.target.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                assistant_model=engine.draft,
                max_new_tokens=max_new_tokens,
                eos_token_id=None,  # as ignore_eos: never stop early
                pad_token_id=_pad_id(engine),
                **sampling,
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    return out[0, len(prompt_ids):].tolist()


def peer_settings(engine) -> dict:
    """What the peer ran with: the call and the assistant's effective schedule."""
    import transformers
    from transformers import GenerationConfig

    config = engine.draft.generation_config
    try:  # transformers fills unset assistant fields from these defaults at call time
        defaults = GenerationConfig()._get_default_generation_params()
    except AttributeError:  # pragma: no cover - older/newer transformers
        defaults = {}

    def effective(name):
        value = getattr(config, name, None)
        return value if value is not None else defaults.get(name)

    return {
        "library": f"transformers {transformers.__version__}",
        "call": PEER_CALL,
        "num_assistant_tokens": effective("num_assistant_tokens"),
        "num_assistant_tokens_schedule": effective("num_assistant_tokens_schedule"),
        "assistant_confidence_threshold": effective("assistant_confidence_threshold"),
    }


def _pad_id(engine) -> int:
    pad = getattr(engine.tokenizer, "pad_token_id", None)
    if pad is None:
        pad = engine.eos_token_ids[0] if engine.eos_token_ids else 0
    return int(pad)
