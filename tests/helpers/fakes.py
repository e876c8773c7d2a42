"""Fakes: the reference GSD's lossy acceptance rule, and a causal LM that
takes its next-token probabilities from the last `order` tokens a row can see, so exact
distributions are known and forwards cost microseconds.

The fake LM honours the tree mask and the cache like a real model: each row's token is stored
in the session's DynamicCache (as a 1-dim value), so crops and `keep_path` gathers
move it, and a row sees exactly the rows its attention mask allows.
"""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

import torch

from specdec.core import rng
from specdec.core.acceptance import residual


class NGramLM(torch.nn.Module):
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(
        self, vocab: int, order: int, seed: int, like: "NGramLM | None" = None, mix: float = 0.5, sharpness: float = 2.0
    ):
        """`like` + `mix`: probabilities mix * like's + (1 - mix) * its own random ones;
        `sharpness`: the power of the uniform draws (higher: peakier, more like a real LM)."""
        super().__init__()
        self.vocab, self.order, self.seed, self.like, self.mix = vocab, order, seed, like, mix
        self.sharpness = sharpness
        self.config = SimpleNamespace(_attn_implementation="sdpa", vocab_size=vocab)
        self.probs = lru_cache(maxsize=None)(self._probs)

    def _probs(self, context: tuple[int, ...]) -> torch.Tensor:
        context = context[-self.order :]
        g = torch.Generator().manual_seed(hash((self.seed, context)) & 0xFFFFFFFF)
        own = torch.rand(self.vocab, generator=g) ** self.sharpness + 0.02
        own = own / own.sum()
        return own if self.like is None else self.mix * self.like.probs(context) + (1 - self.mix) * own

    def forward(self, input_ids, attention_mask=None, cache=None, logits_to_keep=1, **_):
        if input_ids.shape[0] > 1 and cache is None and attention_mask is None:  # a batch of whole sequences
            rows = [self.forward(row[None], logits_to_keep=logits_to_keep).logits for row in input_ids]
            return SimpleNamespace(logits=torch.cat(rows))
        q = input_ids.shape[1]
        new = input_ids[0].float().view(1, 1, q, 1)
        if cache is None:
            rows = input_ids[0].tolist()
        else:
            rows = cache.update(torch.zeros_like(new), new, 0)[1].view(-1).long().tolist()
        past = len(rows) - q
        logits = []
        for i in range(q):
            if attention_mask is None:
                seen = rows[: past + i + 1]
            else:
                visible = (attention_mask[0, 0, i] == 0).nonzero()[:, 0].tolist()
                seen = [rows[j] for j in visible]
            logits.append(self.probs(tuple(seen)).log())
        return SimpleNamespace(logits=torch.stack(logits)[-logits_to_keep:][None])


def lossy_choose_child(p, tree, node, children, seed, at):
    """The reference GSD rule, for negative controls (a drop-in for
    specdec.gsd.verifying._choose_child): every child is tested against the same p and
    q with min(1, p/q), no residual updates; if all fail, one residual sample."""
    if not children:
        return None, p
    q = tree.proposal_of(node)
    for i, child in enumerate(children):
        ratio = float(p[tree.tokens[child]]) / q.prob_of(tree.tokens[child])
        if ratio >= 1.0 or rng.uniform(seed, rng.Stream.ACCEPT, at, i) < ratio:
            return child, p
    return None, residual(p, q.dense(p.shape[-1]))


def fake_pair(
    vocab: int = 12, order: int = 2, mix: float = 0.5, seed: int = 0, sharpness: float = 2.0
) -> tuple[NGramLM, NGramLM]:
    """(draft, target): the draft mixes the target's probabilities with its own, so it
    agrees often but not always (drafts are both accepted and rejected)."""
    target = NGramLM(vocab, order, seed, sharpness=sharpness)
    return NGramLM(vocab, order, seed + 1, like=target, mix=mix, sharpness=sharpness), target


def fake_engine(**kwargs):
    """The embedded engine over `fake_pair` (no tokenizer: prompts are token ids; no EOS)."""
    from specdec import Engine

    draft, target = fake_pair(**kwargs)
    return Engine(draft, target, None, eos_token_ids=[])
