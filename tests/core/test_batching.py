"""batching.py: merged forwards compute what each session would alone; concurrent
requests through batching endpoints keep greedy equality and seeded reproducibility."""

import asyncio

import pytest
import torch

from specdec import Engine
from specdec.backend.local import LocalDraft, LocalTarget
from specdec.core.tree import ROOT
from specdec.models.tiny import tiny_pair
from specdec.runtime.batching import BatchItem, batched_forward
from specdec.runtime.session import ModelSession
from tests.helpers.batching import TreeMerges

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



# -- GSD's tree forwards through the runner ------------------------------------------

TREE_PREFIX = [5, 9, 12, 3, 40, 41, 7]
TREE_TOKENS = [10, 11, 12, 13, 14, 13, 15, 16]  # root -> 10, 11, 12; 10 -> 13, 14; 14 -> 15 -> 16; 11 -> 13
TREE_PARENTS = [ROOT, ROOT, ROOT, 0, 0, 1, 4, 6]
# the other session: its cached tokens, and its plain calls (one beside each forward of the tree session)
OTHERS = {
    "decoding": ([30] * 12, [[31], [32], [33], [34]]),  # a longer cache, fewer new rows: its rows are padded
    "prefill": ([], [[20 + i for i in range(14)], [50, 51], [52], [53]]),  # more new rows: the tree's are padded
}


class MergesWith:
    """A runner double: each forward of the session it serves runs in one batched_forward
    with the next plain call of another session, before or after it in the batch."""

    def __init__(self, model, other: ModelSession, calls, first: bool):
        self.model, self.other, self.calls, self.first = model, other, list(calls), first
        self.results = []  # the other session's

    def run(self, session, fresh, n_logits, want_hidden, positions=None, visible=None):
        item = BatchItem(session, fresh, n_logits, want_hidden, positions=positions, visible=visible)
        new = self.calls.pop(0)
        other = BatchItem(self.other, new, len(new), False)
        results = batched_forward(self.model, [item, other] if self.first else [other, item])
        assert all(torch.isfinite(r.logits).all() for r in results)  # pad rows add no NaN
        mine, theirs = results if self.first else results[::-1]
        self.results.append(theirs.logits)
        return mine


def tree_calls(s: ModelSession):
    """What a GSD target then draft do to a session: a tree verification after a committed
    tail, keep a path, two draft levels over its own cached tree rows, drop them, go on."""
    from specdec.gsd.tree_session import append_tree, forward_tree, keep_path

    verify = forward_tree(s, len(s.tokens), TREE_PREFIX[len(s.tokens):], TREE_TOKENS, TREE_PARENTS)
    keep_path(s, len(TREE_PREFIX), [0, 4], [10, 14])
    L = len(s.tokens)
    level1 = append_tree(s, L, [3, 4], [1, 1], [[], []])
    level2 = append_tree(s, L, [5, 6], [2, 2], [[L], [L + 1]])
    s.crop(L)
    return [verify.logits, level1.logits, level2.logits, s.append([20, 21], 2).logits]


@pytest.mark.parametrize("first", [True, False], ids=["tree-first", "tree-second"])
@pytest.mark.parametrize("other", list(OTHERS))
def test_a_tree_forward_merged_with_a_plain_one_computes_what_each_would_alone(target, other, first):
    """GSD's tree forwards (the target's tree with its committed tail, the draft's levels
    over cached tree rows), each in one batched_forward with another session's plain
    forward: both get the logits they get alone (fp32), and both caches go on as alone."""
    cached, calls = OTHERS[other]
    alone_tree = tree_calls(session_with(target, TREE_PREFIX[:4]))
    b = session_with(target, cached)
    alone_other = [b.append(new, len(new)).logits for new in calls] + [b.append([40], 1).logits]

    b = session_with(target, cached)
    a = session_with(target, TREE_PREFIX[:4])
    a.runner = MergesWith(target, b, calls, first)
    merged_tree = tree_calls(a)
    assert a.runner.calls == []  # every forward of the tree session was merged
    b.tokens = cached + [t for new in calls for t in new]
    merged_other = a.runner.results + [b.append([40], 1).logits]
    for got, want in zip(merged_tree + merged_other, alone_tree + alone_other, strict=True):
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)


def test_a_tree_call_is_never_split_into_prefill_chunks(target):
    from specdec.runtime.batching import BatchingRunner

    runner = BatchingRunner(target, None, max_batch=4, wait_s=0.0, chunk_tokens=16)
    rows = 40  # 39 rows whose logits nobody wants: a plain call this long would be chunked
    tree = BatchItem(ModelSession(target), list(range(rows)), 1, False, positions=list(range(rows)),
                     visible=torch.ones(rows, rows, dtype=torch.bool).tril())
    decoding = BatchItem(ModelSession(target), [1], 1, False)
    with runner._cv:  # the runner's own thread stays asleep meanwhile
        runner._pending = [tree, decoding]
        assert runner._compose() == [tree, decoding] and tree.chunk_of is None and len(tree.fresh) == rows
        assert runner._pending == [] and runner.chunks == 0


GSD_PROMPTS = PROMPTS[:6]  # more than max_batch: the sessions' rounds drift apart and meet again
BESIDE = PROMPTS[6]  # a sequential request beside the GSD ones


def test_concurrent_gsd_requests_merge_their_tree_forwards_and_keep_greedy_equality(engines, monkeypatch):
    """Endpoints with max_batch 4: several GSD requests and a sequential one at once. The
    draft levels and tree verifications go through the batching runners, merged with the
    other sessions' forwards, and every output is still the target alone's (fp32)."""
    plain, _ = engines
    batched = Engine(plain.draft, plain.target, plain.tokenizer)
    batched.target_endpoint = LocalTarget(plain.target, max_batch=4)
    batched.draft_endpoint = LocalDraft(plain.draft, max_batch=4)
    prompts = GSD_PROMPTS + [BESIDE]
    reference = [
        plain.generate(p, max_new_tokens=40, mode="autoregressive", ignore_eos=True).token_ids for p in prompts
    ]
    merges = TreeMerges(monkeypatch)

    async def run():
        gsd = [batched.agenerate(p, max_new_tokens=40, ignore_eos=True, mode="gsd") for p in GSD_PROMPTS]
        beside = batched.agenerate(BESIDE, max_new_tokens=40, ignore_eos=True, mode="sequential", policy="fixed",
                                   draft_length=3)
        return await asyncio.gather(*gsd, beside)

    outs = asyncio.run(run())
    assert [o.token_ids for o in outs] == reference
    assert all(o.stats.tree_nodes > 0 for o in outs[:-1])  # really GSD
    assert merges.of(plain.target) > 0 and merges.of(plain.draft) > 0  # tree forwards really were merged
    for runner in (batched.target_endpoint._thread.runner, batched.draft_endpoint._thread.runner):
        assert runner.rows > runner.forwards and runner.chunks == 0
