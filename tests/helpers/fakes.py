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

from specdec.core import rng, sampling
from specdec.core.acceptance import residual
from specdec.core.sampling import SparseDist


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


# An engine whose draft cuts q to its top TRUNCATING_TOP_N of 96 tokens while much of its
# sampling mass lies outside them (~46% under TOP_K_BEYOND_N; acceptance ~0.3), so the
# truncation of q really matters (docs/algorithms.md §0): fake_engine(**TRUNCATING). Top-k
# keeps twice the tokens q does; T = 2 also leaves the tiny pair ~15% of q's mass to cut.
TRUNCATING_TOP_N = 8
TRUNCATING = dict(vocab=96, mix=0.7, sharpness=4.0, proposal_top_n=TRUNCATING_TOP_N)
TOP_K_BEYOND_N = dict(temperature=2.0, top_k=16)


def fake_engine(cost=None, proposal_top_n: int = 64, **kwargs):
    """The embedded engine over `fake_pair(**kwargs)` (no tokenizer: prompts are token ids;
    no EOS); `proposal_top_n` < vocab makes the draft truncate its q (docs/algorithms.md §0)."""
    from specdec import Engine

    draft, target = fake_pair(**kwargs)
    return Engine(draft, target, None, eos_token_ids=[], cost=cost, proposal_top_n=proposal_top_n)


def watch_truncation(monkeypatch, lossy: bool = False) -> list[float]:
    """Wrap the drafts' proposal truncation (chain and tree drafting): returns a list that
    gets, per proposal, the mass the cut to the top N dropped from the draft's sampling
    distribution (so a test can show truncation really mattered).

    lossy=True (negative controls): the verifier ignores the truncation. The draft still
    samples from its renormalised top N, but every q it made is judged as if it had not been
    renormalised after the cut, i.e. with the draft's untruncated probabilities of those
    tokens (q.prob_of and q.dense scaled by the mass kept). Proposals are recognised by
    their ids in order, which survive the tree drafter rebuilding its SparseDist."""
    from specdec.gsd import drafting as tree_drafting
    from specdec.runtime import drafting as chain_drafting

    dropped: list[float] = []
    kept: dict[tuple[int, ...], float] = {}
    real = sampling.truncate

    def recording(probs, top_n):
        q = real(probs, top_n)
        mass = float(probs.float()[q.token_ids].sum() / probs.float().sum())
        dropped.append(1.0 - mass)
        kept[tuple(q.token_ids.tolist())] = mass
        return q

    for module in (sampling, chain_drafting, tree_drafting):
        monkeypatch.setattr(module, "truncate", recording)
    if lossy:
        prob_of, dense = SparseDist.prob_of, SparseDist.dense

        def scale(q):
            return kept.get(tuple(q.token_ids.tolist()), 1.0)

        monkeypatch.setattr(SparseDist, "prob_of", lambda q, token: prob_of(q, token) * scale(q))
        monkeypatch.setattr(SparseDist, "dense", lambda q, vocab: dense(q, vocab) * scale(q))
    return dropped
