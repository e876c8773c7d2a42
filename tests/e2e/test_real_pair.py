"""The real Qwen2.5-Coder 0.5B -> 1.5B pair: greedy equality in every mode (make test-slow).

Slow (minutes on a 2-core CPU) and needs `specdec models fetch` first, which
`make test-slow` runs. fp32, so the comparison is not blurred by bf16 rounding; and in
bf16 (how the demo serves), equal up to near ties of the target's best two logits.
"""

import pytest

from tests.helpers.reference import assert_equal_or_bf16_tie, target_alone

pytestmark = pytest.mark.slow

PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "Explain in two sentences what a hash map is.",
]


@pytest.fixture(scope="module")
def engine():
    from specdec import Engine

    return Engine.from_preset("qwen-coder", dtype="float32")


@pytest.fixture(scope="module")
def reference(engine):
    return {p: engine.generate(p, chat=True, max_new_tokens=32, mode="autoregressive").token_ids for p in PROMPTS}


def test_the_pair_fits_together(engine):
    assert engine.draft.config.vocab_size == engine.target.config.vocab_size == 151936


@pytest.mark.parametrize(
    "mode,policy", [("sequential", "fixed"), ("sequential", "adaedl"), ("pearl", "adaedl"), ("gsd", "fixed")]
)
def test_greedy_output_equals_the_target_alone(engine, reference, mode, policy):
    for prompt in PROMPTS:
        out = engine.generate(prompt, chat=True, max_new_tokens=32, mode=mode, policy=policy, draft_length=4)
        assert out.token_ids == reference[prompt]
        assert out.stats.accepted_tokens > 0  # the real draft really agrees with the target


BF16_TOKENS = 24


@pytest.fixture(scope="module")
def bf16_engine():
    from specdec import Engine

    return Engine.from_preset("qwen-coder", dtype="bfloat16")


@pytest.mark.parametrize(
    "mode,policy", [("sequential", "fixed"), ("sequential", "adaedl"), ("pearl", "adaedl"), ("gsd", "fixed"),
                    ("auto", "auto")]
)
def test_bfloat16_greedy_output_equals_the_target_alone_up_to_near_ties(bf16_engine, mode, policy):
    """bf16 rounds the same logits differently along the target alone's and speculation's
    paths: outputs may part only where the target's best two logits nearly tie
    (tests/helpers/reference.py); a difference anywhere else fails."""
    for prompt in PROMPTS:
        reference = target_alone(bf16_engine, prompt, BF16_TOKENS, chat=True).token_ids
        out = bf16_engine.generate(prompt, chat=True, max_new_tokens=BF16_TOKENS, mode=mode, policy=policy,
                                   draft_length=4, ignore_eos=True)
        tie = assert_equal_or_bf16_tie(bf16_engine.target, bf16_engine.encode(prompt, chat=True), reference,
                                       out.token_ids)
        print(f"\nbf16 {mode} {policy}, {prompt[:30]!r}: {tie or 'equal'}")
        if mode != "auto":  # auto may rightly run the target alone (k = 0) where drafting does not pay
            assert out.stats.accepted_tokens > 0  # the real draft really agrees with the target


def test_gsd_merges_on_real_text_are_what_gsds_rule_finds(engine):
    """Real drafts, default tree: every link the drafter makes is one GSD's check_repetition
    makes on the same tree, and on the same committed text with merging off, that rule finds
    at least what the same-depth rule shipped before found (the figures: scripts/gsd_merge_rate.py,
    BENCHMARKS.md)."""
    import dataclasses

    from specdec.core.sampling import SamplingParams
    from specdec.core.tree import TreeParams
    from specdec.gsd.drafting import draft_tree
    from specdec.gsd.verifying import verify_draft_tree
    from specdec.runtime.session import ModelSession
    from tests.helpers.gsd_merges import reference_links, same_depth_links

    tree, greedy = TreeParams(), SamplingParams()
    plain_shape = dataclasses.replace(tree, merge_context=-1)
    ours = theirs = old = 0
    for prompt in PROMPTS:
        ids = engine.encode(prompt, chat=True)
        draft, target, out = ModelSession(engine.draft), ModelSession(engine.target), []
        while len(out) < 16:
            seq = ids + out
            merged = draft_tree(draft, 0, seq, tree, greedy, seed=0)
            assert merged.merged_nodes == reference_links(merged.tokens, merged.parents, seq, tree.merge_context)
            plain = draft_tree(draft, 0, seq, plain_shape, greedy, seed=0)
            ours += merged.merged_nodes
            theirs += reference_links(plain.tokens, plain.parents, seq, tree.merge_context)
            old += same_depth_links(plain.tokens, plain.parents, seq, 2)
            verdict = verify_draft_tree(target, 0, seq, merged, greedy, seed=0).verdict
            out += list(verdict.tokens) + [verdict.next_token]
        alone = engine.generate(prompt, chat=True, max_new_tokens=16, mode="autoregressive", ignore_eos=True)
        assert out[:16] == alone.token_ids
    print(f"\nGSD merges on real text: drafter {ours}, GSD's rule on merge-off drafts {theirs}, old rule {old}")
    assert theirs >= old
