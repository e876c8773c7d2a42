"""sampling.py: the same distribution Hugging Face's sampling would use; validation."""

import pytest
import torch
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from specdec.core.sampling import SamplingParams, entropy, logits_to_probs, truncate


def hf_probs(logits, temperature, top_k, top_p):
    scores = logits.clone().unsqueeze(0)
    ids = torch.zeros(1, 1, dtype=torch.long)
    scores = TemperatureLogitsWarper(temperature)(ids, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(ids, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(ids, scores)
    return scores.softmax(-1)[0]


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 0, 0.9), (1.3, 5, 1.0), (0.5, 10, 0.8)])
def test_matches_hugging_face_warpers(temperature, top_k, top_p):
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(100, generator=gen) * 3
        ours = logits_to_probs(logits, SamplingParams(temperature, top_k, top_p))
        assert torch.allclose(ours, hf_probs(logits, temperature, top_k, top_p), atol=1e-6)


def test_greedy_is_a_point_mass_on_the_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    probs = logits_to_probs(logits, SamplingParams(temperature=0.0))
    assert probs.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def test_top_p_keeps_the_top_token_even_when_it_alone_exceeds_p():
    probs = logits_to_probs(torch.tensor([10.0, 0.0, 0.0]), SamplingParams(1.0, 0, 0.1))
    assert probs.tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "params,field",
    [
        (SamplingParams(temperature=-0.1), "temperature"),
        (SamplingParams(temperature=float("nan")), "temperature"),
        (SamplingParams(top_k=-1), "top_k"),
        (SamplingParams(top_p=0.0), "top_p"),
        (SamplingParams(top_p=1.5), "top_p"),
    ],
)
def test_invalid_params_name_the_field(params, field):
    with pytest.raises(ValueError, match=field):
        params.validate()


def test_truncate_renormalises_the_top_n_and_drops_zeros():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    q = truncate(probs, 3)
    assert q.token_ids.tolist() == [0, 1, 2]
    assert torch.allclose(q.probs, torch.tensor([0.5, 0.3, 0.15]) / 0.95)
    assert truncate(probs, 0).token_ids.tolist() == [0, 1, 2, 3]
    assert q.prob_of(1) == pytest.approx(0.3 / 0.95) and q.prob_of(4) == 0.0
    assert torch.allclose(q.dense(5), torch.tensor([0.5, 0.3, 0.15, 0.0, 0.0]) / 0.95)


def test_entropy_is_untempered_and_in_nats():
    uniform = torch.zeros(8)
    assert float(entropy(uniform)) == pytest.approx(torch.log(torch.tensor(8.0)).item(), rel=1e-6)
    assert float(entropy(torch.tensor([100.0, 0.0, 0.0]))) == pytest.approx(0.0, abs=1e-6)
