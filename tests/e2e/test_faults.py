"""Faults under load, on a cluster of real processes on 127.0.0.1 (tiny preset):

    draft d1, d2     target t1, t2 (d2, t2: --max-sessions 32 --session-ttl 2)
    coordinator: drafts d1,d2 / targets t1,t2, --max-concurrent-requests 4, --target-retry-s 1

- a draft worker killed with several requests in flight: every request completes with
  the target's own output (on the other draft, or target-only), none fails;
- a target replica killed under load: its sessions are re-prefilled on the other one;
- the last target killed: in-flight and new requests fail fast with UNAVAILABLE;
- at --max-concurrent-requests the excess gets RESOURCE_EXHAUSTED at once;
- 1,000 abandoned sessions: bounded by --max-sessions (LRU), dropped by the TTL,
  worker memory bounded.
(test_grpc_failures.py covers single-request restarts and evictions; not repeated here.)
"""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

import grpc
import pytest
import torch

from specdec.client import (
    AsyncClient,
    Client,
    OverloadedError,
    SpecdecError,
    UnavailableError,
)
from specdec.launch.stack import Service, free_ports
from specdec.pb.v1 import (
    common_pb2,
    draft_worker_pb2,
    draft_worker_pb2_grpc,
    target_worker_pb2,
    target_worker_pb2_grpc,
)

PROMPTS = ["the cat sat", "def add(a, b):", "hello world! 123\n", "x = [1, 2, 3]"]
LONG = 300  # tokens per request under load: long enough to be in flight at the kill
MAX_REQUESTS = 4  # the coordinator's --max-concurrent-requests
MAX_SESSIONS = 32  # on d2 and t2
TTL_S = 2.0  # on d2 and t2
TOKENS = 300  # per abandoned target session: 300 x 512 bytes of KV cache (tiny target)
STARTUP_S = 120.0

# Four workers and a coordinator under load, killed and restarted: the most expensive
# e2e scenario, run by `make test-full` (and CI); tests/services/test_grpc_failures.py
# covers killed and restarted workers in the default suite.
pytestmark = pytest.mark.full



class Cluster:
    def __init__(self, log_dir: Path):
        ports = free_ports(5)
        common = ["--preset", "tiny", "--seed", "0", "--threads", "1"]
        bounded = [*common, "--max-sessions", str(MAX_SESSIONS), "--session-ttl", str(TTL_S)]
        self.d1 = Service("d1", "draft_worker", ports[0], common, log_dir)
        self.d2 = Service("d2", "draft_worker", ports[1], bounded, log_dir)
        self.t1 = Service("t1", "target_worker", ports[2], common, log_dir)
        self.t2 = Service("t2", "target_worker", ports[3], bounded, log_dir)
        self.coordinator = Service("coordinator", "coordinator", ports[4], [
            "--preset", "tiny", "--draft", f"{self.d1.address},{self.d2.address}",
            "--target", f"{self.t1.address},{self.t2.address}",
            "--max-concurrent-requests", str(MAX_REQUESTS), "--target-retry-s", "1",
        ], log_dir)
        self.services = (self.d1, self.d2, self.t1, self.t2, self.coordinator)

    def ensure(self, *services: Service) -> None:
        """(Re)start whichever of `services` an earlier test killed."""
        for s in services:
            if not s.alive:
                s.start()
        for s in services:
            s.wait_serving(STARTUP_S)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("faults"))
    try:
        for s in c.services:
            s.start()
        for s in c.services:
            s.wait_serving(STARTUP_S)
        yield c
    finally:
        for s in c.services:
            s.terminate()
        for s in c.services:
            s.stop()


@functools.lru_cache(maxsize=None)
def _reference(engine, prompt: str, n: int) -> tuple[int, ...]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return tuple(engine.generate(prompt, mode="autoregressive", max_new_tokens=n, ignore_eos=True).token_ids)
    finally:
        torch.set_num_threads(threads)


