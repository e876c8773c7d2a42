"""Greedy equality through the gRPC stack: every mode and policy returns exactly what
the target alone returns in process (specdec.Engine, mode autoregressive)."""

from __future__ import annotations

import pytest

from tests.helpers.reference import target_alone

PROMPTS = [("the cat sat", 64), ("def add(a, b):", 17), ("hello world! 123\n", 120)]
SCHEDULES = [
    ("autoregressive", "fixed", 4),
    ("sequential", "fixed", 3),
    ("sequential", "heuristic", 2),
    ("sequential", "adaedl", 6),
    ("sequential", "adaedl_late", 6),  # the earlier AdaEDL rule: its stop rule crosses to the draft worker
    ("pearl", "fixed", 4),
    ("pearl", "heuristic", 3),
    ("pearl", "adaedl", 5),
    ("sequential", "specdecpp", 6),
    ("pearl", "specdecpp", 4),
    ("auto", "auto", 8),
    ("sequential", "auto", 6),
]

@pytest.mark.parametrize("ignore_eos", [True, False])
@pytest.mark.parametrize("mode,policy,draft_length", SCHEDULES)
def test_greedy_output_equals_target_alone(client, tiny_engine, mode, policy, draft_length, ignore_eos):
    for prompt, max_new_tokens in PROMPTS:
        want = target_alone(tiny_engine, prompt, max_new_tokens, ignore_eos)
        got = client.complete(
            prompt, max_new_tokens=max_new_tokens, mode=mode, policy=policy, draft_length=draft_length,
            ignore_eos=ignore_eos,
        )
        assert list(got.token_ids) == want.token_ids, (mode, policy, prompt)
        assert got.text == want.text
        assert got.finish_reason == want.finish_reason.value
        assert got.stats.tokens == len(want.token_ids)
        assert not got.stats.draft_fallback
        if policy == "auto":  # on this CPU's real costs auto may well run the target alone
            assert sum(got.stats.auto_k_rounds.values()) > 0
        elif mode != "autoregressive":
            assert got.stats.draft_tokens > 0 and got.stats.rounds < got.stats.tokens + 1


def test_greedy_output_from_token_ids_equals_text_prompt(client, tiny_engine):
    prompt, n = PROMPTS[0]
    ids = tiny_engine.encode(prompt)
    got = client.complete(ids, max_new_tokens=n, mode="pearl", ignore_eos=True)
    assert list(got.token_ids) == target_alone(tiny_engine, prompt, n, True).token_ids
    assert got.stats.prompt_tokens == len(ids)
