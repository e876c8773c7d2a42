"""The parts of scripts/gpu_check.sh, one process, no timing asserted: the real-size shapes,
the imposed-acceptance draft, the near-tie rule, the cost curve and its profile, the budget."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import torch

from specdec import Engine
from specdec.bench import cost_curve
from specdec.bench.budget import Budget
from specdec.bench.equality import near_tie
from specdec.bench.imposed_acceptance import CONFIDENT_LOGIT, ImposedAcceptance
from specdec.models.qwen_sizes import REAL_SIZES, qwen_size, random_qwen2
from specdec.models.tiny import tiny_tokenizer
from specdec.runtime.cost import CostProfile


def test_the_real_sizes_have_the_real_models_parameter_counts():
    # Qwen2.5-0.5B / 7B / 32B as published: 0.49B, 7.61B, 32.76B
    assert REAL_SIZES["0.5b"].parameters() == 494_032_768
    assert round(REAL_SIZES["7b"].parameters() / 1e9, 2) == 7.61
    assert round(REAL_SIZES["32b"].parameters() / 1e9, 2) == 32.76
    with pytest.raises(ValueError, match="size must be one of"):
        qwen_size("70b")


def test_a_random_stand_in_is_built_from_its_seed_in_its_dtype():
    size = qwen_size("7b", quick=True)
    a, b = (random_qwen2(size, "cpu", torch.bfloat16, seed=3) for _ in range(2))
    assert a.dtype == torch.bfloat16 and not any(p.requires_grad for p in a.parameters())
    assert sum(p.numel() for p in a.parameters()) == size.parameters()
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert a.config.num_hidden_layers == size.num_hidden_layers and a.config.vocab_size == size.vocab_size


@pytest.fixture(scope="module")
def stand_in_pair():
    draft = random_qwen2(qwen_size("0.5b", quick=True), "cpu", torch.float32, seed=1)
    target = random_qwen2(qwen_size("7b", quick=True), "cpu", torch.float32, seed=2)
    return draft, target


def test_the_imposed_coin_is_keyed_and_has_its_rate():
    imposed = ImposedAcceptance(0.78, seed=0)
    hits = [imposed.hit(i) for i in range(4000)]
    assert hits == [ImposedAcceptance(0.78, seed=0).hit(i) for i in range(4000)]
    assert abs(sum(hits) / len(hits) - 0.78) < 0.03
    script = list(range(100, 200))
    for i in range(100):  # a miss proposes another token, never the target's
        token = imposed.token_for(script, i, 8192)
        assert (token == script[i]) == imposed.hit(i) and 0 <= token < 8192
    assert imposed.token_for(script, 100, 8192) is None
    with pytest.raises(ValueError):
        ImposedAcceptance(1.5)


def test_an_imposed_draft_keeps_equality_and_gets_about_its_acceptance(stand_in_pair):
    draft, target = stand_in_pair
    imposed = ImposedAcceptance(0.78, seed=0)
    engine = Engine(imposed.install(draft), target, tiny_tokenizer())
    try:
        prompt = "def fib(n):"
        reference = engine.generate(prompt, mode="autoregressive", max_new_tokens=40, ignore_eos=True).token_ids
        out = engine.generate(prompt, mode="sequential", policy="fixed", draft_length=4, max_new_tokens=40,
                              ignore_eos=True)
        assert out.token_ids == reference
        assert imposed.stats()["rows_passed_through"] > 0
        imposed.add_script(engine.encode(prompt), reference)
        for mode in ("sequential", "pearl", "gsd"):
            out = engine.generate(prompt, mode=mode, policy="fixed", draft_length=4, max_new_tokens=40,
                                  ignore_eos=True)
            assert out.token_ids == reference, mode
            assert out.stats.acceptance_rate > 0.3, (mode, out.stats.acceptance_rate)
        seq = engine.generate(prompt, mode="sequential", policy="fixed", draft_length=4, max_new_tokens=40,
                              ignore_eos=True)
        assert 2.0 < seq.stats.mean_acceptance_length < 4.5  # i.i.d. 0.78, k = 4: 3.2 tokens per round expected
    finally:
        imposed.remove()
    assert "forward" not in draft.__dict__


def test_the_imposed_rows_are_confident_point_masses(stand_in_pair):
    draft, _ = stand_in_pair
    imposed = ImposedAcceptance(1.0, seed=0)
    imposed.add_script([5, 6, 7], [9, 10, 11])
    imposed.install(draft)
    try:
        from transformers import DynamicCache

        with torch.inference_mode():
            cache = DynamicCache()
            out = draft(torch.tensor([[5, 6, 7]]), cache=cache, use_cache=True, logits_to_keep=1)
            assert int(out.logits[0, -1].argmax()) == 9 and float(out.logits[0, -1].max()) == CONFIDENT_LOGIT
            out = draft(torch.tensor([[9, 10]]), cache=cache, use_cache=True, logits_to_keep=2)
            assert out.logits[0].argmax(-1).tolist() == [10, 11]
    finally:
        imposed.remove()


class _Fixed(torch.nn.Module):
    """A "target" whose last logits row is `row` (bf16), whatever the input."""

    def __init__(self, row):
        super().__init__()
        self.embed = torch.nn.Embedding(1, 1)
        self.row = torch.tensor(row, dtype=torch.bfloat16)

    dtype = torch.bfloat16

    def get_input_embeddings(self):
        return self.embed

    def forward(self, ids, logits_to_keep=1):
        return SimpleNamespace(logits=self.row[None, None])


def test_the_near_tie_rule(stand_in_pair):
    _, target = stand_in_pair
    assert near_tie(target, [5, 6], [1, 2], [1, 2]) == (True, "equal")
    with torch.inference_mode():
        row = target(torch.tensor([[5, 6, 1]])).logits[0, -1]
    worst = int(row.argmin())
    ok, note = near_tie(target, [5, 6], [1, int(row.argmax())], [1, worst])  # float32: steps of 2**-13
    assert not ok and "NOT a near tie" in note and "position 1" in note
    # bf16 at magnitude 8: one step is 2**-7 * 8 = 0.0625; 4 steps tolerated
    stub = _Fixed([8.0, 8.0 - 0.0625, 8.0 - 5 * 0.0625, 0.0])
    ok, note = near_tie(stub, [5], [7, 0], [7, 1])
    assert ok and "position 1" in note and "1.00 steps" in note and "a near tie" in note
    ok, note = near_tie(stub, [5], [7, 0], [7, 2])
    assert not ok and "5.00 steps" in note and "NOT a near tie" in note
    ok, _ = near_tie(stub, [5], [7, 0], [7])
    assert not ok  # a prefix is not a tie


def test_cost_curves_become_a_profile_the_emulated_regime_loads(tmp_path):
    from specdec.models.presets import load_preset

    model = load_preset("tiny", seed=0, roles=("target",)).target
    curve = cost_curve.measure(model, reps=1, context=8, tokens=(1, 2, 4), batches=(1, 3))
    assert set(curve["tokens"]["ms"]) == {"1", "2", "4"} and set(curve["batch"]["ms"]) == {"1", "3"}
    assert all(v > 0 for v in curve["tokens"]["ms"].values())
    known = {"tokens": {"ms": {"1": 10.0, "2": 10.5, "4": 12.0, "8": 14.0, "16": 30.0}}}
    assert cost_curve.flat_tokens(known["tokens"]["ms"]) == 4  # 14 > 1.25 x 10
    data = cost_curve.profile("measured-test", {"tokens": {"ms": {"1": 2.5}}}, known, "a test", device="cpu")
    assert (data["target_ms"], data["draft_ms"], data["flat_tokens"], data["roofline"]) == (10.0, 2.5, 4, True)
    path = tmp_path / "measured-test.json"
    path.write_text(json.dumps(data))
    profile = CostProfile.load(str(path))
    assert profile.budget("target").allowed(8) == pytest.approx(0.020)  # roofline past 4 tokens: 10 ms x 8 / 4
    assert profile.budget("draft", "qwen-coder").seconds == pytest.approx(0.25)


def test_the_budget_skips_fails_and_cuts_steps_without_stopping_the_run():
    budget = Budget(seconds=10.0)
    assert budget.run("fits", 1.0, lambda: "3 runs").status == "ok"
    assert budget.run("too long", 60.0, lambda: pytest.fail("must not run")).status == "skipped"
    assert "needs ~60 s" in budget.steps[-1].note
    assert budget.run("forced", 60.0, lambda: None, always=True).status == "ok"
    failed = budget.run("broken", 1.0, lambda: 1 / 0)
    assert failed.status == "failed" and failed.note.startswith("ZeroDivisionError")
    assert budget.run("partial", 1.0, lambda: "cut: 2 of 5").status == "cut"
    budget.started = time.monotonic() - 9.5
    assert not budget.enough(1.0) and budget.enough(0.1)
