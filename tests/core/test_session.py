"""session.py: crop then extend gives the logits of a fresh prefill; state loss is detected."""

import pytest
import torch

from specdec.models.tiny import tiny_pair
from specdec.runtime.session import ModelSession, SessionStateLost, common_prefix


@pytest.fixture(scope="module")
def target():
    return tiny_pair(0)[1]


def fresh_logits(model, tokens):
    with torch.inference_mode():
        return model(torch.tensor([tokens])).logits[0]


def test_crop_then_extend_matches_a_fresh_prefill(target):
    s = ModelSession(target)
    seq = [5, 9, 12, 3, 40, 41, 7, 8]
    s.forward(0, seq + [11, 12, 13], n_logits=1)  # a draft that will be rejected
    out = s.forward(0, seq + [20, 21], n_logits=3)  # implicit rollback to seq, then extend
    assert out.new_tokens == 3  # the last committed token is re-run for its logits
    assert torch.allclose(out.logits, fresh_logits(target, seq + [20, 21])[-3:], atol=1e-5)
    s.crop(4)
    out = s.append([1, 2], n_logits=2)
    assert s.tokens == seq[:4] + [1, 2]
    assert torch.allclose(out.logits, fresh_logits(target, seq[:4] + [1, 2])[-2:], atol=1e-5)


def test_prefix_is_not_recomputed(target):
    s = ModelSession(target)
    s.forward(0, list(range(3, 30)), n_logits=1)
    assert s.forward(0, list(range(3, 31)), n_logits=1).new_tokens == 1
    # the same sequence again: the last position is re-run to produce its logits
    assert s.forward(0, list(range(3, 31)), n_logits=1).new_tokens == 1
    # start + delta addressing: only the missing tokens cross the interface
    assert s.forward(28, [31, 32], n_logits=2).new_tokens == 2
    assert s.tokens == list(range(3, 31)) + [31, 32]


def test_a_caller_assuming_lost_state_is_told(target):
    s = ModelSession(target)
    with pytest.raises(SessionStateLost):
        s.forward(5, [1, 2], n_logits=1)


def test_hidden_states_come_with_the_logits(target):
    out = ModelSession(target).forward(0, [4, 5, 6], n_logits=2, want_hidden=True)
    assert out.hidden.shape == (2, target.config.hidden_size)


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
