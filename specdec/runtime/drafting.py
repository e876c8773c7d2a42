"""The draft side of a round: propose tokens one by one until the stop rule says stop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from specdec.core import rng
from specdec.core.policies import DraftStep, StopRule
from specdec.core.sampling import (
    SamplingParams,
    SparseDist,
    entropy,
    logits_to_probs,
    truncate,
)
from specdec.runtime.session import ModelSession

# hidden [h] -> P(target accepts this token); SpecDec++'s head (see specdec/specdecpp/head.py)
AcceptanceHead = Callable[[torch.Tensor], float]

DEFAULT_PROPOSAL_TOP_N = 64


@dataclass(frozen=True)
class DraftToken:
    token: int
    q: SparseDist | None  # the exact proposal it was sampled from; None when greedy
    entropy: float  # nats, untempered
    p_accept: float | None  # acceptance head output, when a head is loaded
    seconds: float  # draft compute spent producing it


def draft_tokens(
    session: ModelSession,
    start: int,
    tokens: Sequence[int],  # the sequence to continue is session.tokens[:start] + tokens
    rule: StopRule,
    params: SamplingParams,
    seed: int,
    top_n: int = DEFAULT_PROPOSAL_TOP_N,
    head: AcceptanceHead | None = None,
) -> Iterator[DraftToken]:
    """Yield draft tokens as they are produced; stop when `rule` says so.

    A consumer may stop iterating early (PEARL cancels a stale draft); the session
    then simply holds a longer prefix, which the next call crops implicitly.
    """
    want_hidden = head is not None
    position = start + len(tokens)  # absolute index of the token being drafted
    p_all_accepted = 1.0
    n = 0
    feed = list(tokens)
    while True:
        with session.step() as step:  # the forward and the proposal maths: one draft step
            out = session.forward(start, feed, 1, want_hidden) if n == 0 else session.append(feed, 1, want_hidden)
            logits = out.logits[-1]
            token, q = _propose(logits, params, seed, position, top_n)
            p_accept = head(out.hidden[-1]) if head is not None else None
            step_entropy = float(entropy(logits))
        if p_accept is not None:
            p_all_accepted *= p_accept
        n += 1
        draft_step = DraftStep(n_drafted=n, entropy=step_entropy, p_accept=p_accept)
        yield DraftToken(token, q, step_entropy, p_accept, step.seconds)
        if rule.should_stop(draft_step, p_all_accepted):
            return
        feed = [token]
        position += 1


def _propose(logits: torch.Tensor, params: SamplingParams, seed: int, position: int, top_n: int):
    if params.greedy:
        return int(logits.argmax()), None
    q = truncate(logits_to_probs(logits, params), top_n)
    pick = rng.sample(q.probs, seed, rng.Stream.DRAFT, position)
    return int(q.token_ids[pick]), q
