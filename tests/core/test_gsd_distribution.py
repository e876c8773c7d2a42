"""Mode gsd samples exactly the target's distribution (the lossless claim, tested), and
the reference GSD rule (each child accepted on its own, no residual updates) does not.

Like tests/core/test_distribution.py: thousands of seeded requests, the joint histogram of
the first generated tokens against the target's exact distribution. With
max_new_tokens = 3 the first round drafts a tree of depth 2, so both tokens come out
of one multi-candidate walk when accepted.
"""

import asyncio
import itertools
import math

import pytest

from specdec import Engine
from specdec.core.sampling import SamplingParams
from specdec.core.tree import ROOT, TreeParams
from specdec.gsd import verifying
from specdec.gsd.drafting import draft_tree
from specdec.gsd.verifying import verify_draft_tree
from specdec.runtime.session import ModelSession
from tests.helpers.distributions import exact_two_token_distribution, prompt_of
from tests.helpers.fakes import NGramLM, fake_engine, lossy_choose_child
from tests.helpers.stats import chi_square_pvalue

N = 2000
WIDE = dict(tree_width=3, sibling_threshold=0.0, prob_threshold=0.0)  # every node expanded
T1 = SamplingParams(temperature=1.0)


@pytest.fixture(scope="module", params=["fake", pytest.param("tiny", marks=pytest.mark.full)])
def engine(request):
    """The fake n-gram pair in the default suite, the tiny transformers pair in `make test-full`
    (same N, same thresholds; see tests/core/test_distribution.py)."""
    return fake_engine(mix=0.3, sharpness=6) if request.param == "fake" else Engine.from_preset("tiny", seed=0)


def sample(engine, prompt_ids, n, max_new_tokens=3, **kwargs):
    """(emitted token tuples, [(accepted, recovered?) of every GSD round])."""
    rounds = []
    verify_tree = engine.target_endpoint.verify_tree

    async def recording(session_id, committed, tree, params, seed):
        v = await verify_tree(session_id, committed, tree, params, seed)
        last = v.verdict.path[-1] if v.verdict.path else ROOT
        rounds.append((v.verdict.accepted, bool(tree.children()[last + 1])))
        return v

    async def run():
        return [
            await engine.agenerate(prompt_ids, max_new_tokens=max_new_tokens, seed=seed, ignore_eos=True, **kwargs)
            for seed in range(n)
        ]

    engine.target_endpoint.verify_tree = recording
    try:
        results = asyncio.run(run())
    finally:
        del engine.target_endpoint.verify_tree
    return [tuple(r.token_ids) for r in results], rounds


def marginal(joint: dict, k: int) -> dict:
    out: dict = {}
    for outcome, p in joint.items():
        out[outcome[:k]] = out.get(outcome[:k], 0.0) + p
    return out


def check(samples, exact, k):
    """p-values of the first k tokens jointly and of the first token alone."""
    return chi_square_pvalue([s[:k] for s in samples], marginal(exact, k)), chi_square_pvalue(
        [s[:1] for s in samples], marginal(exact, 1)
    )


@pytest.mark.parametrize(
    "sampling,tree",
    # the wide tree at T=1 in `make test-full` only (the default suite stays under 6 minutes;
    # its negative control below runs by default on the same wide shape)
    [pytest.param(dict(temperature=1.0), WIDE, marks=pytest.mark.full), (dict(temperature=0.7, top_p=0.9), {})],
    ids=["t1-wide", "t0.7-top-p-default-tree"],
)
def test_first_two_tokens_follow_the_target_distribution(engine, sampling, tree):
    prompt_ids = prompt_of(engine)
    exact = exact_two_token_distribution(engine, prompt_ids, SamplingParams(**sampling))
    samples, rounds = sample(engine, prompt_ids, N, mode="gsd", **sampling, **tree)
    recovered = sum(r for _, r in rounds) / len(rounds)
    assert 0.05 < recovered < 0.95, f"the draft must really get rejected, and accepted ({recovered:.2f} rejected)"
    assert {1, 2} <= {a for a, _ in rounds}
    assert all(p > 1e-3 for p in check(samples, exact, 2))


def test_the_check_rejects_the_reference_gsd_rule(engine, monkeypatch):
    monkeypatch.setattr(verifying, "_choose_child", lossy_choose_child)
    prompt_ids = prompt_of(engine)
    exact = exact_two_token_distribution(engine, prompt_ids, T1)
    samples, _ = sample(engine, prompt_ids, N // 4, mode="gsd", temperature=1.0, **WIDE)
    assert check(samples, exact, 2)[0] < 1e-6


def test_merged_dags_keep_the_distribution():
    """Fake models (tests/helpers/fakes.py) make merges frequent: a draft that looks three
    tokens back, merge_context 1, so a merged node's children come from a proposal
    computed on another path. The first four tokens still follow the target."""
    vocab, prompt = 6, [0, 1, 2]
    target = NGramLM(vocab, order=1, seed=1)
    draft = NGramLM(vocab, order=3, seed=2, like=target, mix=0.4)
    shape = TreeParams(width=2, depth=4, sibling_threshold=0.0, prob_threshold=0.0, merge_context=1)
    d, t = ModelSession(draft), ModelSession(target)
    samples, merged, first_accepted = [], 0, []
    for seed in range(1000):
        out: list[int] = []
        while len(out) < 4:  # rounds, as Request.gsd_round runs them (no depth clipping)
            tree = draft_tree(d, 0, prompt + out, shape, T1, seed)
            verdict = verify_draft_tree(t, 0, prompt + out, tree, T1, seed).verdict
            merged += tree.merged_nodes
            first_accepted += [verdict.accepted] if not out else []
            out += list(verdict.tokens) + [verdict.next_token]
        samples.append(tuple(out[:4]))
    assert merged > 1000 and all(first_accepted.count(k) > 50 for k in range(5))
    exact = {}
    for xs in itertools.product(range(vocab), repeat=4):
        exact[xs] = math.prod(float(target.probs(tuple(prompt + list(xs[:i])))[x]) for i, x in enumerate(xs))
    for keep in [(0, 1), (2, 3), (0, 1, 2, 3)]:
        joint: dict = {}
        for xs, p in exact.items():
            joint[tuple(xs[i] for i in keep)] = joint.get(tuple(xs[i] for i in keep), 0.0) + p
        assert chi_square_pvalue([tuple(s[i] for i in keep) for s in samples], joint) > 1e-3, keep
