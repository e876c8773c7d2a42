"""The target side of a round: one forward over [last committed token, d1..dk], then the verdict.

When the session's last forward ended exactly at the committed sequence, its kept row
is the target's distribution for d1 (PEARL: the bonus row of a fully accepted window,
or a pre-verify pass over the committed prefix). Then d1 is judged against that row
first, with no pass at all when it is rejected, and the forward covers only d1..dk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from specdec.core.acceptance import Verdict, judge_prefix, sample_bonus, verify_chain
from specdec.core.sampling import SamplingParams, SparseDist
from specdec.runtime.session import ModelSession


@dataclass(frozen=True)
class Verification:
    verdict: Verdict
    seconds: float  # target compute, including any cost-profile wait
    passes: int = 1  # target forwards run (0: decided from the kept row alone)
    batch_tokens: int = 0  # tokens of all sessions in that forward (> this round's when sessions were merged)


def verify_draft(
    session: ModelSession,
    start: int,
    committed: Sequence[int],  # the committed sequence is session.tokens[:start] + committed
    draft: Sequence[int],  # [k] draft tokens after it (k = 0: plain decoding)
    proposals: Sequence[SparseDist] | None,
    params: SamplingParams,
    seed: int,
    guide=None,  # structured output: masks the target's rows (specdec.grammar.Guide)
) -> Verification:
    with session.step() as step:
        verdict, passes = _verify(session, start, committed, draft, proposals, params, seed, guide)
    return Verification(verdict, step.seconds if passes else 0.0, passes, step.batch_tokens if passes else 0)


def _verify(session, start, committed, draft, proposals, params, seed, guide) -> tuple[Verdict, int]:
    position = start + len(committed)  # absolute index of d1
    k = len(draft)
    row = session.kept_row(start, committed)
    if row is None:
        out = session.forward(start, list(committed) + list(draft), n_logits=k + 1)
        if guide is not None:  # row j: the constrained distribution after committed + d1..dj
            guide.mask_chain(out.logits, session.tokens[:position], draft)
        return verify_chain(out.logits, draft, proposals, params, seed, position), 1
    if guide is not None:
        row = guide.mask_chain(row[None].clone(), session.tokens[:position])[0]
    if k == 0:
        return Verdict(0, sample_bonus(row, params, seed, position), 0), 0
    first = proposals[:1] if proposals is not None else None
    accepted, recovered = judge_prefix(row[None], draft[:1], first, params, seed, position)
    if recovered is not None:
        return Verdict(0, recovered, k), 0
    # d1 is decided (accepted) by the kept row; one pass over d1..dk judges d2..dk
    out = session.forward(position, list(draft), n_logits=k)
    if guide is not None:
        guide.mask_chain(out.logits, session.tokens[: position + 1], draft[1:])
    rest = verify_chain(out.logits, draft[1:], proposals[1:] if proposals is not None else None, params, seed, position + 1)
    return Verdict(1 + rest.accepted, rest.next_token, k), 1
