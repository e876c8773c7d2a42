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


def judge_prefix(
    target_logits: torch.Tensor,  # [n, V]: p for the first n draft positions (n <= k)
    draft_tokens: Sequence[int],  # [k]
    proposals: Sequence[SparseDist] | None,  # [k] the exact q each draft token was sampled from
    params: SamplingParams,
    seed: int,
    position: int,  # absolute index of the first draft token in the sequence
) -> tuple[int, int | None]:
    """Judge the first n draft tokens: (accepted, recovered token at the first rejection
    or None when all n were accepted). The decision at a position depends only on its
    row, its token, its q and the keys (seed, position), never on how the rows were
    grouped into passes: PEARL judges a token against a row kept from the last pass."""
    n = target_logits.shape[0]
    if n > len(draft_tokens):
        raise ValueError(f"{n} target rows for only {len(draft_tokens)} draft tokens")
    if params.greedy:
        argmax = target_logits.argmax(-1).tolist()
        for i in range(n):
            if draft_tokens[i] != argmax[i]:
                return i, argmax[i]
        return n, None
    if proposals is None or len(proposals) != len(draft_tokens):
        raise ValueError("sampled verification needs the draft's proposal q for every draft token")
    p_all = logits_to_probs(target_logits, params)  # [n, V] fp32
    for i in range(n):
        token, p, q = draft_tokens[i], p_all[i], proposals[i]
        q_tok = q.prob_of(token)
        if q_tok <= 0.0:
            raise ValueError(f"draft token {token} has q = 0 in its own proposal at position {position + i}")
        ratio = float(p[token]) / q_tok
        if ratio >= 1.0 or rng.uniform(seed, rng.Stream.ACCEPT, position + i) < ratio:
            continue
        recovered = rng.sample(residual(p, q.dense(p.shape[-1])), seed, rng.Stream.RESIDUAL, position + i)
        return i, recovered
    return n, None


def sample_bonus(row: torch.Tensor, params: SamplingParams, seed: int, position: int) -> int:
    """The target's own token at `position` from its logits row (greedy: the argmax)."""
    if params.greedy:
        return int(row.argmax())
    return rng.sample(logits_to_probs(row, params), seed, rng.Stream.RESIDUAL, position)


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
    accepted, recovered = judge_prefix(target_logits[:k], draft_tokens, proposals, params, seed, position)
    if recovered is not None:
        return Verdict(accepted=accepted, next_token=recovered, drafted=k)
    return Verdict(accepted=k, next_token=sample_bonus(target_logits[k], params, seed, position + k), drafted=k)
