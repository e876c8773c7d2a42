"""Mode gsd through Engine + orchestration: greedy equality with the target alone (also when
EOS or max_new_tokens falls inside a tree), stats, per-request tree parameters."""

import pytest

from specdec import Engine
from specdec.core.request import FinishReason

PROMPTS = [
    "def fib(n):",
    "the quick brown fox",
    "1 + 1 = 2, 2 + 2 =",
    "x",
    "summarise: speculative decoding drafts tokens with a small model and verifies them.",
    "(((",
]
TREES = [
    {},  # the defaults
    dict(tree_width=2, tree_depth=3, merge_context=-1),
    dict(tree_width=4, tree_depth=6, tree_nodes=12, sibling_threshold=0.0, prob_threshold=0.0, merge_context=1),
    dict(tree_width=1, tree_depth=5, prob_threshold=0.0),  # a chain
]


@pytest.fixture(scope="module")
def engine():
    return Engine.from_preset("tiny", seed=0)


@pytest.fixture(scope="module")
def baseline(engine):
    cache = {}

    def get(prompt, n):
        if (prompt, n) not in cache:
            cache[prompt, n] = engine.generate(prompt, max_new_tokens=n, mode="autoregressive", ignore_eos=True)
        return cache[prompt, n]

    return get


@pytest.mark.parametrize("tree", TREES, ids=["default", "narrow", "wide-merging", "chain"])
def test_greedy_output_equals_the_target_alone(engine, baseline, tree):
    for prompt, n in zip(PROMPTS, [1, 2, 7, 33, 48, 64]):
        out = engine.generate(prompt, max_new_tokens=n, mode="gsd", ignore_eos=True, **tree)
        assert out.token_ids == baseline(prompt, n).token_ids, (prompt, n)
        assert out.finish_reason is FinishReason.LENGTH


def test_eos_inside_a_tree_stops_exactly_where_the_target_would(engine, baseline):
    reference = baseline("the quick brown fox", 40).token_ids
    for cut in (3, 10, 17):
        eos = reference[cut]
        first = reference.index(eos)
        stop_engine = Engine(engine.draft, engine.target, engine.tokenizer, eos_token_ids=[eos])
        out = stop_engine.generate("the quick brown fox", max_new_tokens=40, mode="gsd", prob_threshold=0.0)
        assert out.token_ids == reference[: first + 1]
        assert out.finish_reason is FinishReason.STOP


def test_max_new_tokens_inside_a_tree(engine, baseline):
    for n in range(1, 12):
        out = engine.generate("def fib(n):", max_new_tokens=n, mode="gsd", ignore_eos=True, prob_threshold=0.0)
        assert out.token_ids == baseline("def fib(n):", n).token_ids


def test_stats_add_up(engine):
    s = engine.generate("the quick brown fox", max_new_tokens=40, mode="gsd", ignore_eos=True, tree_nodes=20).stats
    assert s.rounds > 0 and 0 < s.tree_nodes <= 20 * s.rounds
    assert s.draft_tokens == s.tree_nodes and s.accepted_tokens <= s.tree_nodes
    assert s.emitted_tokens == s.accepted_tokens + s.rounds  # every round emits accepted + 1
    assert s.dag_nodes + s.merged_nodes <= s.tree_nodes
    assert s.mean_acceptance_length > 1.0
    assert s.wall_s >= s.critical_compute_s > 0 and s.draft_compute_s > 0 and s.target_compute_s > 0
    assert {"tree_nodes", "dag_nodes", "merged_nodes"} <= s.as_dict().keys()


def test_trees_beat_a_chain_of_the_same_depth(engine):
    """More than one hypothesis per position: longer accepted paths than a chain (greedy)."""
    tau = {}
    for name, tree in [("chain", dict(tree_width=1, prob_threshold=0.0)), ("tree", {})]:
        stats = [engine.generate(p, max_new_tokens=48, mode="gsd", ignore_eos=True, **tree).stats for p in PROMPTS[:3]]
        tau[name] = sum(s.emitted_tokens for s in stats) / sum(s.rounds for s in stats)
    assert tau["tree"] > tau["chain"]


def test_seeded_sampling_is_reproducible(engine):
    runs = {
        tuple(engine.generate("abc", max_new_tokens=20, mode="gsd", temperature=1.0, seed=7, ignore_eos=True).token_ids)
        for _ in range(2)
    }
    assert len(runs) == 1


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(tree_width=0), "tree_width"),
        (dict(tree_depth=100), "tree_depth"),
        (dict(tree_nodes=0), "tree_nodes"),
        (dict(sibling_threshold=1.5), "sibling_threshold"),
        (dict(prob_threshold=-0.5), "prob_threshold"),
        (dict(merge_context=-2), "merge_context"),
    ],
)
def test_bad_tree_parameters_are_a_value_error_naming_the_field(engine, kwargs, field):
    with pytest.raises(ValueError, match=field):
        engine.generate("hello", mode="gsd", **kwargs)


def test_gsd_needs_a_draft(engine):
    target_only = Engine(None, engine.target, engine.tokenizer)
    with pytest.raises(ValueError, match="needs a draft"):
        target_only.generate("hello", mode="gsd")


def test_context_full_finishes_with_length(engine):
    prompt = [5] * (engine.context_length - 3)
    out = engine.generate(prompt, max_new_tokens=50, mode="gsd", ignore_eos=True, prob_threshold=0.0)
    assert len(out.token_ids) == 3 and out.finish_reason is FinishReason.LENGTH
