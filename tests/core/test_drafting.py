"""drafting.py: when the chain drafter stops (docs/algorithms.md §1-§3).

AdaEDL tests the entropy of the distribution the NEXT token would be drawn from, before
drawing it; SpecDec++'s head scores a token from the draft state whose input is that
token; the cap ends a round with no forward after the last token."""

from types import SimpleNamespace

import pytest
import torch

from specdec.core.policies import EntropyOf, StopRule, make_policy
from specdec.core.sampling import SamplingParams
from specdec.models.tiny import tiny_pair, tiny_tokenizer
from specdec.runtime.drafting import draft_tokens
from specdec.runtime.session import ModelSession

GREEDY = SamplingParams()
VOCAB = 8
UNCERTAIN_AFTER = 2  # after token 2 every token is equally likely: H = ln 8 = 2.08 nats
ADAEDL = dict(entropy_lambda=0.6)  # stop when H > 0.8 (1 - sqrt(0.2 H) < 0.6)


class ScriptedLM(torch.nn.Module):
    """Next-token logits from the last token alone: 0 -> 1 -> 2 sharply (H ~ 0.004 nats),
    after 2 uniform, after anything else 1. Keeps its tokens in the cache like a real
    model, so the session's crops and lengths hold; counts its forwards."""

    def __init__(self):
        super().__init__()
        self.forwards = 0

    def forward(self, input_ids, cache=None, logits_to_keep=1, output_hidden_states=False, **_):
        self.forwards += 1
        new = input_ids[0].float().view(1, 1, -1, 1)
        cache.update(torch.zeros_like(new), new, 0)
        rows = [self.next_logits(int(t)) for t in input_ids[0]]
        hidden = torch.nn.functional.one_hot(input_ids, VOCAB).float()
        return SimpleNamespace(logits=torch.stack(rows)[-logits_to_keep:][None],
                               hidden_states=(hidden,) if output_hidden_states else None)

    @staticmethod
    def next_logits(last: int) -> torch.Tensor:
        if last == UNCERTAIN_AFTER:
            return torch.zeros(VOCAB)
        return torch.nn.functional.one_hot(torch.tensor({0: 1, 1: 2}.get(last, 1)), VOCAB).float() * 10.0


def draft(prompt, rule, model=None, head=None):
    session = ModelSession(model or ScriptedLM())
    tokens = list(draft_tokens(session, 0, prompt, rule, GREEDY, seed=0, head=head))
    return [t.token for t in tokens], tokens, session


def test_adaedl_does_not_draft_the_token_whose_distribution_is_uncertain():
    # after [3]: 1 and 2 are sure; the token after 2 would come from a uniform distribution
    drafted, tokens, session = draft([3], StopRule(8, **ADAEDL))
    assert drafted == [1, 2]
    assert all(t.entropy < 0.01 for t in tokens)  # each sent token's own distribution was sure
    assert session.tokens == [3, 1, 2]  # the forward that fed 2 ran: its cache row serves the next round
    # the policy hands the drafter that rule
    assert [t.token for t in draft_tokens(ModelSession(ScriptedLM()), 0, [3], make_policy("adaedl", 8).rule(100),
                                          GREEDY, 0)] == [1, 2]


def test_adaedl_always_drafts_one_token_even_from_an_uncertain_distribution():
    drafted, tokens, _ = draft([2], StopRule(8, **ADAEDL))
    assert drafted == [0, 1, 2]  # the first is drawn from the uniform one, then the chain is sure again
    assert tokens[0].entropy == pytest.approx(float(torch.log(torch.tensor(8.0))), abs=1e-5)


def test_adaedl_late_keeps_the_earlier_rule_one_token_late():
    late = StopRule(8, entropy_of=EntropyOf.DRAFTED, **ADAEDL)
    assert draft([3], late)[0] == [1, 2, 0]  # the uncertain token is sent, then drafting stops
    assert draft([2], late)[0] == [0]
    assert draft([3], make_policy("adaedl_late", 8).rule(100))[0] == [1, 2, 0]


def test_the_cap_ends_the_round_without_a_forward_after_the_last_token():
    model = ScriptedLM()
    drafted, _, session = draft([3], StopRule(3), model)
    assert drafted == [1, 2, 0] and model.forwards == 3  # the prefix, then 1 and 2 fed; 0 is not
    assert session.tokens == [3, 1, 2]


# -- SpecDec++: the head reads the state whose input is the token it scores --------------


def score(hidden: torch.Tensor) -> float:
    """A head whose output depends on the hidden state it is given, in (0.1, 0.9)."""
    return float(0.5 + 0.4 * torch.tanh(hidden.float().sum() / hidden.numel() ** 0.5))


@pytest.fixture(scope="module")
def tiny_draft():
    return tiny_pair(0)[0]


def test_the_head_scores_each_token_from_the_state_after_it_is_fed_and_the_rule_uses_those_scores(tiny_draft):
    prompt = tiny_tokenizer()("def fib(n):")["input_ids"]
    full, _, _ = draft(prompt, StopRule(6), tiny_draft)  # greedy: the same chain whatever stops it
    with torch.inference_mode():
        states = tiny_draft(torch.tensor([prompt + full]), output_hidden_states=True).hidden_states[-1][0]
    after = states[len(prompt): len(prompt) + 6]  # row i: the position whose input is x_{i+1}
    before = states[len(prompt) - 1: len(prompt) + 5]  # row i: the position x_{i+1} was sampled from
    scores = [score(h) for h in after]
    all_accepted = torch.tensor(scores).cumprod(0)
    # a threshold the product crosses exactly at x_3: the round must end with x_1..x_3
    threshold = float((1 - all_accepted[1] + 1 - all_accepted[2]) / 2)
    seen = []

    def recording_head(hidden):
        seen.append(hidden.clone())
        return score(hidden)

    rule = StopRule(max_tokens=6, min_tokens=2, reject_threshold=threshold)
    drafted, tokens, session = draft(prompt, rule, tiny_draft, head=recording_head)
    assert drafted == full[:3]
    assert len(seen) == 3  # x_1, x_2, x_3 fed and scored; nothing drawn after the stop
    torch.testing.assert_close(torch.stack(seen).float(), after[:3], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(torch.stack(seen).float(), before[:3], atol=1e-2)
    assert session.tokens == prompt + full[:3]
    assert not hasattr(tokens[0], "p_accept")  # unknown when a token is sent: not reported
