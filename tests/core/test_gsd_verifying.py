"""gsd/verifying.py: greedy walks, multi-candidate sampling reproduces p exactly (and the
reference GSD rule does not), the target cache after a round is a fresh prefill's."""

import pytest
import torch

from specdec.core import rng
from specdec.core.sampling import SamplingParams, truncate
from specdec.core.tree import ROOT, DraftTree, TreeParams, branch, without
from specdec.gsd import verifying
from specdec.gsd.drafting import draft_tree
from specdec.gsd.verifying import verify_draft_tree, verify_tree
from specdec.models.tiny import tiny_pair
from specdec.runtime.session import ModelSession
from tests.helpers.fakes import lossy_choose_child
from tests.helpers.stats import chi_square_pvalue

GREEDY = SamplingParams()
T1 = SamplingParams(temperature=1.0)

# root -> 1, 2, 3; 1 -> 4, 5; 3 -> 2
GREEDY_TREE = DraftTree(tokens=[1, 2, 3, 4, 5, 2], parents=[ROOT, ROOT, ROOT, 0, 0, 2])


def onehot_logits(rows, vocab=8):
    out = torch.full((len(rows), vocab), -5.0)
    for i, t in enumerate(rows):
        out[i, t] = 5.0
    return out


@pytest.mark.parametrize(
    "argmax,path,next_token",
    [
        ([3, 0, 0, 2, 0, 0, 7], (2, 5), 7),  # root -> 3 -> 2, then the bonus at a leaf
        ([1, 5, 0, 0, 0, 0, 0], (0, 4), 0),  # root -> 1 -> 5 (the second sibling), bonus
        ([1, 6, 0, 0, 0, 0, 0], (0,), 6),  # root -> 1, then no child matches: recovered 6
        ([7, 0, 0, 0, 0, 0, 0], (), 7),  # no root child matches
    ],
)
def test_greedy_follows_the_targets_argmax(argmax, path, next_token):
    v = verify_tree(onehot_logits(argmax), GREEDY_TREE, GREEDY, seed=0, position=10)
    assert (v.path, v.next_token, v.accepted, v.drafted) == (path, next_token, len(path), 6)
    assert v.tokens == tuple(GREEDY_TREE.tokens[i] for i in path)


def test_row_count_is_checked():
    with pytest.raises(ValueError, match="target rows"):
        verify_tree(onehot_logits([1, 2]), GREEDY_TREE, GREEDY, 0, 0)


# -- exactness on synthetic distributions -----------------------------------------

VOCAB = 6


def random_rows(seed):
    w = torch.rand((VOCAB + 1, VOCAB), generator=torch.Generator().manual_seed(seed)) ** 3
    return w / w.sum(-1, keepdim=True)


P = random_rows(3)  # the target: row 0 at the root, row 1 + a after token a
Q = 0.1 * P + 0.9 * random_rows(4)  # the draft, same layout: a little like the target
WIDTHS = (3, 2)  # children of the root, of each root child


def synthetic_round(seed):
    """A two-level tree drawn from Q like the draft draws, verified against P; returns the
    first two emitted tokens (the second from a fresh target sample if the round ended)."""
    proposals = [truncate(Q[0], 0)] + [truncate(Q[1 + a], 0) for a in range(VOCAB)]
    tokens, parents, proposal_ids = [], [], []
    for i in range(WIDTHS[0]):
        q = without(proposals[0], tokens)
        tokens.append(int(q.token_ids[rng.sample(q.probs, seed, rng.Stream.DRAFT, 0, branch(0, i))]))
        parents.append(ROOT)
    proposal_ids = [1 + t for t in tokens]
    for node in range(WIDTHS[0]):
        drawn = []
        for i in range(WIDTHS[1]):
            q = without(proposals[1 + tokens[node]], drawn)
            drawn.append(int(q.token_ids[rng.sample(q.probs, seed, rng.Stream.DRAFT, 1, branch(1 + node, i))]))
        tokens += drawn
        parents += [node] * WIDTHS[1]
        proposal_ids += [-1] * WIDTHS[1]
    tree = DraftTree(tokens, parents, proposals, 0, proposal_ids)
    logits = torch.stack([P[0]] + [P[1 + t] for t in tokens]).log()
    v = verify_tree(logits, tree, T1, seed, position=0)
    out = list(v.tokens) + [v.next_token]
    if len(out) < 2:
        out.append(int(torch.multinomial(P[1 + out[0]], 1, generator=torch.Generator().manual_seed(seed))))
    return tuple(out[:2]), v.accepted


def synthetic_pairs(n):
    results = [synthetic_round(seed) for seed in range(n)]
    return [r[0] for r in results], [sum(r[1] == k for r in results) / n for k in range(3)]


EXACT = {(a, b): float(P[0, a] * P[1 + a, b]) for a in range(VOCAB) for b in range(VOCAB)}


def test_multi_candidate_sampling_reproduces_the_target():
    pairs, accepted_share = synthetic_pairs(2500)
    assert min(accepted_share) > 0.05, accepted_share  # 0, 1 and 2 accepted tokens all happen
    assert chi_square_pvalue(pairs, EXACT) > 1e-3
    first = {a: float(P[0, a]) for a in range(VOCAB)}
    assert chi_square_pvalue([p[0] for p in pairs], first) > 1e-3


def test_the_reference_gsd_rule_is_not_lossless(monkeypatch):
    monkeypatch.setattr(verifying, "_choose_child", lossy_choose_child)
    pairs, _ = synthetic_pairs(2500)
    assert chi_square_pvalue(pairs, EXACT) < 1e-6


# -- the target session after a round ---------------------------------------------


@pytest.mark.parametrize("params", [GREEDY, T1])
def test_after_each_round_the_target_cache_is_a_fresh_prefill(params):
    draft, target, _ = tiny_pair(0)
    d, t = ModelSession(draft), ModelSession(target)
    committed = [4, 17, 30, 8, 21]
    shape = TreeParams(width=3, depth=4, max_nodes=20, prob_threshold=0.0)
    accepted = 0
    for round_ in range(6):
        tree = draft_tree(d, 0, committed, shape, params, seed=round_)
        v = verify_draft_tree(t, 0, committed, tree, params, seed=round_).verdict
        assert t.tokens == committed + list(v.tokens)
        assert t.cache.get_seq_length() == len(t.tokens)
        committed = committed + list(v.tokens) + [v.next_token]
        accepted += v.accepted
    out = t.forward(0, committed, n_logits=1)
    assert out.new_tokens == 1  # only the last (recovered or bonus) token is new
    fresh = ModelSession(target).forward(0, committed, n_logits=1)
    assert torch.allclose(out.logits, fresh.logits, atol=1e-4)
    assert accepted > 0
