"""Mode gsd samples exactly the target's distribution (the lossless claim, tested), and
the reference GSD rule (each child accepted on its own, no residual updates) does not.

Like tests/core/test_distribution.py: thousands of seeded requests, the joint histogram of
the first generated tokens against the target's exact distribution. With
max_new_tokens = 3 the first round drafts a tree of depth 2, so both tokens come out
of one multi-candidate walk when accepted.

With top-k and every node's q cut to the draft's top 8 of 96 tokens (siblings drawn from
exactly that q, without replacement), the output still follows the target; a verifier that
ignores the truncation does not.
"""

import asyncio
import itertools
import math
import statistics

import pytest

from specdec import Engine
from specdec.core.sampling import SamplingParams
from specdec.core.tree import ROOT, TreeParams, without
from specdec.gsd import drafting, verifying
from specdec.gsd.drafting import draft_tree
from specdec.gsd.verifying import verify_draft_tree
from specdec.runtime.session import ModelSession
from tests.helpers.distributions import exact_two_token_distribution, prompt_of, truncating_engine
from tests.helpers.fakes import TOP_K_BEYOND_N, NGramLM, fake_engine, lossy_choose_child, watch_truncation
from tests.helpers.stats import chi_square_pvalue, position_pvalues

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


def assert_rejected_and_accepted(rounds) -> None:
    """The walk really rejects and really accepts one and two tokens: the check is not vacuous."""
    recovered = sum(r for _, r in rounds) / len(rounds)
    assert 0.05 < recovered < 0.95, f"the draft must really get rejected, and accepted ({recovered:.2f} rejected)"
    assert {1, 2} <= {a for a, _ in rounds}


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
    assert_rejected_and_accepted(rounds)
    assert all(p > 1e-3 for p in check(samples, exact, 2))


