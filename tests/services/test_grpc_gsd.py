"""GSD over gRPC: DraftWorker.DraftTree / TargetWorker.VerifyTree behind the coordinator.

- trees, tree parameters and verdicts cross the wire unchanged (proposals bit for bit);
- greedy output equals the target alone in process, for several tree shapes, including
  max_new_tokens that ends inside a tree;
- sampling at temperature 1 follows the target's exact distribution (first two tokens);
- sessions lost behind the coordinator's back are re-prefilled: the output is unchanged;
- bad tree parameters and malformed trees are INVALID_ARGUMENT, naming what is wrong.
"""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
import torch

from coordinator.remote import Workers
from coordinator.requests import ModelLimits, parse_request
from specdec.client import InvalidRequestError, build_request
from specdec.core.sampling import SamplingParams, logits_to_probs, truncate
from specdec.core.tree import ROOT, DraftTree, TreeParams
from specdec.gsd.verifying import TreeVerdict, TreeVerification
from specdec.loop.generate import generate
from specdec.models.tiny import tiny_tokenizer
from specdec.pb.v1 import (
    common_pb2,
    draft_worker_pb2,
    draft_worker_pb2_grpc,
    target_worker_pb2,
    target_worker_pb2_grpc,
)
from specdec.rpc import convert
from tests.helpers.distributions import exact_marginals
from tests.helpers.reference import target_alone
from tests.helpers.stats import chi_square_pvalue

LIMITS = ModelLimits(context_length=1024, vocab_size=69, eos_token_ids=(1,), has_draft=True, has_acceptance_head=False)
PROMPTS = [("the cat sat", 64), ("def add(a, b):", 17), ("hello world! 123\n", 120), ("x = [", 3), ("ab", 1)]
SHAPES = {
    "default": {},
    "narrow-deep": dict(tree_width=2, tree_depth=12, tree_nodes=24, merge_context=0),
    "wide-shallow": dict(tree_width=4, tree_depth=3, tree_nodes=40, sibling_threshold=0.0, prob_threshold=0.0),
}
# Every node expanded with two siblings: the second is tried after the first's rejection
# (residual update), and rejections still happen (~30% of requests).
TWO_WIDE = dict(tree_width=2, sibling_threshold=0.0, prob_threshold=0.0)
DIST_N = 1500
CONCURRENCY = 16
ALPHA = 1e-3


# -- the wire, without servers ------------------------------------------------------


def sampled_tree() -> DraftTree:
    gen = torch.Generator().manual_seed(0)
    qs = [truncate(logits_to_probs(torch.randn(66, generator=gen) * 3, SamplingParams(0.7)), 16) for _ in range(2)]
    tokens = [int(qs[0].token_ids[0]), int(qs[0].token_ids[1]), int(qs[1].token_ids[2])]
    return DraftTree(tokens, [ROOT, ROOT, 0], qs, 0, [1, -1, -1], dag_nodes=3, merged_nodes=1, seconds=0.25,
                     saved_rows=2, saved_forwards=1)


def test_a_draft_tree_crosses_the_wire_bit_for_bit():
    tree = sampled_tree()
    back = convert.draft_tree_from_pb(convert.draft_tree_to_pb(tree))
    assert (back.tokens, back.parents, back.root_proposal, back.proposal_ids) == (
        tree.tokens, tree.parents, tree.root_proposal, tree.proposal_ids,
    )
    assert (back.dag_nodes, back.merged_nodes, back.seconds, back.saved_rows, back.saved_forwards) == (3, 1, 0.25, 2, 1)
    for q, q_back in zip(tree.proposals, back.proposals, strict=True):
        assert torch.equal(q.token_ids, q_back.token_ids) and torch.equal(q.probs, q_back.probs)
    back.validate(66, sampled=True)
    greedy = DraftTree([4, 5], [ROOT, 0], proposal_ids=[-1, -1])
    assert convert.tree_from_pb(convert.tree_to_pb(greedy)) == greedy


