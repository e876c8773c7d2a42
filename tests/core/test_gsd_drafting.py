"""gsd/drafting.py: level-by-level trees, merging into a DAG, budgets, exact proposals."""

from types import SimpleNamespace

import pytest
import torch

from specdec.core.sampling import SamplingParams
from specdec.core.tree import ROOT, TreeParams, without
from specdec.gsd.drafting import draft_tree
from specdec.models.tiny import tiny_pair
from specdec.runtime.session import ModelSession
from tests.helpers.gsd_merges import reference_links

GREEDY = SamplingParams()


class Bigram(torch.nn.Module):
    """A fake causal LM whose next-token logits depend on the last token only, so the
    tree it drafts is known in advance. Records the rows of every forward."""

    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, successors: dict[int, dict[int, float]], vocab: int = 8):
        super().__init__()
        self.table = torch.full((vocab, vocab), -30.0)
        for token, nexts in successors.items():
            for nxt, logit in nexts.items():
                self.table[token, nxt] = logit
        self.config = SimpleNamespace(_attn_implementation="sdpa", vocab_size=vocab)
        self.rows: list[int] = []

    def forward(self, input_ids, logits_to_keep=1, **_):
        self.rows.append(input_ids.shape[1])
        return SimpleNamespace(logits=self.table[input_ids[0]][-logits_to_keep:][None])


# two hypotheses 0-1-3 and 0-2-3 share their continuations 3-{4,5}-6
SHARED = {0: {1: 0.1, 2: 0.0}, 1: {3: 0.0}, 2: {3: 0.0}, 3: {4: 0.1, 5: 0.0}, 4: {6: 0.0}, 5: {6: 0.0}, 6: {7: 0.0}}
SHAPE = dict(width=2, depth=4, sibling_threshold=0.3, prob_threshold=0.0)


def draft(model, merge_context, prompt=(7, 0), params=GREEDY, **shape):
    tree = TreeParams(**{**SHAPE, **shape, "merge_context": merge_context})
    session = ModelSession(model)
    out = draft_tree(session, 0, list(prompt), tree, params, seed=0)
    assert session.tokens == list(prompt)  # the tree rows are dropped again
    return out


@pytest.mark.parametrize(
    "merge_context,dag_nodes,merged,level_rows",
    [
        (-1, 12, 0, [2, 2, 4]),  # no merging: a plain token tree
        (0, 6, 6, [2, 1, 2]),  # the token alone: both 3s are one node, so are their 4, 5 and all four 6s
        (1, 8, 4, [2, 2, 2]),  # 1-3 and 2-3 differ, but 3-4, 3-5 (and 4-6, 5-6 below them) are drafted once
    ],
)
def test_repeated_subsequences_become_a_dag(merge_context, dag_nodes, merged, level_rows):
    model = Bigram(SHARED)
    tree = draft(model, merge_context)
    # the unrolled tree is the same either way
    assert tree.tokens == [1, 2, 3, 3, 4, 5, 4, 5, 6, 6, 6, 6]
    assert tree.parents == [ROOT, ROOT, 0, 1, 2, 2, 3, 3, 4, 5, 6, 7]
    assert (tree.dag_nodes, tree.merged_nodes) == (dag_nodes, merged)
    assert model.rows == [2] + level_rows  # the prompt, then one forward per level


# a chain 0-1-2-3-4-5 and a shortcut 0-2: the chain's 2, 3, 4 are the shortcut's, one level deeper
SHORTCUT = {0: {1: 0.1, 2: 0.0}, 1: {2: 0.0}, 2: {3: 0.0}, 3: {4: 0.0}, 4: {5: 0.0}}


def test_nodes_merge_across_depths_as_gsd_links_them():
    model = Bigram(SHORTCUT)
    tree = draft(model, 0)
    assert tree.tokens == [1, 2, 2, 3, 3, 4, 4, 5]
    assert tree.parents == [ROOT, ROOT, 0, 1, 2, 3, 4, 5]
    # the chain's 2, 3 and 4 link to the shortcut's nodes one level up: 5 distinct nodes for 8 in the tree
    assert (tree.dag_nodes, tree.merged_nodes) == (5, 3)
    assert model.rows == [2, 2, 1, 1]  # each level drafts only the node no other path had computed
    assert (tree.saved_rows, tree.saved_forwards) == (2, 0)
    # merge_context 1 needs the preceding token to match too: the chain's 2 stays its own (1-2 vs
    # 0-2), its 3 and 4 still link (2-3, 3-4)
    one = draft(Bigram(SHORTCUT), 1)
    assert (one.dag_nodes, one.merged_nodes) == (6, 2)


def test_a_node_never_links_to_its_own_path():
    # 1-1-1-1: each new 1 matches the one above it, which is on its own path: no merge (no cycle)
    tree = draft(Bigram({0: {1: 0.0}, 1: {1: 0.0}}), 0, width=1)
    assert tree.tokens == [1, 1, 1, 1] and (tree.dag_nodes, tree.merged_nodes) == (4, 0)


