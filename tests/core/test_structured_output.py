"""Structured output stays lossless: with a response_format, greedy output equals the
constrained target alone (tests/helpers/constrained.py: full forwards, a matcher that
never rolls back) in every mode; every finished output conforms; sampled tokens follow
the constrained target's distribution exactly (chi-square), and a verifier that ignores
the constraint fails the same check.

The tiny pair (69 characters) drafts under the same mask the target verifies with.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest
import torch
import xgrammar as xgr

from specdec import Engine
from specdec.core.constraint import ConstraintKind, OutputConstraint, parse_response_format
from specdec.core.sampling import SamplingParams, entropy
from specdec.grammar import GrammarCompiler, Guide, check_constraint
from tests.helpers.constrained import FORMATS, compiled_for, conforms, constrained_target_alone
from tests.helpers.stats import chi_square_pvalue

MESSAGES = [{"role": "system", "content": "answer in json"}, {"role": "user", "content": "a thing, please"}]
MAX_NEW = 64
RUNS = [
    ("autoregressive", {}),
    ("sequential", dict(policy="fixed", draft_length=4)),
    ("sequential", dict(policy="adaedl")),
    ("sequential", dict(policy="auto")),
    ("pearl", dict(policy="fixed", draft_length=3)),
    ("gsd", {}),
    ("gsd", dict(merge_context=0, tree_width=3)),  # merged DAG nodes: rows computed on another path
]


@pytest.fixture(scope="module")
def engine():
    return Engine.from_preset("tiny", seed=0)


@pytest.fixture(scope="module")
def references(engine):
    ids = engine.encode(MESSAGES)
    return {
        kind: constrained_target_alone(engine, ids, parse_response_format(fmt).at(len(ids)), MAX_NEW)
        for kind, fmt in FORMATS.items()
    }


@pytest.mark.parametrize("kind", list(FORMATS))
@pytest.mark.parametrize("mode,extra", RUNS, ids=[f"{m}-{e.get('policy', e.get('merge_context', ''))}" for m, e in RUNS])
def test_greedy_output_equals_the_constrained_target_alone(engine, references, kind, mode, extra):
    out = engine.generate(MESSAGES, mode=mode, max_new_tokens=MAX_NEW, response_format=FORMATS[kind], **extra)
    assert out.token_ids == references[kind]
    if out.finish_reason.value == "stop":
        assert conforms(kind, out.text), out.text


def test_the_references_really_constrain(engine, references):
    """Without the constraint the target writes something else; with it, the finished
    documents conform (json_object runs to the length limit in a random model's key)."""
    free = engine.generate(MESSAGES, mode="autoregressive", max_new_tokens=MAX_NEW).token_ids
    for kind, ids in references.items():
        assert ids != free
        text = engine.tokenizer.decode(ids, skip_special_tokens=True)
        if ids[-1] in engine.eos_token_ids:
            assert conforms(kind, text), (kind, text)
    assert sum(ids[-1] in engine.eos_token_ids for ids in references.values()) >= 3


@pytest.mark.parametrize("mode", ["sequential", "pearl", "gsd"])
def test_sampled_outputs_conform(engine, mode):
    finished = 0
    for seed in range(6):
        for kind in ("json_schema", "regex", "grammar"):
            out = engine.generate(
                MESSAGES, mode=mode, max_new_tokens=MAX_NEW, temperature=1.0, top_p=0.95, seed=seed,
                response_format=FORMATS[kind],
            )
            if out.finish_reason.value == "stop":
                finished += 1
                assert conforms(kind, out.text), (kind, out.text)
    assert finished >= 12, f"only {finished} of 18 sampled documents finished within {MAX_NEW} tokens"


# -- the constrained distribution (chi-square) ------------------------------------------

CHI_REGEX = r"[a-h]{2}"  # both tokens drawn from 8 of 69 characters
N = 1200


def _exact_constrained(engine, prompt_ids, params: SamplingParams) -> dict:
    """{(x1, x2): p} of the target sampling alone under CHI_REGEX: the mask (a..h) before
    temperature, computed straight from the model (no xgrammar)."""
    allowed = torch.tensor(engine.tokenizer.convert_tokens_to_ids(list("abcdefgh")))
    with torch.inference_mode():
        first = engine.target(torch.tensor([prompt_ids])).logits[0, -1].float()
        batch = torch.tensor([prompt_ids + [x] for x in allowed.tolist()])
        second = engine.target(batch).logits[:, -1].float()

    def probs(row):
        masked = torch.full_like(row, float("-inf"))
        masked[..., allowed] = row[..., allowed]
        return (masked / params.temperature).softmax(-1)

    p1, p2 = probs(first), probs(second)
    return {(a, b): float(p1[a] * p2[i, b]) for i, a in enumerate(allowed.tolist()) for b in allowed.tolist()}


def _sample(engine, prompt_ids, n, **kwargs):
    async def run():
        return [
            await engine.agenerate(prompt_ids, max_new_tokens=3, seed=seed, temperature=1.0,
                                   response_format={"type": "regex", "regex": CHI_REGEX}, **kwargs)
            for seed in range(n)
        ]

    results = asyncio.run(run())
    drafted = sum(r.stats.draft_tokens for r in results)
    return [tuple(r.token_ids[:2]) for r in results], sum(r.stats.accepted_tokens for r in results) / drafted


@pytest.mark.parametrize("mode", ["sequential", pytest.param("pearl", marks=pytest.mark.full)])
def test_constrained_sampled_tokens_follow_the_constrained_target(engine, mode):
    prompt_ids = engine.encode("the cat sat")
    expected = _exact_constrained(engine, prompt_ids, SamplingParams(temperature=1.0))
    pairs, acceptance = _sample(engine, prompt_ids, N, mode=mode, policy="fixed", draft_length=2)
    assert 0.2 < acceptance < 0.97, f"the draft must really get rejected (acceptance {acceptance:.2f})"
    joint = chi_square_pvalue(pairs, expected)
    first = chi_square_pvalue([p[0] for p in pairs], _marginal(expected, 0))
    second = chi_square_pvalue([p[1] for p in pairs], _marginal(expected, 1))
    assert min(joint, first, second) > 1e-3, (joint, first, second)


def test_workers_that_drop_the_constraint_fail_the_same_check(engine, monkeypatch):
    """Negative control: the constraint accepted but silently not applied by the workers
    (LMDeploy #4551). (A draft masked while its target is not cannot even run: the draft's
    guide refuses the committed token that breaks the grammar.)"""
    import specdec.backend.local as local

    monkeypatch.setattr(local, "_guide", lambda session, grammar, params: None)
    prompt_ids = engine.encode("the cat sat")
    expected = _exact_constrained(engine, prompt_ids, SamplingParams(temperature=1.0))
    pairs, _ = _sample(engine, prompt_ids, 300, mode="sequential", policy="fixed", draft_length=2)
    assert chi_square_pvalue(pairs, expected) < 1e-6


def _marginal(joint: dict, i: int) -> dict:
    out: dict = {}
    for outcome, p in joint.items():
        out[outcome[i]] = out.get(outcome[i], 0.0) + p
    return out


# -- the guide on its own ------------------------------------------------------------------


def test_the_guide_rolls_back_like_the_cache(engine, references):
    """Syncing to random prefixes and branches gives the same mask as a fresh matcher fed
    that prefix: rollback (any depth), re-accept, temporary branches, past the end."""
    constraint = parse_response_format(FORMATS["json_schema"]).at(5)
    compiler = GrammarCompiler(engine.tokenizer, engine.vocab_size, engine.eos_token_ids)
    guide = Guide(compiler.compile(constraint), constraint, engine.vocab_size)
    doc = references["json_schema"]
    prompt = [3] * constraint.start
    rng = random.Random(0)

    def fresh_row(tokens):
        matcher = xgr.GrammarMatcher(compiled_for(engine, constraint))
        for t in tokens:
            assert matcher.accept_token(t)
        logits = torch.zeros(1, engine.vocab_size)
        mask = xgr.allocate_token_bitmask(1, engine.vocab_size)
        matcher.fill_next_token_bitmask(mask)
        xgr.apply_token_bitmask_inplace(logits, mask)
        return logits[0]

    for _ in range(25):
        cut = rng.randrange(len(doc))
        ahead = rng.randrange(0, min(4, len(doc) - cut) + 1)
        rows = guide.mask_chain(torch.zeros(ahead + 1, engine.vocab_size), prompt + doc[:cut], doc[cut : cut + ahead])
        for j in range(ahead + 1):
            assert torch.equal(rows[j], fresh_row(doc[: cut + j])), (cut, j)
        paths = [doc[cut : cut + d] for d in range(ahead + 1)]
        tree_rows = guide.mask_paths(torch.zeros(len(paths), engine.vocab_size), prompt + doc[:cut], paths)
        assert torch.equal(tree_rows, rows)
    # past the end: after EOS only EOS stays allowed, and rolling back before it works
    assert doc[-1] in engine.eos_token_ids
    end = guide.mask_chain(torch.zeros(1, engine.vocab_size), prompt + doc + [doc[-1], doc[-1]])
    assert torch.isfinite(end[0]).nonzero().flatten().tolist() == sorted(
        set(engine.eos_token_ids) & set(range(engine.vocab_size))
    ) or bool(torch.isfinite(end[0])[doc[-1]])
    again = guide.mask_chain(torch.zeros(1, engine.vocab_size), prompt + doc[:3])
    assert torch.equal(again[0], fresh_row(doc[:3]))


def test_a_path_that_breaks_the_grammar_is_left_unmasked(engine):
    constraint = OutputConstraint(ConstraintKind.REGEX, "[a-c]+", 1)
    compiler = GrammarCompiler(engine.tokenizer, engine.vocab_size, engine.eos_token_ids)
    guide = Guide(compiler.compile(constraint), constraint, engine.vocab_size)
    a, z = engine.tokenizer.convert_tokens_to_ids(["a", "z"])
    rows = guide.mask_paths(torch.zeros(3, engine.vocab_size), [7], [[], [z], [z, a]])
    assert int(torch.isfinite(rows[0]).sum()) == 3  # a, b, c
    assert bool(torch.isfinite(rows[1:]).all())  # never used: the target masks z out at the root
    chain = guide.mask_chain(torch.zeros(3, engine.vocab_size), [7], [a, z])
    assert int(torch.isfinite(chain[1]).sum()) >= 3 and bool(torch.isfinite(chain[2]).all())


def test_entropy_of_masked_logits_is_finite():
    logits = torch.tensor([1.0, float("-inf"), 0.5, float("-inf")])
    value = float(entropy(logits))
    assert value == pytest.approx(float(entropy(torch.tensor([1.0, 0.5]))))


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt,message",
    [
        ({"type": "json_schema", "json_schema": {"schema": {"type": "objekt"}}}, "invalid JSON schema"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, '"json_schema": {"name"'),
        ({"type": "regex", "regex": "(("}, "invalid regex"),
        ({"type": "grammar", "grammar": "root ::= "}, "invalid EBNF grammar"),
        ({"type": "xml"}, "type must be one of"),
        ("json", "must be an object"),
    ],
)
def test_a_bad_response_format_says_what_to_fix(engine, fmt, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("{", r"\{")):
        engine.generate("x", max_new_tokens=2, response_format=fmt)


def test_response_format_refuses_ignore_eos(engine):
    with pytest.raises(ValueError, match="ignore_eos"):
        engine.generate("x", max_new_tokens=2, ignore_eos=True, response_format={"type": "json_object"})


def test_check_constraint_accepts_every_example_format():
    for fmt in FORMATS.values():
        check_constraint(parse_response_format(fmt))
    assert parse_response_format({"type": "text"}) is None
    schema = parse_response_format(FORMATS["json_schema"])
    assert list(json.loads(schema.spec)["properties"]) == ["name", "ok", "size"]  # order kept: the output follows it


def test_messages_use_the_chat_template(engine):
    ids = engine.encode(MESSAGES)
    text = engine.tokenizer.decode(ids)
    assert text == "system: answer in json\nuser: a thing, please\nassistant: "
    with pytest.raises(ValueError, match="role must be one of"):
        engine.encode([{"role": "robot", "content": "hi"}])
