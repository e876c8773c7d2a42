"""PEARL's sampled output has the target's distribution at every position, including the
positions judged against a row the target kept from its last pass (docs/algorithms.md §4).

The fake n-gram pair (order 2) makes the target's exact marginal at every position
computable by a forward recursion over its two-token state. The target is held to a
slow forward and the draft runs free, so the draft's next window is always ready when
a pass ends: the first token of most windows is judged against the kept row (counted,
so the test knows that path ran). The negative control judges that token wrongly
(accepted without a test) and must fail the same check.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from specdec import Engine
from specdec.core.sampling import SamplingParams, logits_to_probs
from specdec.runtime import session as session_module
from specdec.runtime import verifying
from specdec.runtime.cost import CostProfile
from tests.helpers.fakes import fake_pair
from tests.helpers.stats import chi_square_pvalue

N = 2000
N_CONTROL = 400  # the wrong rule is far off: p < 1e-50 at position 1 with 300 samples
POSITIONS = 6
PROMPT = [1, 2, 3]
SLOW_TARGET = CostProfile("slow-target", target_ms=1.0, draft_ms=0.0)


@pytest.fixture(scope="module")
def pair():
    return fake_pair()


def exact_marginals(target, params: SamplingParams, n: int) -> list[dict]:
    """{token: p} at generated positions 1..n of the target sampling alone (order-2 state)."""
    vocab = target.vocab

    def p_next(a: int, b: int) -> torch.Tensor:
        return logits_to_probs(target.probs((a, b)).log(), params)

    state = {(PROMPT[-2], PROMPT[-1]): 1.0}
    out = []
    for _ in range(n):
        marginal = torch.zeros(vocab)
        nxt: dict = {}
        for (a, b), w in state.items():
            p = p_next(a, b)
            marginal += w * p
            for t in p.nonzero()[:, 0].tolist():
                nxt[(b, t)] = nxt.get((b, t), 0.0) + w * float(p[t])
        state = nxt
        out.append({t: float(m) for t, m in enumerate(marginal) if m > 0})
    return out


def sample(engine, n: int, **sampling) -> tuple[list[list[int]], float]:
    async def run():
        return [
            await engine.agenerate(PROMPT, max_new_tokens=POSITIONS, seed=seed, ignore_eos=True, mode="pearl",
                                   policy="fixed", draft_length=3, **sampling)
            for seed in range(n)
        ]

    results = asyncio.run(run())
    drafted = sum(r.stats.draft_tokens for r in results)
    accepted = sum(r.stats.accepted_tokens for r in results)
    return [r.token_ids for r in results], accepted / drafted


@pytest.fixture
def kept_row_uses(monkeypatch):
    """Counts draft tokens judged against a kept row."""
    uses = {"n": 0}
    real = session_module.ModelSession.kept_row

    def counting(self, start, tokens):
        row = real(self, start, tokens)
        uses["n"] += row is not None
        return row

    monkeypatch.setattr(session_module.ModelSession, "kept_row", counting)
    return uses


def check(outputs, expected) -> list[float]:
    return [chi_square_pvalue([o[i] for o in outputs], expected[i]) for i in range(POSITIONS)]


CASES = [dict(temperature=1.0), pytest.param(dict(temperature=0.7, top_p=0.9), marks=pytest.mark.full)]


@pytest.mark.parametrize("sampling", CASES)
def test_every_position_follows_the_target_distribution(pair, kept_row_uses, sampling):
    draft, target = pair
    engine = Engine(draft, target, None, eos_token_ids=[], cost=SLOW_TARGET)
    outputs, acceptance = sample(engine, N, **sampling)
    assert 0.2 < acceptance < 0.95, f"the draft must really get rejected (acceptance {acceptance:.2f})"
    assert kept_row_uses["n"] > N, "the kept-row path must carry many windows' first tokens"
    pvalues = check(outputs, exact_marginals(target, SamplingParams(**sampling), POSITIONS))
    assert min(pvalues) > 1e-3 / POSITIONS, pvalues  # Bonferroni over the positions


def test_the_check_fails_when_the_kept_row_is_judged_wrongly(pair, monkeypatch):
    """Negative control: accept a window's first token against the kept row untested."""
    draft, target = pair
    monkeypatch.setattr(verifying, "judge_prefix", lambda rows, tokens, *a: (len(rows), None))
    engine = Engine(draft, target, None, eos_token_ids=[], cost=SLOW_TARGET)
    outputs, _ = sample(engine, N_CONTROL, temperature=1.0)
    pvalues = check(outputs, exact_marginals(target, SamplingParams(temperature=1.0), POSITIONS))
    assert min(pvalues) < 1e-6, pvalues
