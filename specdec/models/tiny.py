"""The `tiny` preset: a random-initialised target, a draft derived from it, and a
character-level tokenizer, all built in memory from a seed in well under a second.

The draft is the target with Gaussian noise on every weight: close enough that it
agrees with the target's greedy token most of the time (acceptance happens), far
enough that it often does not (rejection happens). A small vocabulary makes exact
distribution checks of the sampler meaningful.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

if TYPE_CHECKING:
    from transformers import Qwen2Config

SPECIALS = ["<pad>", "<eos>", "<unk>"]
# {} and | were added later (at the end, so the other ids stay): JSON objects for structured output
CHARS = list(" abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'-()\n\"#$%&*+/<=>@_[]{}|")
# a chat template the tiny vocabulary can spell: "role: content" lines, then "assistant: "
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
TINY_NAME = "tiny"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>", name_or_path=TINY_NAME
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(vocab_size: int) -> Qwen2Config:
    from transformers import (
        Qwen2Config,  # lazily: the tokenizer alone needs no modeling code
    )

    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        eos_token_id=1,
        pad_token_id=0,
        bos_token_id=None,
    )


def tiny_pair(seed: int = 0, draft_noise: float = 0.06, logit_scale: float = 4.0):
    """(draft, target, tokenizer) in fp32, eval mode, deterministic in `seed`."""
    from transformers import Qwen2ForCausalLM

    tokenizer = tiny_tokenizer()
    config = tiny_config(len(tokenizer))
    gen = torch.Generator().manual_seed(seed)
    target = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for p in target.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
        # sharper next-token distributions, like a trained model's (entropy ~1-2 nats)
        target.lm_head.weight.mul_(logit_scale)
    draft = copy.deepcopy(target)
    with torch.no_grad():
        for p in draft.parameters():
            if p.dim() > 1:
                p.add_(torch.randn(p.shape, generator=gen) * p.std() * draft_noise)
    for m in (draft, target):
        m.config.name_or_path = TINY_NAME
        m.name_or_path = TINY_NAME
        m.eval()
    return draft, target, tokenizer
