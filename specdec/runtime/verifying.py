"""The target side of a round: one forward over [last committed token, d1..dk], then the verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from specdec.core.acceptance import Verdict, verify_chain
from specdec.core.sampling import SamplingParams, SparseDist
from specdec.runtime.session import ModelSession


@dataclass(frozen=True)
class Verification:
    verdict: Verdict
    seconds: float  # target compute, including any cost-profile wait


def verify_draft(
    session: ModelSession,
    start: int,
    committed: Sequence[int],  # the committed sequence is session.tokens[:start] + committed
    draft: Sequence[int],  # [k] draft tokens after it (k = 0: plain decoding)
    proposals: Sequence[SparseDist] | None,
    params: SamplingParams,
    seed: int,
) -> Verification:
    out = session.forward(start, list(committed) + list(draft), n_logits=len(draft) + 1)
    position = start + len(committed)
    verdict = verify_chain(out.logits, draft, proposals, params, seed, position)
    return Verification(verdict, out.seconds)
