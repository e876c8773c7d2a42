"""Failures are recoverable: the coordinator's history is the truth, worker caches are not.

- sessions evicted behind the coordinator's back are re-prefilled from its history;
- a target worker killed and restarted mid-request costs a re-prefill, not an error;
- a draft worker killed mid-request degrades the request to target-only;
- a dead target replica is skipped for a live one; with none left, a clear error.
Every output is still exactly the target's greedy output.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from coordinator.remote import Workers
from specdec.backend.endpoints import EndpointUnavailable
from specdec.client import Client
from specdec.core.sampling import SamplingParams
from specdec.launch.stack import LocalStack, free_port
from tests.helpers.reference import reference

# Workers killed, restarted and evicted on a stack of its own: with the other multi-process
# scenarios in `make test-full` (CI runs it); the default suite keeps the greedy-equality and
# bad-input checks on the shared stack.
pytestmark = pytest.mark.full

PROMPTS = ["the cat sat", "def add(a, b):", "hello world! 123\n"]


@pytest.fixture(scope="module")
def fragile_stack():
    """Workers that keep one session only (every concurrent request evicts the others),
    and a coordinator that waits up to 30 s for a restarting target."""
    with LocalStack(
        preset="tiny", worker_args=("--max-sessions", "1"), coordinator_args=("--target-retry-s", "30")
    ) as stack:
        yield stack


def test_evicted_sessions_are_reprefilled_from_the_history(fragile_stack, tiny_engine, worker_info):
    jobs = [(p, mode) for p in PROMPTS for mode in ("sequential", "pearl")]

    def run(job):
        prompt, mode = job
        with Client(fragile_stack.address, timeout=60) as client:
            return client.complete(prompt, max_new_tokens=80, ignore_eos=True, mode=mode, policy="fixed")

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(run, jobs))
    for (prompt, _), result in zip(jobs, results):
        assert list(result.token_ids) == reference(tiny_engine, prompt, 80)
    assert sum(r.stats.reprefills for r in results) > 0
    assert worker_info(fragile_stack.target.address, "target").evictions > 0


def test_a_draft_worker_killed_mid_request_degrades_to_target_only(fragile_stack, tiny_engine):
    with Client(fragile_stack.address, timeout=60) as client:
        stream = client.generate_stream(PROMPTS[0], max_new_tokens=400, ignore_eos=True, mode="pearl", policy="fixed")
        chunks = [next(stream)]
        fragile_stack.draft.kill()
        chunks += list(stream)
        assert [t for c in chunks for t in c.token_ids] == reference(tiny_engine, PROMPTS[0], 400)
        assert chunks[-1].stats.draft_fallback

        fragile_stack.draft.start()
        fragile_stack.draft.wait_serving(60)
        deadline = time.monotonic() + 15  # the coordinator's channel reconnects within ~1 s
        while True:
            result = client.complete(PROMPTS[1], max_new_tokens=20, ignore_eos=True, mode="sequential", policy="fixed")
            if not result.stats.draft_fallback or time.monotonic() > deadline:
                break
        assert not result.stats.draft_fallback and result.stats.draft_tokens > 0
        assert list(result.token_ids) == reference(tiny_engine, PROMPTS[1], 20)


def test_a_target_worker_restarted_mid_request_costs_a_reprefill_only(fragile_stack, tiny_engine):
    with Client(fragile_stack.address, timeout=60) as client:
        stream = client.generate_stream(PROMPTS[2], max_new_tokens=400, ignore_eos=True, mode="sequential", policy="fixed")
        chunks = [next(stream)]
        fragile_stack.target.kill()
        fragile_stack.target.start()
        chunks += list(stream)
    assert [t for c in chunks for t in c.token_ids] == reference(tiny_engine, PROMPTS[2], 400)
    assert chunks[-1].stats.reprefills > 0
    assert not chunks[-1].stats.draft_fallback


def test_a_dead_target_replica_is_skipped(tiny_stack, tiny_engine):
    prompt_ids = tiny_engine.encode(PROMPTS[0])
    want = reference(tiny_engine, PROMPTS[0], 1)[0]
    dead = f"127.0.0.1:{free_port()}"

    async def verify_on(addresses, retry_s):
        workers = Workers(draft=[], target=addresses, target_retry_s=retry_s)
        _, target = workers.endpoints()  # starts at the first address
        try:
            verification = await target.verify("failover", prompt_ids, [], None, SamplingParams(), 0)
            await target.release("failover")
            return verification, target
        finally:
            await workers.close()

    verification, target = asyncio.run(verify_on([dead, tiny_stack.target.address], 5.0))
    assert verification.verdict.next_token == want
    assert target.replica.address == tiny_stack.target.address

    with pytest.raises(EndpointUnavailable, match="no target worker answered"):
        asyncio.run(verify_on([dead], 0.5))