def test_a_level_whose_nodes_are_all_computed_runs_no_forward():
    # 0-{1,2}, both -> 3 -> 4: with the token alone, level 3 holds two copies of 3 (one row)
    # and level 4 two copies of 4, whose node the first copy's draw created at level 3... one row each
    model = Bigram({0: {1: 0.0, 2: 0.0}, 1: {3: 0.0}, 2: {3: 0.0}, 3: {4: 0.0}, 4: {1: 0.0}})
    tree = draft(model, 0, depth=5)
    assert tree.tokens[:6] == [1, 2, 3, 3, 4, 4]
    # 4 -> 1 links to the root's child 1 (not on the path 0-2-3-4, nor on 0-1-3-4? it is: no link there)
    assert tree.merged_nodes >= 3 and tree.saved_rows >= 2


def test_the_node_budget_cuts_the_last_level_in_order():
    tree = draft(Bigram(SHARED), 1, max_nodes=7)
    assert tree.tokens == [1, 2, 3, 3, 4, 5, 4]
    assert (tree.dag_nodes, tree.merged_nodes) == (6, 1)  # the last 4 links to the first


def test_leaves_by_probability_and_depth():
    # from 0 the draft is unsure (two children at ~0.5 each): both become leaves
    assert draft(Bigram(SHARED), 1, prob_threshold=0.6).tokens == [1, 2]
    assert draft(Bigram(SHARED), 1, depth=2).tokens == [1, 2, 3, 3]


@pytest.fixture(scope="module")
def tiny_draft():
    return tiny_pair(0)[0]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize(
    "shape",
    [
        dict(width=4, depth=8, max_nodes=64),
        dict(width=3, depth=5, max_nodes=10, sibling_threshold=0.0, prob_threshold=0.0),
        dict(width=16, depth=3, max_nodes=30, sibling_threshold=0.0, prob_threshold=0.0, merge_context=1),
        dict(width=1, depth=6, max_nodes=64, prob_threshold=0.0),
    ],
)
def test_budgets_hold_and_siblings_come_from_their_proposal(tiny_draft, temperature, shape):
    params = SamplingParams(temperature=temperature)
    tp = TreeParams(**shape)
    for seed, prompt in enumerate(["the quick brown fox", "def f(x):", "ab"]):
        session = ModelSession(tiny_draft)
        ids = [3 + (ord(c) % 60) for c in prompt]
        tree = draft_tree(session, 0, ids, tp, params, seed=seed)
        assert session.tokens == ids
        assert 1 <= len(tree) <= tp.max_nodes
        assert max(tree.depths()) <= tp.depth
        kids = tree.children()
        assert all(len(k) <= tp.width for k in kids)
        assert tree.dag_nodes + tree.merged_nodes <= len(tree)
        if temperature:
            tree.validate(tiny_draft.config.vocab_size, sampled=True)
            for node in range(ROOT, len(tree)):
                drawn = []
                for child in kids[node + 1]:
                    assert without(tree.proposal_of(node), drawn).prob_of(tree.tokens[child]) > 0
                    drawn.append(tree.tokens[child])


def test_greedy_children_are_the_drafts_top_tokens(tiny_draft):
    ids = [10, 20, 30, 11]
    tree = draft_tree(ModelSession(tiny_draft), 0, ids, TreeParams(width=3, depth=1, sibling_threshold=0.0), GREEDY, 0)
    with torch.inference_mode():
        top = tiny_draft(torch.tensor([ids])).logits[0, -1].topk(3).indices.tolist()
    assert tree.tokens == top and tree.parents == [ROOT] * 3


def test_seeded_trees_are_reproducible(tiny_draft):
    params = SamplingParams(temperature=1.0)
    a = draft_tree(ModelSession(tiny_draft), 0, [4, 5, 6], TreeParams(), params, seed=11)
    b = draft_tree(ModelSession(tiny_draft), 0, [4, 5, 6], TreeParams(), params, seed=11)
    c = draft_tree(ModelSession(tiny_draft), 0, [4, 5, 6], TreeParams(), params, seed=12)
    assert (a.tokens, a.parents) == (b.tokens, b.parents)
    assert (a.tokens, a.parents) != (c.tokens, c.parents)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("merge_context", [0, 1])
def test_the_drafter_links_exactly_what_gsds_rule_finds(tiny_draft, temperature, merge_context):
    """An independent re-implementation of GSD's check_repetition (tests/helpers/gsd_merges.py),
    applied to the unrolled tree, counts the links the drafter made: no more, no fewer."""
    params = SamplingParams(temperature=temperature)
    shape = TreeParams(width=4, depth=6, max_nodes=48, sibling_threshold=0.0, prob_threshold=0.0,
                       merge_context=merge_context)
    found = 0
    for seed, ids in enumerate([[5, 6, 5, 6, 5], [9, 9, 9], [3, 40, 41, 42, 3, 40]]):
        tree = draft_tree(ModelSession(tiny_draft), 0, ids, shape, params, seed=seed)
        assert tree.merged_nodes == reference_links(tree.tokens, tree.parents, ids, merge_context)
        assert tree.dag_nodes + tree.merged_nodes == len(tree)
        found += tree.merged_nodes
    assert found > 0  # the check is not vacuous: these shapes do merge
