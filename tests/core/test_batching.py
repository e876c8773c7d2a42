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


LONG_PROMPTS = [p * 12 for p in PROMPTS[:4]]  # 60-240 tokens: prefilled in chunks of at most 16


def test_long_prompts_are_prefilled_in_chunks_beside_decoding_sessions_exactly(engines):
    """Chunked prefill (16 tokens per forward): short prompts decode while long ones are
    prefilled a chunk per forward; every output is still the target's own."""
    plain, _ = engines
    chunked = Engine(plain.draft, plain.target, plain.tokenizer)
    chunked.target_endpoint = LocalTarget(plain.target, max_batch=8, chunk_tokens=16)
    chunked.draft_endpoint = LocalDraft(plain.draft, max_batch=8, chunk_tokens=16)
    prompts = PROMPTS[4:] + LONG_PROMPTS
    reference = [plain.generate(p, max_new_tokens=12, mode="autoregressive", ignore_eos=True).token_ids for p in prompts]

    async def run(mode):
        return await asyncio.gather(*(chunked.agenerate(p, max_new_tokens=12, ignore_eos=True, mode=mode,
                                                        policy="fixed", draft_length=3) for p in prompts))

    target_runner = chunked.target_endpoint._thread.runner
    for mode in ("autoregressive", "sequential", "pearl"):
        assert [o.token_ids for o in asyncio.run(run(mode))] == reference, mode
    assert target_runner.chunks >= sum(len(plain.encode(p)) // 16 for p in LONG_PROMPTS) - len(LONG_PROMPTS)
    assert chunked.draft_endpoint._thread.runner.chunks > 0


def test_a_forward_takes_decoding_rows_whole_and_one_prefill_chunk(target):
    """The runner's composition rule on its own: decoding rows first, whole; a prompt fills
    the rest of the 16-token budget (at least half of it); a prompt keeps a seat at max_batch."""
    from specdec.runtime.batching import BatchingRunner

    runner = BatchingRunner(target, None, max_batch=4, wait_s=0.0, chunk_tokens=16)
    decoding = [BatchItem(ModelSession(target), [1], 1, False) for _ in range(5)]
    verify = BatchItem(ModelSession(target), [1, 2, 3, 4, 5], 5, False)  # every row wanted: never split
    prompt = BatchItem(ModelSession(target), list(range(40)), 1, False)
    with runner._cv:  # the runner's own thread stays asleep meanwhile
        runner._pending = [prompt, *decoding[:2], verify]
        batch = runner._compose()
        assert batch[:3] == [*decoding[:2], verify] and batch[3].chunk_of is prompt and len(batch[3].fresh) == 9
        assert runner._pending == []
        runner._pending = [*decoding, prompt]  # more decoding rows than seats: the prompt keeps one
        batch = runner._compose()
        assert batch[:3] == decoding[:3] and batch[3].chunk_of is prompt and len(batch[3].fresh) == 13
        assert runner._pending == decoding[3:]
        runner._pending = [BatchItem(ModelSession(target), list(range(12)), 1, False)]  # fits: whole
        assert runner._compose()[0].chunk_of is None
        runner._pending = []


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