class Flight:
    """Streaming requests running in one event loop; `started` once each got a chunk."""

    def __init__(self):
        self.tasks: list[asyncio.Task] = []
        self.first: list[asyncio.Event] = []

    def launch(self, address: str, prompt: str, **params) -> None:
        first = asyncio.Event()

        async def run():
            async with AsyncClient(address, retries=0, timeout=120) as client:
                ids, last = [], None
                async for chunk in client.generate_stream(prompt, ignore_eos=True, **params):
                    ids += chunk.token_ids
                    last = chunk
                    first.set()
                return tuple(ids), last.stats

        self.tasks.append(asyncio.create_task(run()))
        self.first.append(first)

    async def started(self, timeout: float = 60.0) -> None:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self.first)), timeout)
        assert not any(t.done() for t in self.tasks), "a request ended before the fault: nothing was tested"

    async def results(self) -> list:
        return await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 120)


def _kill(service: Service) -> None:
    service.kill()
    assert not service.alive


def test_the_excess_over_max_concurrent_requests_gets_resource_exhausted(cluster, tiny_engine):
    cluster.ensure(*cluster.services)
    address = cluster.coordinator.address

    async def overflow():
        async with AsyncClient(address, retries=0, timeout=30) as client:
            began = time.monotonic()
            try:
                await client.complete(PROMPTS[0], max_new_tokens=5)
            except SpecdecError as exc:
                return exc, time.monotonic() - began
            return None, time.monotonic() - began

    async def scenario():
        flight = Flight()
        for prompt in PROMPTS[:MAX_REQUESTS]:
            flight.launch(address, prompt, max_new_tokens=LONG, mode="sequential", policy="fixed")
        await flight.started()
        rejected = await asyncio.gather(*(overflow() for _ in range(3)))
        return rejected, await flight.results()

    rejected, admitted = asyncio.run(scenario())
    for exc, seconds in rejected:
        assert isinstance(exc, OverloadedError) and "limit" in exc.details, repr(exc)
        assert seconds < 5.0  # answered at once, not queued behind the running requests
    for prompt, result in zip(PROMPTS, admitted):
        assert not isinstance(result, BaseException), repr(result)
        assert result[0] == _reference(tiny_engine, prompt, LONG)
    with Client(address, retries=0, timeout=30) as client:  # the slots are free again
        assert client.complete(PROMPTS[0], max_new_tokens=5).stats.tokens == 5


