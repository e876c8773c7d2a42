"""gsd/tree.py: TreeParams validation, DraftTree structure checks, draws without replacement."""

import pytest
import torch

from specdec.core.sampling import SparseDist
from specdec.core.tree import ROOT, DraftTree, TreeParams, branch, without


def test_defaults_are_valid():
    TreeParams().validate()


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(width=0), "tree_width"),
        (dict(width=17), "tree_width"),
        (dict(depth=0), "tree_depth"),
        (dict(max_nodes=0), "tree_nodes"),
        (dict(max_nodes=10**6), "tree_nodes"),
        (dict(sibling_threshold=-0.1), "sibling_threshold"),
        (dict(sibling_threshold=1.5), "sibling_threshold"),
        (dict(prob_threshold=2.0), "prob_threshold"),
        (dict(merge_context=-2), "merge_context"),
        (dict(width=2.5), "tree_width"),
    ],
)
def test_bad_params_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TreeParams(**kwargs).validate()


def small_tree():
    # root -> a(0), b(1); a -> c(2), d(3); c -> e(4)
    return DraftTree(tokens=[10, 11, 12, 13, 14], parents=[ROOT, ROOT, 0, 0, 2])


def test_children_and_depths():
    tree = small_tree()
    assert tree.children() == [[0, 1], [2, 3], [], [4], [], []]
    assert tree.depths() == [1, 1, 2, 2, 3]
    assert len(tree) == 5


def test_structure_is_checked():
    with pytest.raises(ValueError, match="parents must come before"):
        DraftTree(tokens=[1, 2], parents=[1, ROOT]).validate()
    with pytest.raises(ValueError, match="parents"):
        DraftTree(tokens=[1, 2], parents=[ROOT]).validate()
    with pytest.raises(ValueError, match="outside"):
        DraftTree(tokens=[1, 99], parents=[ROOT, 0]).validate(vocab_size=50)
    with pytest.raises(ValueError, match="proposal"):
        DraftTree(tokens=[1, 2], parents=[ROOT, ROOT], proposal_ids=[-1, -1]).validate(sampled=True)
    q = SparseDist(torch.tensor([1, 2]), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="repeated children"):
        DraftTree(tokens=[1, 1], parents=[ROOT, ROOT], proposals=[q], root_proposal=0, proposal_ids=[-1, -1]).validate(
            sampled=True
        )


def test_without_removes_and_renormalises():
    q = SparseDist(torch.tensor([4, 7, 9]), torch.tensor([0.5, 0.3, 0.2]))
    assert without(q, []) is q
    r = without(q, [7])
    assert r.token_ids.tolist() == [4, 9]
    assert torch.allclose(r.probs, torch.tensor([0.5, 0.2]) / 0.7)
    assert r.prob_of(7) == 0.0


def test_branches_never_collide_inside_a_tree():
    keys = {branch(node, i) for node in range(200) for i in range(16)}
    assert len(keys) == 200 * 16
