"""engine.py + orchestration.py + pearl.py: greedy equality in every mode and policy (fp32,
and bf16 up to near ties), stopping inside a draft, bad inputs, streaming."""

import itertools
from types import SimpleNamespace

import pytest
import torch

from specdec import Engine
from specdec.core.request import FinishReason
from tests.helpers.reference import BF16_TIE_ULPS, assert_equal_or_bf16_tie, target_alone

PROMPTS = [
    "def fib(n):",
    "the quick brown fox",
    "1 + 1 = 2, 2 + 2 =",
    "x",
    "summarise: speculative decoding drafts tokens with a small model and verifies them.",
    "(((",
]
LENGTHS = [1, 2, 7, 33, 48, 64]
MODES = ["sequential", "pearl"]
POLICIES = [("fixed", 1), ("fixed", 3), ("fixed", 8), ("heuristic", 2), ("adaedl", 6), ("adaedl_late", 6), ("auto", 8)]


@pytest.fixture(scope="module")
def engine():
    return Engine.from_preset("tiny", seed=0)


@pytest.fixture(scope="module")
def baseline(engine):
    cache = {}

    def get(prompt, n, ignore_eos=True):
        key = (prompt, n, ignore_eos)
        if key not in cache:
            cache[key] = engine.generate(prompt, max_new_tokens=n, mode="autoregressive", ignore_eos=ignore_eos)
        return cache[key]

    return get


@pytest.mark.parametrize("mode,policy", [*itertools.product(MODES, POLICIES), ("auto", ("auto", 8))])
def test_greedy_output_equals_the_target_alone(engine, baseline, mode, policy):
    name, k = policy
    for prompt, n in zip(PROMPTS, LENGTHS):
        out = engine.generate(prompt, max_new_tokens=n, mode=mode, policy=name, draft_length=k, ignore_eos=True)
        assert out.token_ids == baseline(prompt, n).token_ids, (prompt, n)
        assert len(out.token_ids) == n and out.finish_reason is FinishReason.LENGTH


@pytest.fixture(scope="module")
def bf16_engine(tiny_head_dir):
    """The tiny pair in bfloat16, with the (fp32-trained) SpecDec++ head for policy specdecpp."""
    return Engine.from_preset("tiny", seed=0, dtype="bfloat16", acceptance_head=tiny_head_dir)


GSD_MERGING = dict(  # test_gsd_engine.py's "wide-merging" tree
    tree_width=4, tree_depth=6, tree_nodes=12, sibling_threshold=0.0, prob_threshold=0.0, merge_context=1
)
BF16_CASES = [
    *[(mode, name, k, {}) for mode in MODES for name, k in [*POLICIES, ("specdecpp", 6)]],
    ("auto", "auto", 8, {}),
    ("gsd", None, None, {}),
    ("gsd", None, None, GSD_MERGING),
]


@pytest.mark.parametrize(
    "mode,policy,k,tree", BF16_CASES,
    ids=[f"{m}-{p}{k}" if p else f"{m}-{'merging' if t else 'default'}" for m, p, k, t in BF16_CASES],
)
def test_bfloat16_greedy_output_equals_the_target_alone_up_to_near_ties(bf16_engine, mode, policy, k, tree):
    """In bf16 the target alone and speculation compute the same logits along different paths
    (rounded differently), so outputs may part where the target's best two logits nearly tie;
    anywhere else a difference fails (tests/helpers/reference.py says how near is a tie)."""
    ties = []
    for prompt, n in zip(PROMPTS, LENGTHS):
        reference = target_alone(bf16_engine, prompt, n).token_ids
        out = bf16_engine.generate(prompt, max_new_tokens=n, mode=mode, policy=policy, draft_length=k,
                                   ignore_eos=True, **tree)
        assert len(out.token_ids) == n and out.finish_reason is FinishReason.LENGTH
        tie = assert_equal_or_bf16_tie(bf16_engine.target, bf16_engine.encode(prompt), reference, out.token_ids)
        if tie:
            ties.append(f"{prompt!r}: {tie}")
    label = f"{mode} {policy}:{k}" if policy else f"{mode} {tree or 'default tree'}"
    print(f"\nbf16 {label}: {len(PROMPTS) - len(ties)}/{len(PROMPTS)} prompts equal", *ties, sep="\n  ")


def test_the_bf16_tie_check_flags_what_is_not_a_near_tie(bf16_engine):
    """Negative control: a stream that differs from the target alone by a token far below the
    best logit is a logic error; 1 bf16 step below the best is a tie, twice the tolerance is not."""
    prompt = "the quick brown fox"
    ids, reference = bf16_engine.encode(prompt), target_alone(bf16_engine, prompt, 33).token_ids
    with torch.inference_mode():
        row = bf16_engine.target(torch.tensor([ids + reference[:5]])).logits[0, -1]
    wrong = reference[:5] + [int(row.argmin())] + reference[6:]
    with pytest.raises(AssertionError, match=r"position 5: .* not a bf16 near tie"):
        assert_equal_or_bf16_tie(bf16_engine.target, ids, reference, wrong)
    assert assert_equal_or_bf16_tie(bf16_engine.target, ids, reference, list(reference)) is None

    def stub(steps_behind):  # best logit 8.0 (one step: 2**-7 * 8 = 1/16), token 1 `steps_behind` below it
        logits = torch.zeros(1, 1, 4)
        logits[0, 0, 0], logits[0, 0, 1] = 8.0, 8.0 - steps_behind / 16
        return lambda _ids: SimpleNamespace(logits=logits)

    assert "position 0" in assert_equal_or_bf16_tie(stub(1), [2], [0], [1])
    with pytest.raises(AssertionError, match="not a bf16 near tie"):
        assert_equal_or_bf16_tie(stub(2 * BF16_TIE_ULPS), [2], [0], [1])