def test_tree_params_and_verdicts_round_trip():
    tree = TreeParams(width=3, depth=5, max_nodes=20, sibling_threshold=0.0, prob_threshold=0.0, merge_context=0)
    assert convert.tree_params_from_pb(convert.tree_params_to_pb(tree)) == tree
    assert convert.tree_params_from_pb(common_pb2.TreeParams()) == TreeParams()
    v = TreeVerification(TreeVerdict((0, 2), (7, 9), 11, 5), 0.125)
    assert convert.tree_verification_from_pb(convert.tree_verification_to_pb(v)) == v


def test_tree_params_reach_the_core_request_with_zeros_kept():
    sdk = dict(tree_width=2, tree_depth=3, tree_nodes=10, sibling_threshold=0.0, prob_threshold=0.0, merge_context=0)
    request = parse_request(build_request("abc", mode="gsd", **sdk), tiny_tokenizer(), LIMITS).request
    assert request.tree == TreeParams(2, 3, 10, 0.0, 0.0, 0)
    partial = parse_request(build_request("abc", mode="gsd", tree_depth=5), tiny_tokenizer(), LIMITS).request
    assert partial.tree == TreeParams(depth=5)
    assert parse_request(build_request("abc", mode="gsd"), tiny_tokenizer(), LIMITS).request.tree == TreeParams()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(tree_width=0), dict(tree_width=17), dict(tree_depth=0), dict(tree_depth=65), dict(tree_nodes=0),
        dict(tree_nodes=1025), dict(sibling_threshold=1.5), dict(prob_threshold=-0.1), dict(merge_context=-2),
    ],
    ids=lambda kw: next(iter(kw)) + "=" + str(next(iter(kw.values()))),
)
def test_bad_tree_params_are_invalid_arguments_naming_the_field(client, kwargs):
    field = next(iter(kwargs))
    with pytest.raises(InvalidRequestError, match=field) as caught:
        client.complete("the cat sat", mode="gsd", max_new_tokens=4, **kwargs)
    assert caught.value.code == "INVALID_ARGUMENT"


