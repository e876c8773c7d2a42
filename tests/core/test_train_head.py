"""train_head.py + head_data.py + `specdec train-head`: the features are exactly what the
drafter hands the head, labels are right, the loss falls, reruns reuse the cache."""

import json

import pytest
import torch
from typer.testing import CliRunner

from specdec.cli import app
from specdec.core.policies import StopRule
from specdec.core.sampling import SamplingParams
from specdec.models import load_preset
from specdec.runtime.drafting import draft_tokens
from specdec.runtime.session import ModelSession
from specdec.specdecpp.data import _labels, _teacher_forced, load_prompts
from specdec.specdecpp.train import (
    DEFAULT_PROMPTS,
    TrainConfig,
    train,
    unweight,
    unweight_inverse,
    weighted_soft_ce,
)


@pytest.fixture(scope="module")
def pair():
    return load_preset("tiny", seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = TrainConfig(preset="tiny", out=tmp_path_factory.mktemp("head"), limit=24, max_new_tokens=32, epochs=12,
                      dtype="float32", progress=False)
    return cfg, train(cfg)


def test_training_features_are_what_the_drafter_gives_the_head(pair):
    """The head must see at training time exactly the hidden state it sees when serving."""
    seen = []

    def recording_head(hidden):
        seen.append(hidden.clone())
        return 0.9

    prompt = pair.tokenizer("def fib(n):")["input_ids"]
    rule = StopRule(max_tokens=6)
    drafted = [d.token for d in draft_tokens(ModelSession(pair.draft), 0, prompt, rule, SamplingParams(), seed=0,
                                             head=recording_head)]
    hidden, logits = _teacher_forced(pair.draft, [prompt], [drafted], want_hidden=True)
    # x_1..x_5 are fed and scored; at the cap no forward feeds x_6, so the head never sees it
    assert len(drafted) == 6 and len(seen) == 5 and hidden[0].shape == (6, 64)
    torch.testing.assert_close(torch.stack(seen).float(), hidden[0][:5], atol=1e-4, rtol=1e-4)
    assert logits[0].argmax(-1).tolist() == drafted  # row t produced draft token t


def test_the_feature_of_a_token_is_the_draft_state_whose_input_is_that_token(pair):
    """Row t: the hidden state at z_t's own position (after z_t is fed); its logits row is
    the one z_t was drawn from (one position earlier). Two rows of different lengths, as
    the batch is right-padded."""
    prompts = [pair.tokenizer("def fib(n):")["input_ids"], pair.tokenizer("the fox")["input_ids"]]
    responses = [[10, 11, 12, 13], [20, 21]]
    hidden, logits = _teacher_forced(pair.draft, prompts, responses, want_hidden=True)
    for p, z, h, lg in zip(prompts, responses, hidden, logits):
        with torch.inference_mode():
            out = pair.draft(torch.tensor([p + z]), output_hidden_states=True)
        own = [len(p) + t for t in range(len(z))]
        torch.testing.assert_close(h, out.hidden_states[-1][0, own].float(), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(lg, out.logits[0, [i - 1 for i in own]].float(), atol=1e-4, rtol=1e-4)


def test_labels_on_constructed_distributions():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    q = torch.tensor([[0.25, 0.5, 0.25], [0.6, 0.2, 0.2]])
    labels = _labels(torch.tensor([1, 0]), p.log(), q.log())
    torch.testing.assert_close(labels["sampled"], torch.tensor([0.6, 1 / 6]))
    torch.testing.assert_close(labels["expected"], torch.tensor([0.25 + 0.3 + 0.2, 0.1 + 0.1 + 0.2]))
    torch.testing.assert_close(labels["greedy"], torch.tensor([0.0, 0.0]))


def test_the_weighted_loss_is_minimised_at_the_unweighted_transform():
    y = torch.tensor([0.7])
    best = unweight_inverse(y, 6.0)
    grid = torch.linspace(0.01, 0.99, 981)
    losses = [float(weighted_soft_ce(torch.stack([(1 - g).log(), g.log()])[None], y, 6.0)) for g in grid]
    assert float(grid[int(torch.tensor(losses).argmin())]) == pytest.approx(float(best), abs=2e-3)
    assert float(unweight(best, 6.0)) == pytest.approx(0.7, abs=1e-3)


def test_a_tiny_head_trains_and_its_loss_falls(trained):
    cfg, r = trained
    assert r.history[-1]["train_loss"] < 0.97 * r.history[0]["train_loss"]
    assert r.val_loss < r.initial_val_loss
    assert r.n_train > 0 and r.n_val > 0
    share = r.masked / (r.masked + r.n_train + r.n_val)
    assert 0.08 < share < 0.22  # about mix_prob = 0.15 of the positions swapped and masked
    assert sum(b.n for b in r.calibration) == r.n_val
    assert all(0 <= b.predicted <= 1 and 0 <= b.label <= 1 for b in r.calibration)
    for name in ("head.safetensors", "head.json", "calibration.md", "calibration.png"):
        assert (cfg.out / name).stat().st_size > 0
    assert "| predicted P(accept) |" in (cfg.out / "calibration.md").read_text()


def test_a_rerun_reuses_the_cache_and_gives_the_same_head(trained):
    cfg, first = trained
    lines = (cfg.out / "cache" / "responses.jsonl").read_text()
    again = train(cfg)
    assert (cfg.out / "cache" / "responses.jsonl").read_text() == lines
    assert again.seconds["responses"] + again.seconds["examples"] < 1.0
    assert again.val_loss == first.val_loss and again.n_train == first.n_train


def test_the_prompt_set_mixes_code_prose_and_maths():
    rows = [json.loads(line) for line in DEFAULT_PROMPTS.read_text().splitlines()]
    assert 40 <= len(rows) <= 80
    assert {r["kind"] for r in rows} == {"code", "prose", "maths"}
    assert load_prompts(DEFAULT_PROMPTS, limit=5) == [r["prompt"] for r in rows[:5]]


def test_training_defaults_match_serving():
    assert TrainConfig().label == "sampled"  # the paper's label: the head sees the token it scores
    assert TrainConfig().dtype == "float32"  # serving's default dtype (load_model, the workers)


def test_the_command(tmp_path):
    result = CliRunner().invoke(app, ["train-head", "--preset", "tiny", "--out", str(tmp_path), "--limit", "6",
                                      "--max-new-tokens", "12", "--epochs", "2", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "weighted CE" in result.output and (tmp_path / "head.json").exists()
    bad = CliRunner().invoke(app, ["train-head", "--preset", "tiny", "--out", str(tmp_path), "--label", "magic"])
    assert bad.exit_code == 2 and "label must be one of" in bad.output
