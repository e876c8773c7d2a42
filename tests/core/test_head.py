"""head.py + policy specdecpp end to end: the head's contract, its files, refusing a head
for another draft, greedy equality and the target's exact distribution with the head
deciding the draft length."""

import copy
import json
import logging

import pytest
import torch

from specdec import Engine
from specdec.core.sampling import SamplingParams
from specdec.specdecpp.head import AcceptanceHead, head_meta, load_head
from specdec.specdecpp.train import TrainConfig, train
from tests.helpers.distributions import (
    PROMPT,
    exact_two_token_distribution,
    sample_pairs,
)
from tests.helpers.stats import chi_square_pvalue

N = 1500
# The head is trained with the reject class weighted 6x, so its P(accept) is pessimistic
# (0.1-0.5 on the tiny pair): 0.9 makes the tiny pair's rounds stop at 2 or 3 tokens.
THRESHOLD = 0.9


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("head")
    train(TrainConfig(preset="tiny", out=out, limit=16, max_new_tokens=24, epochs=10, dtype="float32",
                      progress=False))
    return out


@pytest.fixture(scope="module")
def engine(head_dir):
    return Engine.from_preset("tiny", seed=0, acceptance_head=head_dir)


def test_call_gives_a_float_and_forward_gives_logits():
    head = AcceptanceHead(64)
    hidden = torch.randn(5, 64)
    logits = head(hidden)
    assert logits.shape == (5, 2) and logits.dtype == torch.float32
    p = head(hidden[2])
    assert isinstance(p, float) and 0.0 < p < 1.0
    assert p == pytest.approx(float(logits.detach().softmax(-1)[2, 1]), abs=1e-6)
    assert head(hidden.to(torch.bfloat16)).dtype == torch.float32  # fp32 whatever the draft's dtype


def test_the_residual_blocks_are_distinct():
    head = AcceptanceHead(16, num_layers=3)
    weights = [block.linear.weight for block in head.blocks]
    assert len(weights) == 3 and len({w.data_ptr() for w in weights}) == 3
    assert sum(p.numel() for p in head.parameters()) == 3 * (16 * 16 + 16) + 16 * 2 + 2  # buffers aside


def test_save_and_load_give_identical_outputs(engine, head_dir, tmp_path):
    head = engine.draft_endpoint.head
    head.save(tmp_path / "copy")
    again = load_head(tmp_path / "copy", engine.draft)
    hidden = torch.randn(32, 64)
    assert torch.equal(head(hidden), again(hidden))
    meta = json.loads((head_dir / "head.json").read_text())
    assert meta["draft_model"] == "tiny" and meta["hidden_size"] == 64 and meta["num_layers"] == 3
    assert meta["draft_dtype"] == "float32" and meta["training"]["label"] == "sampled"
    assert {"val_loss", "calibration", "ece"} <= set(meta["eval"])


def test_a_head_for_another_draft_is_refused(engine, tmp_path):
    AcceptanceHead(32).save(tmp_path / "narrow", dict(head_meta(engine.draft), hidden_size=32))
    with pytest.raises(ValueError, match="hidden size 32, the draft tiny has 64"):
        load_head(tmp_path / "narrow", engine.draft)
    AcceptanceHead(64).save(tmp_path / "qwen", dict(head_meta(engine.draft), draft_model="qwen2.5-coder-0.5b-instruct"))
    with pytest.raises(ValueError, match="head was trained for qwen2.5-coder-0.5b-instruct, this draft is tiny: "
                                         "train one with `specdec train-head`"):
        load_head(tmp_path / "qwen", engine.draft)
    with pytest.raises(ValueError, match="train one with `specdec train-head`"):
        Engine(engine.draft, engine.target, engine.tokenizer, acceptance_head=tmp_path / "qwen")
    with pytest.raises(ValueError, match="no acceptance head"):
        load_head(tmp_path / "nothing-here", engine.draft)


def test_a_head_served_in_another_dtype_than_it_was_trained_in_is_loaded_with_a_warning(engine, head_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="specdec.specdecpp.head"):
        load_head(head_dir, engine.draft)
        assert not caplog.records
        load_head(head_dir, copy.deepcopy(engine.draft).to(torch.bfloat16))
    assert "trained on float32 hidden states of the draft, which runs in bfloat16" in caplog.text


def test_a_head_of_the_earlier_format_is_refused(engine, head_dir, tmp_path):
    """Format 1 heads read the state before the token: serving them now would feed them
    states they never saw."""
    AcceptanceHead(64).save(tmp_path / "old", head_meta(engine.draft))
    meta = json.loads((tmp_path / "old" / "head.json").read_text())
    (tmp_path / "old" / "head.json").write_text(json.dumps(dict(meta, format_version=1)))
    with pytest.raises(ValueError, match="retrain it with `specdec train-head`"):
        load_head(tmp_path / "old", engine.draft)


def test_specdecpp_without_a_head_says_how_to_get_one(engine):
    bare = Engine(engine.draft, engine.target, engine.tokenizer)
    with pytest.raises(ValueError, match="acceptance head"):
        bare.generate("abc", max_new_tokens=5, policy="specdecpp")


@pytest.mark.parametrize("mode", ["sequential", "pearl"])
def test_greedy_output_equals_the_target_alone(engine, mode):
    drafted = rounds = 0
    for prompt, n, threshold in [("def fib(n):", 7, 0.5), ("the quick brown fox", 40, THRESHOLD), ("x", 33, 0.97)]:
        reference = engine.generate(prompt, max_new_tokens=n, mode="autoregressive", ignore_eos=True).token_ids
        out = engine.generate(prompt, max_new_tokens=n, mode=mode, policy="specdecpp", draft_length=6,
                              threshold=threshold, ignore_eos=True)
        assert out.token_ids == reference, (prompt, threshold)
        drafted, rounds = drafted + out.stats.draft_tokens, rounds + out.stats.rounds
    if mode == "sequential":  # the head really decides: rounds stop between k_min = 2 and k_max = 6
        assert 2.0 < drafted / rounds < 6.0


@pytest.mark.full  # the tiny pair's real hidden states feed the head: no cheap fake for it
@pytest.mark.parametrize("mode", ["sequential", "pearl"])
def test_first_two_tokens_follow_the_target_distribution(engine, mode):
    prompt_ids = engine.encode(PROMPT)
    expected = exact_two_token_distribution(engine, prompt_ids, SamplingParams(temperature=1.0))
    pairs, acceptance = sample_pairs(engine, prompt_ids, N, mode=mode, policy="specdecpp", draft_length=3,
                                     threshold=THRESHOLD, temperature=1.0)
    assert 0.2 < acceptance < 0.95, f"the draft must really get rejected (acceptance {acceptance:.2f})"
    assert chi_square_pvalue(pairs, expected) > 1e-3
