"""PEARL's sampled output has the target's distribution at every position, including the
positions judged against a row the target kept from its last pass (docs/algorithms.md §4).

The fake n-gram pair (order 2) makes the target's exact marginal at every position
computable by a forward recursion over its two-token state. The target is held to a
slow forward and the draft runs free, so the draft's next window is always ready when
a pass ends: the first token of most windows is judged against the kept row (counted,
so the test knows that path ran). The negative control judges that token wrongly
(accepted without a test) and must fail the same check.

The same holds with top-k and the draft's q cut to its top 8 of 96 tokens (the draft samples
from exactly that q); a verifier that ignores the truncation fails the check.
"""

from __future__ import annotations

import asyncio
import functools
import statistics

import pytest
import torch

from specdec import Engine
from specdec.core.sampling import SamplingParams, logits_to_probs
from specdec.runtime import session as session_module
from specdec.runtime import verifying
from specdec.runtime.cost import CostProfile
from tests.helpers.distributions import truncating_engine
from tests.helpers.fakes import TOP_K_BEYOND_N, TRUNCATING_TOP_N, fake_pair, watch_truncation
from tests.helpers.stats import chi_square_pvalue

N = 2000
N_CONTROL = 400  # the wrong rule is far off: p < 1e-50 at position 1 with 300 samples
POSITIONS = 6
PROMPT = [1, 2, 3]
SLOW_TARGET = CostProfile("slow-target", target_ms=1.0, draft_ms=0.0)


@pytest.fixture(scope="module")
def pair():
    return fake_pair()


@pytest.fixture(scope="module")
def truncating_pair():
    """(draft, target) of 96 tokens; build the engine with `proposal_top_n=8` (TRUNCATING)."""
    engine = truncating_engine("fake")
    return engine.draft, engine.target


def pearl_engine(pair, top_n: int = 64) -> Engine:
    draft, target = pair
    return Engine(draft, target, None, eos_token_ids=[], cost=SLOW_TARGET, proposal_top_n=top_n)


def exact_marginals(target, params: SamplingParams, n: int) -> list[dict]:
    """{token: p} at generated positions 1..n of the target sampling alone (order-2 state)."""
    vocab = target.vocab

    @functools.lru_cache(maxsize=None)  # a state recurs at later positions
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


CASES = [
    ("pair", dict(temperature=1.0)),
    pytest.param("pair", dict(temperature=0.7, top_p=0.9), marks=pytest.mark.full),
    # top_k = 16, q cut to its top 8 of 96 tokens: ~20 s of CPU, so `make test-full` only (the
    # default suite runs its negative control below, and the same case in modes sequential and gsd)
    pytest.param("truncating_pair", TOP_K_BEYOND_N, marks=pytest.mark.full),
]


@pytest.mark.parametrize("pair_name,sampling", CASES, ids=["t1", "t0.7-top-p", "top-k-truncated-q"])
def test_every_position_follows_the_target_distribution(request, monkeypatch, kept_row_uses, pair_name, sampling):
    pair = request.getfixturevalue(pair_name)
    dropped = watch_truncation(monkeypatch)
    engine = pearl_engine(pair, top_n=TRUNCATING_TOP_N if pair_name == "truncating_pair" else 64)
    outputs, acceptance = sample(engine, N, **sampling)
    assert 0.2 < acceptance < 0.95, f"the draft must really get rejected (acceptance {acceptance:.2f})"
    assert kept_row_uses["n"] > N, "the kept-row path must carry many windows' first tokens"
    if pair_name == "truncating_pair":
        assert statistics.mean(dropped) > 0.3, "the truncation must drop real mass from q"
    pvalues = check(outputs, exact_marginals(pair[1], SamplingParams(**sampling), POSITIONS))
    # Bonferroni over the positions; all(), not min(): a NaN (every bin pooled into one) fails
    assert all(p > 1e-3 / POSITIONS for p in pvalues), pvalues


def test_the_check_fails_when_the_kept_row_is_judged_wrongly(pair, monkeypatch):
    """Negative control: accept a window's first token against the kept row untested."""
    draft, target = pair
    monkeypatch.setattr(verifying, "judge_prefix", lambda rows, tokens, *a: (len(rows), None))
    engine = Engine(draft, target, None, eos_token_ids=[], cost=SLOW_TARGET)
    outputs, _ = sample(engine, N_CONTROL, temperature=1.0)
    pvalues = check(outputs, exact_marginals(target, SamplingParams(temperature=1.0), POSITIONS))
    assert min(pvalues) < 1e-6, pvalues


def test_the_check_fails_when_the_verifier_ignores_the_truncation(truncating_pair, monkeypatch):
    """Negative control: the draft samples from its renormalised top 8, but every token
    (kept-row judgements included) is judged with q not renormalised."""
    watch_truncation(monkeypatch, lossy=True)
    outputs, _ = sample(pearl_engine(truncating_pair, TRUNCATING_TOP_N), N_CONTROL, **TOP_K_BEYOND_N)
    pvalues = check(outputs, exact_marginals(truncating_pair[1], SamplingParams(**TOP_K_BEYOND_N), POSITIONS))
    # positions 1 and 2 (p ~ 1e-33, 1e-11); from 4 on, 400 samples over ~96 tokens leave every bin
    # expecting < 5, pooled into one: NaN
    assert min(pvalues[:2]) < 1e-6, pvalues
