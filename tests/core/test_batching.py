"""batching.py: merged forwards compute what each session would alone; concurrent
requests through batching endpoints keep greedy equality and seeded reproducibility."""

import asyncio

import pytest
import torch

from specdec import Engine
from specdec.backend.local import LocalDraft, LocalTarget
from specdec.models.tiny import tiny_pair
from specdec.runtime.batching import BatchItem, batched_forward
from specdec.runtime.session import ModelSession

PROMPTS = ["def fib(n):", "the quick brown fox", "hello", "1 + 1 =", "abc", "(((", "summarise this", "x"]


@pytest.fixture(scope="module")
def target():
    return tiny_pair(0)[1]


def session_with(model, tokens):
    s = ModelSession(model)
    if tokens:
        s.forward(0, tokens, n_logits=1)
    return s


def test_merged_forward_equals_separate_forwards(target):
    prefixes = [[5, 6, 7, 8, 9, 10, 11], [], [20, 21], [30] * 12]
    news = [[12, 13], [3, 4, 5, 6, 7], [22], [31, 32, 33]]
    n_logits = [2, 1, 1, 3]
    alone = []
    for prefix, new, n in zip(prefixes, news, n_logits):
        s = session_with(target, prefix)
        alone.append((s.forward(len(prefix), new, n).logits, s.append([40], 1).logits))
    sessions = [session_with(target, p) for p in prefixes]
    items = [BatchItem(s, list(new), n, want_hidden=True) for s, new, n in zip(sessions, news, n_logits)]
    merged = batched_forward(target, items)
    for b, (s, new, prefix) in enumerate(zip(sessions, news, prefixes)):
        assert torch.allclose(merged[b].logits, alone[b][0], atol=1e-5)
        assert merged[b].hidden.shape == (n_logits[b], target.config.hidden_size)
        s.tokens = prefix + new
        assert s.cache.get_seq_length() == len(prefix) + len(new)  # pads dropped
        assert torch.allclose(s.append([40], 1).logits, alone[b][1], atol=1e-5)  # the split cache is right


@pytest.fixture(scope="module")
def engines():
    plain = Engine.from_preset("tiny", seed=0)
    batched = Engine(plain.draft, plain.target, plain.tokenizer)
    batched.target_endpoint = LocalTarget(plain.target, max_batch=8)
    batched.draft_endpoint = LocalDraft(plain.draft, max_batch=8)
    return plain, batched


def run_concurrently(engine, **kwargs):
    async def run():
        return await asyncio.gather(*(engine.agenerate(p, ignore_eos=True, **kwargs) for p in PROMPTS))

    return asyncio.run(run())


def test_forward_budgets_staircase_and_roofline():
    """gpu-like: a step per started chunk of 32 tokens; gpu-batch: flat to 32, then linear."""
    from specdec.runtime.cost import CostProfile

    chunks, roof = CostProfile.load("gpu-like").budget("target"), CostProfile.load("gpu-batch").budget("target")
    assert [chunks.allowed(n) for n in (1, 32, 33, 80)] == pytest.approx([0.03, 0.03, 0.06, 0.09])
    assert [roof.allowed(n) for n in (1, 32, 33, 80)] == pytest.approx([0.03, 0.03, 0.03 * 33 / 32, 0.075])
    assert CostProfile.load("gpu-batch").budget("target", "tiny").allowed(1) == pytest.approx(0.12)


@pytest.mark.parametrize("mode,policy", [("autoregressive", "fixed"), ("sequential", "fixed"), ("pearl", "fixed"), ("auto", "auto")])
def test_concurrent_requests_in_a_batch_keep_greedy_equality(engines, mode, policy):
    """... and the engine learns that its target merges sessions: passes keyed by the
    forward's tokens, all sessions' (what policy auto's cost model reads)."""
    plain, batched = engines
    reference = [plain.generate(p, max_new_tokens=30, mode="autoregressive", ignore_eos=True).token_ids for p in PROMPTS]
    runners = [batched.target_endpoint._thread.runner]
    if mode in ("sequential", "pearl"):  # the draft worker batches its drafting forwards likewise
        runners.append(batched.draft_endpoint._thread.runner)
    before = [(r.rows, r.forwards) for r in runners]
    outs = run_concurrently(batched, max_new_tokens=30, mode=mode, policy=policy, draft_length=4)
    assert [o.token_ids for o in outs] == reference
    for runner, (rows, forwards) in zip(runners, before):
        assert runner.rows - rows > runner.forwards - forwards  # forwards really were merged
    assert batched.speed.merges() and max(n for n, _ in batched.speed.pass_table()) > 5


def test_seeded_sampling_is_the_same_batched_or_not(engines):
    plain, batched = engines
    kwargs = dict(max_new_tokens=20, temperature=1.0, seed=3, mode="sequential", policy="fixed", draft_length=3)
    alone = [plain.generate(p, ignore_eos=True, **kwargs).token_ids for p in PROMPTS]
    assert [o.token_ids for o in run_concurrently(batched, **kwargs)] == alone


def test_batching_workers_serve_concurrent_clients_exactly(engines, worker_info):
    """The same through real worker processes started with --max-batch, which they report
    (the coordinator's cost model reads the target's)."""
    from concurrent.futures import ThreadPoolExecutor

    from specdec.client import Client
    from specdec.launch.stack import LocalStack

    plain, _ = engines
    reference = [plain.generate(p, max_new_tokens=24, mode="autoregressive", ignore_eos=True).token_ids for p in PROMPTS]
    with LocalStack(preset="tiny", seed=0, worker_args=("--max-batch", "8")) as stack:
        with Client(stack.address, timeout=120.0) as client:

            def ask(prompt):
                r = client.complete(prompt, max_new_tokens=24, mode="sequential", policy="fixed", ignore_eos=True)
                return list(r.token_ids)

            with ThreadPoolExecutor(len(PROMPTS)) as pool:
                assert list(pool.map(ask, PROMPTS)) == reference
        assert worker_info(stack.target.address, "target").max_batch == 8
