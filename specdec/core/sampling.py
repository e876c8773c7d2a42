"""Logits -> probabilities exactly as plain sampling of a model would do them.

Order and semantics follow Hugging Face `generate` (temperature, then top-k, then
top-p), so "the target's distribution" means the same thing here as there.
Temperature 0 means greedy: the distribution is a point mass on the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specdec.core.constraint import OutputConstraint


@dataclass(frozen=True)
class SamplingParams:
    """How the target would sample on its own; the draft samples the same way."""

    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    # structured output: a grammar masks the logits before all of the above (specdec.grammar)
    constraint: OutputConstraint | None = None

    def validate(self) -> None:
        if not (self.temperature >= 0.0) or self.temperature != self.temperature:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.temperature > 100.0:
            raise ValueError(f"temperature must be <= 100, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if self.constraint is not None:
            self.constraint.validate()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def logits_to_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """[..., V] logits -> [..., V] fp32 probabilities under `params`."""
    logits = logits.float()
    if params.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / params.temperature
    if params.top_k > 0 and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        logits = _top_p(logits, params.top_p)
    return logits.softmax(-1)


TOP_P_CANDIDATES = 1024  # top-p looks for its cut among this many tokens first (a full sort otherwise)


def _top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Hugging Face's top-p: drop the low tail whose mass is <= 1 - top_p (the top token
    always stays). A token stays iff the mass of the tokens above it is < top_p, so the
    cut is found among the top candidates when their mass reaches top_p (nearly always:
    a full sort of a 150k vocabulary costs ~30 ms on one core, this ~2 ms)."""
    probs = logits.softmax(-1)
    n = min(TOP_P_CANDIDATES, logits.shape[-1])
    values, ids = torch.topk(probs, n, dim=-1)  # descending
    above = values.cumsum(-1) - values  # mass of the tokens ranked above each candidate
    keep_sorted = above < top_p
    if n < logits.shape[-1] and bool(keep_sorted[..., -1].any()):  # the cut lies beyond the candidates
        values, ids = torch.sort(probs, dim=-1, descending=True)
        keep_sorted = (values.cumsum(-1) - values) < top_p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, ids, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of the UNtempered softmax (AdaEDL uses it even when greedy)."""
    logp = logits.float().log_softmax(-1)
    # a grammar's mask leaves -inf logits: their 0 * -inf terms count as 0, not NaN
    return -(logp.exp() * logp).nan_to_num(nan=0.0).sum(-1)


@dataclass(frozen=True)
class SparseDist:
    """A proposal distribution over a few token ids; what crosses the network.

    The draft samples from exactly this (its tempered distribution truncated to the
    top-N and renormalised), so verification with it stays lossless.
    """

    token_ids: torch.Tensor  # [N] int64
    probs: torch.Tensor  # [N] fp32, sums to 1

    def prob_of(self, token: int) -> float:
        hit = (self.token_ids == token).nonzero()
        return float(self.probs[hit[0, 0]]) if hit.numel() else 0.0

    def dense(self, vocab_size: int) -> torch.Tensor:
        out = torch.zeros(vocab_size, dtype=torch.float32)
        out[self.token_ids] = self.probs.float()
        return out


def truncate(probs: torch.Tensor, top_n: int) -> SparseDist:
    """[V] probs -> the top-N renormalised (zero-probability ids dropped)."""
    n = min(top_n, probs.shape[-1]) if top_n > 0 else probs.shape[-1]
    values, ids = torch.topk(probs.float(), n)
    keep = values > 0
    values, ids = values[keep], ids[keep]
    return SparseDist(token_ids=ids, probs=values / values.sum())