def test_a_malformed_tree_is_refused_by_the_target_worker(tiny_stack):
    prompt = [5, 6, 7]
    sampled = common_pb2.SamplingParams(temperature=1.0, top_p=1.0)
    q = common_pb2.Proposal(token_ids=[8, 9], probs=[0.5, 0.5])
    bad = {
        "parents must come before": common_pb2.DraftTree(tokens=[8, 9], parents=[1, ROOT], root_proposal=-1),
        "outside": common_pb2.DraftTree(tokens=[8, 999], parents=[ROOT, 0], root_proposal=-1),
        "proposals outside": common_pb2.DraftTree(tokens=[8], parents=[ROOT], proposals=[q], root_proposal=3),
        "needs the proposal": common_pb2.DraftTree(tokens=[8], parents=[ROOT], root_proposal=-1),
        "repeated children": common_pb2.DraftTree(tokens=[8, 8], parents=[ROOT, ROOT], proposals=[q], root_proposal=0),
        "tree.proposals[0].probs sum": common_pb2.DraftTree(
            tokens=[8], parents=[ROOT], root_proposal=0,
            proposals=[common_pb2.Proposal(token_ids=[8, 9], probs=[0.5, 0.6])],
        ),
    }
    with grpc.insecure_channel(tiny_stack.target.address) as channel:
        stub = target_worker_pb2_grpc.TargetWorkerStub(channel)
        for words, tree in bad.items():
            request = target_worker_pb2.VerifyTreeRequest(
                session_id="malformed", tokens=prompt, tree=tree, sampling=sampled, seed=0
            )
            with pytest.raises(grpc.RpcError) as caught:
                stub.VerifyTree(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in caught.value.details(), (words, caught.value.details())
        stub.Release(common_pb2.ReleaseRequest(session_id="malformed"), timeout=10)


def test_the_draft_worker_says_failed_precondition_or_invalid_argument(tiny_stack):
    def draft_tree(stub, start, tokens, **tree):
        request = draft_worker_pb2.DraftTreeRequest(
            session_id="never-seen", start=start, tokens=tokens, tree=common_pb2.TreeParams(**tree),
            sampling=common_pb2.SamplingParams(top_p=1.0), seed=0,
        )
        with pytest.raises(grpc.RpcError) as caught:
            stub.DraftTree(request, timeout=10)
        return caught.value

    with grpc.insecure_channel(tiny_stack.draft.address) as channel:
        stub = draft_worker_pb2_grpc.DraftWorkerStub(channel)
        lost = draft_tree(stub, 5, [7])  # the worker holds nothing of this session
        bad_token = draft_tree(stub, 0, [7, 999])
        bad_width = draft_tree(stub, 0, [7], width=0)
        stub.Release(common_pb2.ReleaseRequest(session_id="never-seen"), timeout=10)
    assert lost.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert bad_token.code() == grpc.StatusCode.INVALID_ARGUMENT and "tokens has ids outside" in bad_token.details()
    assert bad_width.code() == grpc.StatusCode.INVALID_ARGUMENT and "tree_width" in bad_width.details()


# -- through the stack --------------------------------------------------------------


def test_the_coordinator_lists_gsd(client):
    assert "gsd" in client.info().modes


@pytest.mark.parametrize("ignore_eos", [True, False])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_greedy_gsd_equals_target_alone(client, tiny_engine, shape, ignore_eos):
    rounds = tokens = 0
    for prompt, max_new_tokens in PROMPTS:
        want = target_alone(tiny_engine, prompt, max_new_tokens, ignore_eos)
        got = client.complete(prompt, mode="gsd", max_new_tokens=max_new_tokens, ignore_eos=ignore_eos, **SHAPES[shape])
        assert list(got.token_ids) == want.token_ids, (shape, prompt, max_new_tokens)
        assert got.text == want.text and got.finish_reason == want.finish_reason.value
        assert not got.stats.draft_fallback
        assert got.stats.tree_nodes == got.stats.draft_tokens
        assert (got.stats.draft_tokens > 0) == (len(want.token_ids) > 1)  # one token left: a plain target round
        rounds, tokens = rounds + got.stats.rounds, tokens + got.stats.tokens
    assert rounds < tokens  # trees are accepted, not only drafted


async def sample_gsd(address: str, n: int):
    from specdec.client import AsyncClient

    limit = asyncio.Semaphore(CONCURRENCY)
    async with AsyncClient(address, timeout=60.0) as client:

        async def one(seed: int):
            async with limit:
                return await client.complete(
                    "the cat sat", seed=seed, temperature=1.0, max_new_tokens=3, mode="gsd", ignore_eos=True,
                    **TWO_WIDE,
                )

        return await asyncio.gather(*(one(seed) for seed in range(n)))


@pytest.mark.full
def test_gsd_sampling_follows_the_target_distribution(tiny_stack, tiny_engine):
    """max_new_tokens = 3: the first round's tree has depth 2, so both tokens checked
    can come out of one multi-candidate walk; proposals cross the wire as fp32."""
    results = asyncio.run(sample_gsd(tiny_stack.address, DIST_N))
    first, second = exact_marginals(tiny_engine.encode("the cat sat"), SamplingParams(temperature=1.0))
    assert all(len(r.token_ids) == 3 and not r.stats.draft_fallback for r in results)
    one_round = sum(r.stats.rounds == 1 for r in results) / len(results)  # both tree tokens accepted
    accepted_any = sum(r.stats.accepted_tokens > 0 for r in results) / len(results)
    assert 0.05 < one_round < 0.95 and accepted_any > 0.2, "the test needs both acceptances and rejections"
    assert all(r.stats.tree_nodes > 0 for r in results)

    p_first = chi_square_pvalue([r.token_ids[0] for r in results], first)
    p_second = chi_square_pvalue([r.token_ids[1] for r in results], second)
    assert p_first > ALPHA, f"first token: p = {p_first:.2g}"
    assert p_second > ALPHA, f"second token: p = {p_second:.2g}"


class DropsSessions:
    """A remote endpoint whose worker loses the session behind its back (Release sent
    straight to the worker, the endpoint's bookkeeping untouched) before every other call."""

    def __init__(self, endpoint, method: str):
        self.endpoint, self.method, self.calls = endpoint, method, 0

    def __getattr__(self, name):
        if name != self.method:
            return getattr(self.endpoint, name)

        async def call(session_id, *args):
            self.calls += 1
            if self.calls % 2 == 0:
                await self.endpoint.replica.release(session_id)
            return await getattr(self.endpoint, name)(session_id, *args)

        return call


@pytest.mark.parametrize("shape", ["default", "narrow-deep"])
def test_sessions_lost_behind_the_coordinators_back_are_reprefilled(tiny_stack, tiny_engine, shape):
    prompt, n = "hello world! 123\n", 60

    async def run():
        workers = Workers([tiny_stack.draft.address], [tiny_stack.target.address])
        try:
            draft, target = workers.endpoints()
            request = tiny_engine.make_request(prompt, mode="gsd", max_new_tokens=n, ignore_eos=True, **SHAPES[shape])
            result = await generate(
                request, DropsSessions(draft, "draft_tree"), DropsSessions(target, "verify_tree"),
                tiny_engine.eos_token_ids, tiny_engine.context_length,
            )
            return result, draft.reprefills, target.reprefills
        finally:
            await workers.close()

    result, draft_reprefills, target_reprefills = asyncio.run(run())
    assert result.token_ids == target_alone(tiny_engine, prompt, n, True).token_ids
    assert not result.stats.draft_fallback and result.stats.rounds >= 4
    assert draft_reprefills > 0 and target_reprefills > 0


@pytest.mark.parametrize("where", ["remote", "embedded"])
def test_cli_generate_passes_tree_params(tiny_stack, where):
    from typer.testing import CliRunner

    from specdec.cli import app

    args = ["generate", "def add(a, b):", "--max-new-tokens", "12", "--mode", "gsd", "--no-chat", "--json",
            "--tree-width", "2", "--tree-depth", "3", "--tree-nodes", "6", "--merge-context", "0"]
    args += ["--address", tiny_stack.address] if where == "remote" else ["--preset", "tiny"]
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0, ok.output
    stats = json.loads(ok.output.strip().splitlines()[-1])
    assert stats["tokens"] == 12 and 0 < stats["tree_nodes"] <= 6 * stats["rounds"]
    refused = CliRunner().invoke(app, [*args, "--sibling-threshold", "2"])
    assert refused.exit_code == 2 and "sibling_threshold" in refused.output


BATCHED_GSD = [("the cat sat", 40), ("def add(a, b):", 40), ("hello world! 123\n", 40), ("x = [", 40), ("ab", 40),
               ("1 + 1 =", 40)]
BESIDE = ("summarise this", 40)  # a sequential request beside the GSD ones


def test_gsd_through_batching_workers_merges_tree_forwards_and_equals_target_alone(tiny_engine, monkeypatch):
    """Workers with --max-batch 4: concurrent GSD requests (and a sequential one beside
    them) have their draft levels and tree verifications merged by the workers' batching
    runners with other sessions' forwards, and each output is the target alone's (fp32)."""
    from specdec.client import AsyncClient
    from specdec.launch.inprocess import InProcessStack
    from tests.helpers.batching import TreeMerges

    want = [target_alone(tiny_engine, p, n).token_ids for p, n in BATCHED_GSD + [BESIDE]]
    merges = TreeMerges(monkeypatch)
    with InProcessStack(preset="tiny", seed=0, max_batch=4) as stack:

        async def run():
            async with AsyncClient(stack.address, timeout=120.0) as client:
                gsd = [client.complete(p, mode="gsd", max_new_tokens=n, ignore_eos=True) for p, n in BATCHED_GSD]
                beside = client.complete(BESIDE[0], mode="sequential", policy="fixed", draft_length=3,
                                         max_new_tokens=BESIDE[1], ignore_eos=True)
                return await asyncio.gather(*gsd, beside)

        outs = asyncio.run(run())
        endpoints = {role: stack.servicers[role].endpoint for role in ("draft", "target")}
    assert [list(o.token_ids) for o in outs] == want
    assert all(o.stats.tree_nodes > 0 and not o.stats.draft_fallback for o in outs[:-1])
    for role, endpoint in endpoints.items():
        assert merges.of(endpoint.sessions.model) > 0, role  # tree forwards really were merged
        assert endpoint._thread.runner.max_batch == 4