def test_the_check_rejects_the_reference_gsd_rule(engine, monkeypatch):
    monkeypatch.setattr(verifying, "_choose_child", lossy_choose_child)
    prompt_ids = prompt_of(engine)
    exact = exact_two_token_distribution(engine, prompt_ids, T1)
    samples, _ = sample(engine, prompt_ids, N // 4, mode="gsd", temperature=1.0, **WIDE)
    assert check(samples, exact, 2)[0] < 1e-6


@pytest.fixture(scope="module", params=["fake", pytest.param("tiny", marks=pytest.mark.full)])
def truncating(request):
    """The draft's q cut to its top 8 tokens of 96 (the tiny pair: of 69)."""
    return truncating_engine(request.param)


def test_top_k_and_a_truncated_proposal_follow_the_target_distribution(truncating, monkeypatch):
    """top_k = 16 (at T = 2) while each node's q keeps only the draft's top 8; every node is
    expanded (sibling_threshold 0), so q is exactly the truncated one."""
    dropped = watch_truncation(monkeypatch)
    prompt_ids = prompt_of(truncating)
    exact = exact_two_token_distribution(truncating, prompt_ids, SamplingParams(**TOP_K_BEYOND_N))
    samples, rounds = sample(truncating, prompt_ids, N, mode="gsd", **TOP_K_BEYOND_N, **WIDE)
    assert_rejected_and_accepted(rounds)
    cut = statistics.mean(dropped)
    assert cut > 0.05, f"the truncation must drop real mass from q ({cut:.3f} on average)"
    pvalues = position_pvalues([s[:2] for s in samples], exact)  # (x1, x2) jointly, x1, x2
    assert all(p > 1e-3 for p in pvalues), pvalues


def test_the_check_rejects_a_verifier_that_ignores_the_truncation(monkeypatch):
    """Negative control: siblings are drawn from the renormalised top 8, but judged (and the
    residuals built) with q not renormalised."""
    engine = truncating_engine("fake")
    watch_truncation(monkeypatch, lossy=True)
    prompt_ids = prompt_of(engine)
    exact = exact_two_token_distribution(engine, prompt_ids, SamplingParams(**TOP_K_BEYOND_N))
    samples, _ = sample(engine, prompt_ids, N // 4, mode="gsd", **TOP_K_BEYOND_N, **WIDE)
    pvalues = position_pvalues([s[:2] for s in samples], exact)
    assert pvalues[1] < 1e-6, pvalues  # the first token


def merged_runs(shape: TreeParams, seeds: int):
    """(first-four-token samples, merged draws, first rounds' accepted counts, exact joint of
    the first four tokens) on the fake pair: a draft that looks three tokens back, so a
    merged node's children come from a proposal computed on another path."""
    vocab, prompt = 6, [0, 1, 2]
    target = NGramLM(vocab, order=1, seed=1)
    draft = NGramLM(vocab, order=3, seed=2, like=target, mix=0.4)
    d, t = ModelSession(draft), ModelSession(target)
    samples, merged, first_accepted = [], 0, []
    for seed in range(seeds):
        out: list[int] = []
        while len(out) < 4:  # rounds, as Request.gsd_round runs them (no depth clipping)
            tree = draft_tree(d, 0, prompt + out, shape, T1, seed)
            verdict = verify_draft_tree(t, 0, prompt + out, tree, T1, seed).verdict
            merged += tree.merged_nodes
            first_accepted += [verdict.accepted] if not out else []
            out += list(verdict.tokens) + [verdict.next_token]
        samples.append(tuple(out[:4]))
    exact = {}
    for xs in itertools.product(range(vocab), repeat=4):
        exact[xs] = math.prod(float(target.probs(tuple(prompt + list(xs[:i])))[x]) for i, x in enumerate(xs))
    return samples, merged, first_accepted, exact


def marginal_pvalues(samples, exact) -> list[float]:
    out = []
    for keep in [(0, 1), (2, 3), (0, 1, 2, 3)]:
        joint: dict = {}
        for xs, p in exact.items():
            joint[tuple(xs[i] for i in keep)] = joint.get(tuple(xs[i] for i in keep), 0.0) + p
        out.append(chi_square_pvalue([tuple(s[i] for i in keep) for s in samples], joint))
    return out


# merges at any depth (merge_context 0: the token alone links; 1: the preceding token too), and a
# node budget that binds, so copies of a merged node get fewer children than its first copy
MERGING = [
    TreeParams(width=2, depth=4, sibling_threshold=0.0, prob_threshold=0.0, merge_context=1),
    TreeParams(width=2, depth=4, max_nodes=9, sibling_threshold=0.0, prob_threshold=0.0, merge_context=0),
]


@pytest.mark.parametrize("shape", MERGING, ids=["context-1", "token-alone-budget-9"])
def test_merged_dags_keep_the_distribution(shape):
    """The first four tokens follow the target while merges link nodes across depths."""
    samples, merged, first_accepted, exact = merged_runs(shape, 1000)
    assert merged > 1000 and all(first_accepted.count(k) > 50 for k in range(3))
    assert min(marginal_pvalues(samples, exact)) > 1e-3


def test_the_check_rejects_copies_that_do_not_draw_their_children(monkeypatch):
    """Negative control: a merged node's copies that take their best child instead of
    drawing it (a DAG sharing a copy's "obvious" child) bias the output, and the same check
    sees it."""
    real_draw = drafting._Builder.draw

    def lazy_draw(self, entry, drawn):
        first_entry = self.__dict__.setdefault("first_entry", {})  # DAG node -> its first tree node
        if self.params.greedy or first_entry.setdefault(entry.node.id, entry.index) == entry.index:
            return real_draw(self, entry, drawn)
        q = without(entry.node.proposal, drawn)  # a copy: its most likely child, not a draw
        return int(q.token_ids[int(q.probs.argmax())])

    monkeypatch.setattr(drafting._Builder, "draw", lazy_draw)
    samples, merged, _, exact = merged_runs(MERGING[0], 1000)
    assert merged > 1000
    assert min(marginal_pvalues(samples, exact)) < 1e-6
