"""acceptance.py: greedy verdicts, and the sampled verdict reproduces p exactly."""

import pytest
import torch

from specdec.core.acceptance import residual, verify_chain
from specdec.core.sampling import SamplingParams, SparseDist, truncate
from tests.helpers.stats import chi_square_pvalue

GREEDY = SamplingParams(temperature=0.0)
T1 = SamplingParams(temperature=1.0)


def onehot_logits(rows, vocab=6):
    out = torch.full((len(rows), vocab), -5.0)
    for i, t in enumerate(rows):
        out[i, t] = 5.0
    return out


def test_greedy_all_accepted_gives_the_bonus():
    v = verify_chain(onehot_logits([1, 2, 3, 4]), [1, 2, 3], None, GREEDY, seed=0, position=10)
    assert (v.accepted, v.next_token, v.all_accepted) == (3, 4, True)


def test_greedy_first_mismatch_gives_the_recovered_token():
    v = verify_chain(onehot_logits([1, 2, 3, 4]), [1, 5, 3], None, GREEDY, seed=0, position=10)
    assert (v.accepted, v.next_token, v.all_accepted) == (1, 2, False)


def test_no_draft_is_plain_decoding():
    v = verify_chain(onehot_logits([4]), [], None, GREEDY, seed=0, position=0)
    assert (v.accepted, v.next_token) == (0, 4)


def test_row_count_is_checked():
    with pytest.raises(ValueError, match="target rows"):
        verify_chain(onehot_logits([1, 2]), [1, 2], None, GREEDY, 0, 0)


def test_residual_falls_back_to_p_when_empty():
    p = torch.tensor([0.5, 0.5, 0.0])
    assert torch.equal(residual(p, p.clone()), p)
    assert torch.allclose(residual(p, torch.tensor([1.0, 0.0, 0.0])), torch.tensor([0.0, 1.0, 0.0]))


def _sample_rounds(p_logits, q_probs, n, accept_all=False):
    """Run n seeded rounds of k = len(q_probs) draft tokens; return emitted sequences."""
    outs = []
    vocab = p_logits.shape[-1]
    for seed in range(n):
        g = torch.Generator().manual_seed(10_000 + seed)
        draft = [int(torch.multinomial(q, 1, generator=g)) for q in q_probs]
        proposals = [truncate(q, 0) for q in q_probs]
        if accept_all:
            outs.append(tuple(draft))
            continue
        v = verify_chain(p_logits, draft, proposals, T1, seed=seed, position=0)
        outs.append(tuple(draft[: v.accepted]) + (v.next_token,))
        assert 0 <= v.next_token < vocab
    return outs


def test_sampled_verdict_reproduces_the_target_distribution():
    gen = torch.Generator().manual_seed(1)
    p_logits = torch.randn(3, 8, generator=gen) * 1.5  # [k + 1, V], context-free for the test
    # a draft that is close to the target but not equal: both branches get exercised
    q_probs = [torch.softmax(p_logits[i] + torch.randn(8, generator=gen), -1) for i in range(2)]
    p = p_logits.softmax(-1)
    outs = _sample_rounds(p_logits, q_probs, 6000)
    first = [o[0] for o in outs]
    assert chi_square_pvalue(first, {t: float(p[0, t]) for t in range(8)}) > 1e-3
    # given the first draft token was accepted, the next emitted token is ~ p_1
    second = [o[1] for o in outs if len(o) >= 2]
    assert len(second) > 1500
    assert chi_square_pvalue(second, {t: float(p[1, t]) for t in range(8)}) > 1e-3
    # some rounds rejected, some accepted: both branches were exercised
    assert 0.2 < len(second) / len(outs) < 0.95


def test_the_statistic_catches_a_lossy_rule():
    """Negative control: accepting every draft token emits q, which the test must reject."""
    gen = torch.Generator().manual_seed(1)
    p_logits = torch.randn(2, 8, generator=gen) * 1.5
    q_probs = [torch.softmax(torch.randn(8, generator=gen) * 1.5, -1)]
    p = p_logits.softmax(-1)
    first = [o[0] for o in _sample_rounds(p_logits, q_probs, 6000, accept_all=True)]
    assert chi_square_pvalue(first, {t: float(p[0, t]) for t in range(8)}) < 1e-6


def test_truncated_sparse_proposals_stay_lossless():
    """A draft that samples from its top-3 renormalised and sends that sparse q exactly."""
    gen = torch.Generator().manual_seed(2)
    p_logits = torch.randn(2, 10, generator=gen)
    q_full = torch.softmax(torch.randn(10, generator=gen) * 2, -1)
    q_sparse = truncate(q_full, 3)
    q_dense = q_sparse.dense(10)
    p = p_logits.softmax(-1)
    outs = _sample_rounds(p_logits, [q_dense], 6000)
    assert chi_square_pvalue([o[0] for o in outs], {t: float(p[0, t]) for t in range(10)}) > 1e-3


def test_a_draft_token_outside_its_own_proposal_is_refused():
    q = SparseDist(torch.tensor([0, 1]), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="q = 0"):
        verify_chain(torch.zeros(2, 4), [3], [q], T1, seed=0, position=0)


def test_sampled_verdict_is_reproducible_from_the_seed():
    gen = torch.Generator().manual_seed(3)
    p_logits = torch.randn(4, 8, generator=gen)
    q = [truncate(torch.softmax(torch.randn(8, generator=gen), -1), 0) for _ in range(3)]
    runs = {verify_chain(p_logits, [1, 2, 3], q, T1, seed=42, position=5) for _ in range(5)}
    assert len(runs) == 1