def test_drafts_are_both_accepted_and_rejected(engine):
    stats = [engine.generate(p, max_new_tokens=48, policy="fixed", draft_length=4, ignore_eos=True).stats for p in PROMPTS]
    accepted = sum(s.accepted_tokens for s in stats) / sum(s.draft_tokens for s in stats)
    assert 0.2 < accepted < 0.95
    assert all(s.mean_acceptance_length >= 1.0 for s in stats)


@pytest.mark.parametrize("mode", ["autoregressive", *MODES])
def test_eos_inside_a_draft_stops_exactly_where_the_target_would(engine, baseline, mode):
    reference = baseline("the quick brown fox", 40).token_ids
    for cut in (3, 10, 17):
        eos = reference[cut]
        first = reference.index(eos)  # the target stops at the first occurrence
        stop_engine = Engine(engine.draft, engine.target, engine.tokenizer, eos_token_ids=[eos])
        out = stop_engine.generate("the quick brown fox", max_new_tokens=40, mode=mode, policy="fixed", draft_length=8)
        assert out.token_ids == reference[: first + 1]
        assert out.finish_reason is FinishReason.STOP


@pytest.mark.parametrize("mode", MODES)
def test_max_new_tokens_inside_a_draft(engine, baseline, mode):
    for n in range(1, 12):
        out = engine.generate("def fib(n):", max_new_tokens=n, mode=mode, policy="fixed", draft_length=8, ignore_eos=True)
        assert out.token_ids == baseline("def fib(n):", n).token_ids


def test_stats_add_up(engine):
    out = engine.generate("the quick brown fox", max_new_tokens=30, mode="sequential", policy="fixed", draft_length=4,
                          ignore_eos=True)
    s = out.stats
    assert s.rounds > 0 and s.draft_tokens <= 4 * s.rounds
    assert s.emitted_tokens == s.accepted_tokens + s.rounds  # every sequential round emits accepted + 1
    assert s.acceptance_rate == pytest.approx(s.accepted_tokens / s.draft_tokens)
    assert s.wall_s >= s.critical_compute_s > 0


def test_seeded_sampling_is_reproducible(engine):
    runs = {
        # a named mode and policy: auto's k follows measured timings, so it reproduces the distribution only
        tuple(engine.generate("abc", max_new_tokens=20, temperature=1.0, seed=7, ignore_eos=True, mode="sequential",
                              policy="adaedl").token_ids)
        for _ in range(3)
    }
    assert len(runs) == 1
    other = engine.generate("abc", max_new_tokens=20, temperature=1.0, seed=8, ignore_eos=True).token_ids
    assert tuple(other) not in runs


def test_unseeded_requests_report_the_seed_they_used(engine):
    fixed = dict(mode="sequential", policy="adaedl")  # auto's k follows timings: reproducible in distribution only
    out = engine.generate("abc", max_new_tokens=10, temperature=1.0, ignore_eos=True, **fixed)
    again = engine.generate("abc", max_new_tokens=10, temperature=1.0, seed=out.seed, ignore_eos=True, **fixed)
    assert again.token_ids == out.token_ids


def test_streaming_yields_the_same_text(engine):
    full = engine.generate("the quick brown fox", max_new_tokens=30, ignore_eos=True)
    deltas = list(engine.stream("the quick brown fox", max_new_tokens=30, ignore_eos=True))
    assert len(deltas) > 1 and "".join(deltas) == full.text
    seen = []
    engine.generate("the quick brown fox", max_new_tokens=30, ignore_eos=True, on_tokens=seen.extend)
    assert seen == full.token_ids


def test_prompt_token_ids_are_accepted(engine, baseline):
    ids = engine.encode("def fib(n):")
    assert engine.generate(ids, max_new_tokens=9, ignore_eos=True).token_ids == baseline("def fib(n):", 9).token_ids


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(prompt=""), "prompt"),
        (dict(prompt=[]), "prompt"),
        (dict(prompt=[10_000]), "prompt_token_ids"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=-5), "max_new_tokens"),
        (dict(max_new_tokens=10**9), "max_new_tokens"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.01), "top_p"),
        (dict(top_k=-2), "top_k"),
        (dict(mode="beam"), "mode"),
        (dict(policy="magic"), "policy"),
        (dict(draft_length=0), "draft_length"),
        (dict(seed=-1), "seed"),
        (dict(prompt="a" * 2000), "context"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_field(engine, kwargs, field):
    kwargs = {"prompt": "hello", **kwargs}
    prompt = kwargs.pop("prompt")
    with pytest.raises(ValueError, match=field):
        engine.generate(prompt, **kwargs)


def test_mismatched_vocabularies_are_refused():
    from transformers import Qwen2ForCausalLM

    from specdec.models.tiny import tiny_config, tiny_pair

    draft, target, tokenizer = tiny_pair(0)
    other = Qwen2ForCausalLM(tiny_config(32))
    with pytest.raises(ValueError, match="vocabularies differ"):
        Engine(other, target, tokenizer)


def test_context_full_finishes_with_length(engine):
    ctx = engine.context_length
    prompt = [5] * (ctx - 3)
    out = engine.generate(prompt, max_new_tokens=50, policy="fixed", draft_length=8, ignore_eos=True)
    assert len(out.token_ids) == 3 and out.finish_reason is FinishReason.LENGTH
