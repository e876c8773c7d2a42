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

# hidden [h] -> P(target accepts the token that hidden state's position was fed);
# SpecDec++'s head (see specdec/specdecpp/head.py)
AcceptanceHead = Callable[[torch.Tensor], float]

DEFAULT_PROPOSAL_TOP_N = 64


@dataclass(frozen=True)
class DraftToken:
    token: int
    q: SparseDist | None  # the exact proposal it was sampled from; None when greedy
    entropy: float  # nats, untempered: of the distribution it was drawn from
    # Draft compute spent producing it: the forward that fed the token before it (or the
    # round's prefix) and its sampling. A forward after which the rule stops belongs to no
    # token, so it is not counted here (docs/algorithms.md §2).
    seconds: float
    # No acceptance-head output: the head scores a token from the state after it is fed,
    # which exists only after the token is streamed (docs/algorithms.md §3).


def draft_tokens(
    session: ModelSession,
    start: int,
    tokens: Sequence[int],  # the sequence to continue is session.tokens[:start] + tokens
    rule: StopRule,
    params: SamplingParams,
    seed: int,
    top_n: int = DEFAULT_PROPOSAL_TOP_N,
    head: AcceptanceHead | None = None,
    guide=None,  # structured output: masks each step's logits (specdec.grammar.Guide)
) -> Iterator[DraftToken]:
    """Yield draft tokens as they are produced; stop when `rule` says so.

    One loop for every rule (docs/algorithms.md §1-§3). Each pass runs one forward: the
    first feeds the round's prefix, each later one feeds the token drafted last, x_n. That
    forward gives the logits x_{n+1} would be drawn from and the hidden state whose input
    is x_n; before drawing, the rule looks at the entropy of those logits (AdaEDL) and at
    the product of the head's scores of x_1..x_n (SpecDec++). If it says stop, the round
    ends with n tokens, and x_n's cache row stays for the next round to reuse. At the cap
    the loop ends right after the last token is drawn, so no forward is wasted there.

    A consumer may stop iterating early (PEARL cancels a stale draft); the session
    then simply holds a longer prefix, which the next call crops implicitly.
    """
    position = start + len(tokens)  # absolute index of the token being drafted
    p_all_accepted = 1.0  # product of the head's p_accept over this round's tokens
    drafted = 0
    feed = list(tokens)
    while True:
        with session.step() as step:  # the forward and the proposal maths: one draft step
            want_hidden = head is not None and drafted > 0  # the prefix's last state scores no draft token
            out = session.forward(start, feed, 1, want_hidden) if drafted == 0 else session.append(feed, 1, want_hidden)
            if guide is not None:  # the draft proposes under the same mask the target verifies with
                guide.mask_chain(out.logits[-1:], session.tokens)
            logits = out.logits[-1]  # what the next token is drawn from
            step_entropy = float(entropy(logits))
            if drafted > 0:
                p_accept = head(out.hidden[-1]) if head is not None else None  # scores x_n, the token just fed
                if p_accept is not None:
                    p_all_accepted *= p_accept
                if rule.stops_before_drawing(DraftStep(drafted, step_entropy, p_accept), p_all_accepted):
                    return  # this forward's time goes with no token (docs/algorithms.md §2)
            token, q = _propose(logits, params, seed, position, top_n)
        drafted += 1
        yield DraftToken(token, q, step_entropy, step.seconds)
        if rule.stops_after_drawing(drafted, step_entropy):
            return
        feed = [token]
        position += 1


def _propose(logits: torch.Tensor, params: SamplingParams, seed: int, position: int, top_n: int):
    if params.greedy:
        return int(logits.argmax()), None
    q = truncate(logits_to_probs(logits, params), top_n)
    pick = rng.sample(q.probs, seed, rng.Stream.DRAFT, position)
    return int(q.token_ids[pick]), q
