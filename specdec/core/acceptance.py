"""Lossless verification of a chain of draft tokens (docs/algorithms.md §0).

Words used everywhere in this project (vLLM's):
- draft tokens: proposed by the draft in one round, `k` of them;
- accepted tokens: the prefix of the draft tokens the target keeps;
- recovered token: sampled by the target at the first rejected position, from
  norm(max(0, p - q)) (greedy: the target's argmax);
- bonus token: sampled from the target after all `k` were accepted.
A round emits accepted + 1 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from specdec.core import rng
from specdec.core.sampling import SamplingParams, SparseDist, logits_to_probs

# Below this the residual max(0, p - q) is numerically empty; fall back to p.
RESIDUAL_EPS = 1e-6


@dataclass(frozen=True)
class Verdict:
    """The target's verdict on one round."""

    accepted: int  # number of draft tokens kept (a prefix)
    next_token: int  # the recovered token (accepted < k) or the bonus token
    drafted: int  # k

    @property
    def all_accepted(self) -> bool:
        return self.accepted == self.drafted


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)) in fp32, or p itself when that is empty."""
    r = (p.float() - q.float()).clamp_min(0.0)
    total = r.sum()
    return p.float() if total <= RESIDUAL_EPS else r / total


def verify_chain(
    target_logits: torch.Tensor,  # [k + 1, V]: p for each draft position, then the bonus position
    draft_tokens: Sequence[int],  # [k]
    proposals: Sequence[SparseDist] | None,  # [k] the exact q each draft token was sampled from
    params: SamplingParams,
    seed: int,
    position: int,  # absolute index of the first draft token in the sequence
) -> Verdict:
    k = len(draft_tokens)
    if target_logits.shape[0] != k + 1:
        raise ValueError(f"need {k + 1} target rows for {k} draft tokens, got {target_logits.shape[0]}")
    if params.greedy:
        argmax = target_logits.argmax(-1).tolist()
        for i, token in enumerate(draft_tokens):
            if token != argmax[i]:
                return Verdict(accepted=i, next_token=argmax[i], drafted=k)
        return Verdict(accepted=k, next_token=argmax[k], drafted=k)

    if proposals is None or len(proposals) != k:
        raise ValueError("sampled verification needs the draft's proposal q for every draft token")
    p_all = logits_to_probs(target_logits, params)  # [k + 1, V] fp32
    for i, token in enumerate(draft_tokens):
        p, q = p_all[i], proposals[i]
        q_tok = q.prob_of(token)
        if q_tok <= 0.0:
            raise ValueError(f"draft token {token} has q = 0 in its own proposal at position {position + i}")
        ratio = float(p[token]) / q_tok
        if ratio >= 1.0 or rng.uniform(seed, rng.Stream.ACCEPT, position + i) < ratio:
            continue
        recovered = rng.sample(residual(p, q.dense(p.shape[-1])), seed, rng.Stream.RESIDUAL, position + i)
        return Verdict(accepted=i, next_token=recovered, drafted=k)
    bonus = rng.sample(p_all[k], seed, rng.Stream.RESIDUAL, position + k)
    return Verdict(accepted=k, next_token=bonus, drafted=k)
