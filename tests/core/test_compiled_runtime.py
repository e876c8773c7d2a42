"""specdec/runtime/compiled.py: under `runtime=compiled` every mode and policy still gives the
target alone's greedy tokens (the tiny pair, float32), merged batches compute what each
session computes alone, and the option switches on and off cleanly. No speed is asserted
(BENCHMARKS.md §13 has the measurement)."""

from __future__ import annotations

import pytest
import torch

from specdec import Engine
from specdec.bench.equality import CASES
from specdec.runtime.batching import BatchItem, batched_forward
from specdec.runtime.compiled import Runtime, apply_runtime, parse_runtime, remove_runtime, runtime_of
from specdec.runtime.session import ModelSession
from tests.helpers.reference import target_alone

PROMPTS = ["def fib(n):", "the quick brown fox", "(((", "summarise: speculative decoding drafts tokens."]
N = 24


@pytest.fixture(scope="module")
def eager(tiny_head_dir):
    return Engine.from_preset("tiny", seed=0, acceptance_head=tiny_head_dir)


@pytest.fixture(scope="module")
def compiled(tiny_head_dir):
    engine = Engine.from_preset("tiny", seed=0, acceptance_head=tiny_head_dir, runtime="compiled")
    yield engine
    for model in (engine.draft, engine.target):
        remove_runtime(model)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_compiled_target_alone_equals_the_eager_one(eager, compiled):
    assert runtime_of(compiled.target) == "compiled" and runtime_of(eager.target) == "eager"
    for prompt in PROMPTS:
        out = compiled.generate(prompt, mode="autoregressive", max_new_tokens=N, ignore_eos=True)
        assert out.token_ids == target_alone(eager, prompt, N).token_ids, prompt


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_mode_and_policy_compiled_equals_the_target_alone(eager, compiled, case):
    for prompt in PROMPTS:
        out = compiled.generate(prompt, mode=case.mode, policy=case.policy, draft_length=case.k,
                                max_new_tokens=N, ignore_eos=True)
        assert out.token_ids == target_alone(eager, prompt, N).token_ids, (case.name, prompt)


def test_a_merged_batch_compiled_computes_what_each_session_computes_alone(eager, compiled):
    """B sessions of different lengths in one padded forward (the --max-batch path): the
    compiled layers see the merged cache; each row matches the eager model's own forward."""
    prompts = [[5, 6, 7], list(range(3, 40)), list(range(10, 22))]
    steps = [[8], [41, 42], [23]]
    results = {}
    for name, model in (("eager", eager.target), ("compiled", compiled.target)):
        sessions = [ModelSession(model) for _ in prompts]
        for s, p in zip(sessions, prompts):
            s.forward(0, p)
        items = [BatchItem(s, step, len(step), False) for s, step in zip(sessions, steps)]
        results[name] = [r.logits for r in batched_forward(model, items)]
        # and the caches it handed back continue as they should
        results[name].append(sessions[1].append([43], 1).logits)
    for a, b in zip(results["eager"], results["compiled"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_the_runtime_switches_on_and_off():
    from specdec.models.presets import load_preset

    model = load_preset("tiny", seed=0, roles=("target",)).target
    layer = model.model.layers[0]
    assert "forward" not in layer.__dict__
    assert apply_runtime(model, "compiled") is model and "forward" in layer.__dict__
    wrapped = layer.__dict__["forward"]
    apply_runtime(model, Runtime.COMPILED)  # idempotent: not wrapped twice
    assert layer.__dict__["forward"] is wrapped
    remove_runtime(model)
    assert "forward" not in layer.__dict__ and runtime_of(model) == "eager"
    apply_runtime(model, "eager")  # eager on an eager model: nothing to do
    assert "forward" not in layer.__dict__


def test_bad_runtime_names_are_refused_where_they_are_given():
    from draft_worker.config import DraftWorkerConfig

    with pytest.raises(ValueError, match="runtime must be one of eager, compiled"):
        parse_runtime("fast")
    with pytest.raises(ValueError, match="runtime must be one of"):
        DraftWorkerConfig(preset="tiny", runtime="jit")
    with pytest.raises(ValueError, match="model.layers"):
        apply_runtime(torch.nn.Linear(2, 2), "compiled")
