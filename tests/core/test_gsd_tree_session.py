"""gsd/tree_session.py: the tree mask and positions give every node the logits of a plain
forward over its own path; keeping a path leaves the cache of a fresh prefill."""

import copy

import pytest
import torch

from specdec.core.tree import ROOT
from specdec.gsd.tree_session import TREE_ROW, append_tree, forward_tree, keep_path
from specdec.models.tiny import tiny_pair
from specdec.runtime.session import ModelSession

PREFIX = [5, 9, 12, 3, 40, 41, 7]
# root -> 10, 11, 12; 10 -> 13, 14; 14 -> 15 -> 16; 11 -> 13 (same token, other path)
TOKENS = [10, 11, 12, 13, 14, 13, 15, 16]
PARENTS = [ROOT, ROOT, ROOT, 0, 0, 1, 4, 6]


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def target(request):
    model = copy.deepcopy(tiny_pair(0)[1])
    model.config._attn_implementation = request.param
    return model


def plain_logits(model, tokens):
    with torch.inference_mode():
        return model(torch.tensor([tokens])).logits[0, -1]


def path_of(node):
    path = []
    while node != ROOT:
        path.append(TOKENS[node])
        node = PARENTS[node]
    return path[::-1]


def test_one_tree_forward_equals_a_forward_per_path(target):
    s = ModelSession(target)
    s.forward(0, PREFIX[:3] + [60, 61], 1)  # a stale suffix to roll back
    out = forward_tree(s, 0, PREFIX, TOKENS, PARENTS)
    assert out.logits.shape[0] == len(TOKENS) + 1
    assert torch.allclose(out.logits[0], plain_logits(target, PREFIX), atol=1e-4)
    for i in range(len(TOKENS)):
        assert torch.allclose(out.logits[i + 1], plain_logits(target, PREFIX + path_of(i)), atol=1e-4), i
    assert s.tokens == PREFIX + [TREE_ROW] * len(TOKENS)
    assert s.cache.get_seq_length() == len(s.tokens)


def test_a_long_uncached_prefix_is_prefilled_first(target):
    prefix = [(7 * i) % 60 + 3 for i in range(50)]
    out = forward_tree(ModelSession(target), 0, prefix, TOKENS, PARENTS)
    assert torch.allclose(out.logits[0], plain_logits(target, prefix), atol=1e-4)
    assert torch.allclose(out.logits[-1], plain_logits(target, prefix + path_of(len(TOKENS) - 1)), atol=1e-4)


def test_level_by_level_forwards_see_their_cached_ancestors(target):
    """The draft's way: each level's nodes attend to tree rows cached by earlier levels."""
    s = ModelSession(target)
    s.forward(0, PREFIX, 1)
    L = len(PREFIX)
    level1 = append_tree(s, L, [10, 11], [1, 1], [[], []])
    row10, row11 = L, L + 1
    level2 = append_tree(s, L, [14, 13], [2, 2], [[row10], [row11]])
    level3 = append_tree(s, L, [15], [3], [[row10, L + 2]])
    assert torch.allclose(level1.logits[1], plain_logits(target, PREFIX + [11]), atol=1e-4)
    assert torch.allclose(level2.logits[0], plain_logits(target, PREFIX + [10, 14]), atol=1e-4)
    assert torch.allclose(level2.logits[1], plain_logits(target, PREFIX + [11, 13]), atol=1e-4)
    assert torch.allclose(level3.logits[0], plain_logits(target, PREFIX + [10, 14, 15]), atol=1e-4)
    s.crop(L)
    assert s.tokens == PREFIX and s.cache.get_seq_length() == L


@pytest.mark.parametrize("path", [[], [0], [1, 5], [0, 4, 6, 7]])
def test_keep_path_leaves_the_cache_of_a_fresh_prefill(target, path):
    s = ModelSession(target)
    forward_tree(s, 0, PREFIX, TOKENS, PARENTS)
    kept = [TOKENS[i] for i in path]
    keep_path(s, len(PREFIX), path, kept)
    assert s.tokens == PREFIX + kept and s.cache.get_seq_length() == len(s.tokens)
    out = s.forward(len(s.tokens), [20, 21], n_logits=2)  # continue from the cache
    assert out.new_tokens == 2
    fresh = ModelSession(target).forward(0, PREFIX + kept + [20, 21], n_logits=2)
    assert torch.allclose(out.logits, fresh.logits, atol=1e-4)


def test_flash_attention_is_refused():
    model = copy.deepcopy(tiny_pair(0)[1])
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation"):
        forward_tree(ModelSession(model), 0, PREFIX, TOKENS, PARENTS)
