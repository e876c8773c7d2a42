"""Scaled worker sets: two target and two draft workers (real processes on 127.0.0.1,
tiny preset, forwards held to the gpu-like cost profile so requests overlap), and a
coordinator in this process whose DNS discovery asks a resolver the test controls.

Sessions spread over both replicas of each role; when a target and a draft replica
leave the discovered set mid-request, no request fails (their sessions move to the
remaining replicas with a re-prefill, output still the target's greedy output) and
new requests go only to the remaining replicas.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from coordinator import server as coordinator_server
from coordinator.config import CoordinatorConfig
from coordinator.discovery import Discovery, DnsSource
from coordinator.remote import Workers
from specdec.client import Client
from specdec.launch.stack import Service, free_ports
from specdec.pb.v1 import coordinator_pb2_grpc
from specdec.rpc import serving
from tests.helpers.reference import reference

PROMPTS = ["the cat sat", "def add(a, b):", "hello world! 123\n", "abc abc abc"]
TOKENS = 120
DRAFT_NAME, TARGET_NAME = "localhost:50061", "localhost:50071"  # what the fake DNS is asked


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    """{"draft": [Service, Service], "target": [Service, Service]}, all serving."""
    log_dir = Path(tmp_path_factory.mktemp("replicas"))
    args = ["--preset", "tiny", "--seed", "0", "--threads", "1", "--cost-profile", "gpu-like"]
    ports = free_ports(4)
    services = {
        "draft": [Service(f"draft{i}", "draft_worker", ports[i], args, log_dir) for i in range(2)],
        "target": [Service(f"target{i}", "target_worker", ports[2 + i], args, log_dir) for i in range(2)],
    }
    everything = [s for group in services.values() for s in group]
    try:
        for service in everything:
            service.start()
        for service in everything:
            service.wait_serving(90.0)
        yield services
    finally:
        for service in everything:
            service.terminate()
        for service in everything:
            service.stop()


class DiscoveredCoordinator:
    """The coordinator on a loop thread; its DNS discovery is answered from `answers`
    (role -> list of HOST:PORT), which the test changes."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def resolve(self, host: str, port: int):
        role = "draft" if port == 50061 else "target"
        return [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in self.answers[role]]

    def call(self, coroutine, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _start(self) -> int:
        config = CoordinatorConfig(target=(TARGET_NAME,), draft=(DRAFT_NAME,), port=0, preset="tiny")
        self.workers = Workers(config.draft, config.target, target_retry_s=10.0)
        self.discovery = Discovery(self.workers, {
            role: DnsSource([name], interval_s=0.05, resolve=self.resolve)
            for role, name in (("draft", DRAFT_NAME), ("target", TARGET_NAME))
        })
        await self.discovery.start(timeout_s=10.0)
        servicer = await coordinator_server.build_servicer(config, self.workers)
        registration = (
            coordinator_server.SERVICE_NAME,
            lambda server: coordinator_pb2_grpc.add_CoordinatorServicer_to_server(servicer, server),
        )
        running = await serving.start("127.0.0.1:0", [registration], coordinator_server.ERRORS)
        self.server, port = running.server, running.port
        return port

    async def _stop(self) -> None:
        await self.server.stop(0)
        await self.discovery.stop()
        await self.workers.close()

    def members(self, role: str) -> list[str]:
        async def read():
            return [r.address for r in (self.workers.drafts if role == "draft" else self.workers.targets)]

        return self.call(read())

    def __enter__(self) -> str:
        self.thread.start()
        return f"127.0.0.1:{self.call(self._start())}"

    def __exit__(self, *exc) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _sessions(worker_info, services, role) -> list[int]:
    return [worker_info(s.address, role).sessions for s in services[role]]


def _wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# four worker processes: with the other multi-replica scenarios in `make test-full`
@pytest.mark.full
def test_sessions_spread_over_replicas_and_survive_a_replica_leaving(replicas, tiny_engine, worker_info):
    answers = {role: [s.address for s in services] for role, services in replicas.items()}
    kept = {role: services[0] for role, services in replicas.items()}
    coordinator = DiscoveredCoordinator(answers)
    with coordinator as address, Client(address, timeout=120) as client:
        assert sorted(coordinator.members("target")) == sorted(answers["target"])
        streams = [
            client.generate_stream(p, max_new_tokens=TOKENS, ignore_eos=True, mode=mode, policy="fixed")
            for p, mode in zip(PROMPTS, ["sequential", "pearl", "sequential", "pearl"])
        ]
        chunks = [[next(s)] for s in streams]  # every request is running: its sessions exist
        assert _sessions(worker_info, replicas, "target") == [2, 2]
        assert all(n >= 1 for n in _sessions(worker_info, replicas, "draft"))

        for role in answers:  # one replica of each role leaves the discovered set
            answers[role] = [kept[role].address]
        _wait_for(lambda: all(coordinator.members(r) == [kept[r].address] for r in answers))
        for stream, got in zip(streams, chunks):
            got.extend(stream)
        for prompt, got in zip(PROMPTS, chunks):
            assert [t for c in got for t in c.token_ids] == reference(tiny_engine, prompt, TOKENS)
            assert got[-1].finish_reason == "length"
        assert sum(got[-1].stats.reprefills for got in chunks) > 0  # sessions moved to the kept replicas

        gone = {role: services[1] for role, services in replicas.items()}
        _wait_for(lambda: all(worker_info(s.address, r).sessions == 0 for r, s in gone.items()))
        streams = [client.generate_stream(p, max_new_tokens=TOKENS, ignore_eos=True) for p in PROMPTS[:2]]
        heads = [next(s) for s in streams]
        assert worker_info(kept["target"].address, "target").sessions == 2
        assert all(worker_info(s.address, r).sessions == 0 for r, s in gone.items())
        for prompt, head, stream in zip(PROMPTS, heads, streams):
            tokens = [*head.token_ids, *(t for c in stream for t in c.token_ids)]
            assert tokens == reference(tiny_engine, prompt, TOKENS)