def _rss_bytes(service: Service) -> int:
    for line in Path(f"/proc/{service.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _abandon_sessions(target: str, draft: str, n: int, tokens: int) -> None:
    """n sessions opened on each worker and never released (as by a coordinator that
    died): `tokens` long on the target, 8 on the draft."""
    greedy = common_pb2.SamplingParams(temperature=0.0, top_p=1.0)
    async with grpc.aio.insecure_channel(target) as t_channel, grpc.aio.insecure_channel(draft) as d_channel:
        verify = target_worker_pb2_grpc.TargetWorkerStub(t_channel).Verify
        draft_call = draft_worker_pb2_grpc.DraftWorkerStub(d_channel).Draft
        gate = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            sequence = [(i * 7 + j) % 60 + 2 for j in range(tokens)]
            request = draft_worker_pb2.DraftRequest(
                session_id=f"gone-{i}", tokens=sequence[:8], rule=common_pb2.StopRule(max_tokens=1), sampling=greedy
            )
            async with gate:
                await verify(target_worker_pb2.VerifyRequest(session_id=f"gone-{i}", tokens=sequence, sampling=greedy),
                             timeout=60)
                assert len([t async for t in draft_call(request, timeout=60)]) == 1

        await asyncio.gather(*(one(i) for i in range(n)))


def test_abandoned_sessions_are_bounded_by_max_sessions_and_dropped_by_the_ttl(cluster, worker_info):
    cluster.ensure(cluster.d2, cluster.t2)  # --max-sessions 32 --session-ttl 2
    workers = ((cluster.t2, "target"), (cluster.d2, "draft"))
    asyncio.run(_abandon_sessions(cluster.t2.address, cluster.d2.address, MAX_SESSIONS, TOKENS))  # warm up
    rss = _rss_bytes(cluster.t2)
    evictions = {role: worker_info(s.address, role).evictions for s, role in workers}

    asyncio.run(_abandon_sessions(cluster.t2.address, cluster.d2.address, 1000, TOKENS))

    for service, role in workers:
        info = worker_info(service.address, role)
        assert info.max_sessions == MAX_SESSIONS and info.sessions <= MAX_SESSIONS
        assert info.evictions - evictions[role] >= 1000 - MAX_SESSIONS
    # 1,000 sessions x 300 tokens x 512 bytes of KV cache would be ~150 MiB; 32 are ~5 MiB
    grown = _rss_bytes(cluster.t2) - rss
    assert grown < 48 * 2**20, f"the target worker's RSS grew by {grown / 2**20:.0f} MiB"

    time.sleep(TTL_S + 0.5)  # idle past the TTL: the workers' sweep (or the next call) drops them
    asyncio.run(_abandon_sessions(cluster.t2.address, cluster.d2.address, 1, 8))
    for service, role in workers:
        assert worker_info(service.address, role).sessions == 1  # only the session just opened


def test_killing_a_draft_worker_under_load_fails_no_request(cluster, tiny_engine):
    """Requests on d1 go on target-only, those on d2 keep drafting; none fails."""
    cluster.ensure(*cluster.services)
    address = cluster.coordinator.address
    jobs = list(zip(PROMPTS, ["sequential", "pearl"] * 2))

    async def scenario():
        flight = Flight()
        for prompt, mode in jobs:
            flight.launch(address, prompt, max_new_tokens=LONG, mode=mode, policy="fixed")
        await flight.started()
        await asyncio.to_thread(_kill, cluster.d1)
        return await flight.results()

    results = asyncio.run(scenario())
    for (prompt, _), result in zip(jobs, results):
        assert not isinstance(result, BaseException), repr(result)
        assert result[0] == _reference(tiny_engine, prompt, LONG)
    stats = [r[1] for r in results]
    assert any(s.draft_fallback for s in stats)  # round-robin put some on d1
    assert any(not s.draft_fallback and s.draft_tokens for s in stats)  # and some on d2

    # new requests go round-robin to the dead draft too: target-only, never an error
    with Client(address, retries=0, timeout=60) as client:
        after = [client.complete(p, max_new_tokens=20, ignore_eos=True, mode="sequential", policy="fixed") for p in PROMPTS]
    assert [a.token_ids for a in after] == [_reference(tiny_engine, p, 20) for p in PROMPTS]


def test_killing_a_target_replica_under_load_reprefills_on_the_other(cluster, tiny_engine):
    cluster.ensure(cluster.t1, cluster.t2, cluster.coordinator)
    jobs = list(zip(PROMPTS, ["sequential", "pearl"] * 2))

    async def scenario():
        flight = Flight()
        for prompt, mode in jobs:
            flight.launch(cluster.coordinator.address, prompt, max_new_tokens=LONG, mode=mode, policy="fixed")
        await flight.started()
        await asyncio.to_thread(_kill, cluster.t2)
        return await flight.results()

    results = asyncio.run(scenario())
    for (prompt, _), result in zip(jobs, results):
        assert not isinstance(result, BaseException), repr(result)
        assert result[0] == _reference(tiny_engine, prompt, LONG)
    assert any(stats.reprefills > 0 for _, stats in results)  # the sessions that were on t2


def test_with_no_target_left_requests_fail_fast_with_unavailable(cluster):
    """--target-retry-s 1: in-flight and new requests get UNAVAILABLE within seconds."""
    cluster.ensure(cluster.t1, cluster.coordinator)
    address = cluster.coordinator.address

    async def scenario():
        flight = Flight()
        for prompt in PROMPTS[:2]:
            flight.launch(address, prompt, max_new_tokens=LONG, mode="sequential", policy="fixed")
        await flight.started()
        killed = time.monotonic()
        await asyncio.to_thread(lambda: [_kill(t) for t in (cluster.t1, cluster.t2)])
        return await flight.results(), time.monotonic() - killed

    in_flight, waited = asyncio.run(scenario())
    for result in in_flight:
        assert isinstance(result, UnavailableError), repr(result)
        assert "target worker" in result.details
    assert waited < 10.0  # the retry window, the kill and the channels' backoff

    with Client(address, retries=0, timeout=30) as client:
        began = time.monotonic()
        with pytest.raises(UnavailableError, match="target worker"):
            client.complete(PROMPTS[0], max_new_tokens=5)
        assert time.monotonic() - began < 8.0
