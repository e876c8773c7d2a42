"""The real Qwen2.5-Coder 0.5B -> 1.5B pair: greedy equality in every mode (make test-slow).

Slow (minutes on a 2-core CPU) and needs `specdec models fetch` first, which
`make test-slow` runs. fp32, so the comparison is not blurred by bf16 rounding.
"""

import pytest

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
