"""PEARL over gRPC: the remote draft is a real server stream, and closing it (a
rejection cancels the in-flight draft) makes the worker stop drafting at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from coordinator.remote import RemoteDraft, Replica
from specdec.core.policies import StopRule
from specdec.core.sampling import SamplingParams
from specdec.launch.stack import Service, free_port
from specdec.pb.v1 import draft_worker_pb2_grpc


@pytest.fixture(scope="module")
def slow_draft_worker(tmp_path_factory):
    """A tiny draft worker held to 8 ms per forward (cost profile gpu-like)."""
    args = ["--preset", "tiny", "--threads", "1", "--cost-profile", "gpu-like"]
    worker = Service("draft", "draft_worker", free_port(), args, tmp_path_factory.mktemp("logs"))
    worker.start()
    try:
        worker.wait_serving(90)
        yield worker
    finally:
        worker.stop()


def test_closing_the_draft_stream_stops_the_worker(slow_draft_worker):
    async def scenario():
        draft = RemoteDraft(Replica(slow_draft_worker.address, draft_worker_pb2_grpc.DraftWorkerStub))
        base = list(range(5, 25))
        long_window = draft.draft("a", base, StopRule(max_tokens=64), SamplingParams(), 0)
        first = [await anext(long_window), await anext(long_window)]
        await long_window.aclose()  # 62 more tokens would take ~0.5 s if the worker went on
        began = time.perf_counter()
        other = [t async for t in draft.draft("b", base, StopRule(max_tokens=1), SamplingParams(), 0)]
        waited = time.perf_counter() - began
        # the worker holds base + first[0] for session "a": only the rest is sent again
        assert draft.held.start("a", base + [first[0].token, first[1].token]) == len(base) + 1
        again = [t async for t in draft.draft("a", base + [t.token for t in first], StopRule(2), SamplingParams(), 0)]
        await draft.release("a")
        await draft.release("b")
        await draft.replica.channel.close()
        return first, other, again, waited

    first, other, again, waited = asyncio.run(scenario())
    assert len(first) == 2 and len(other) == 1 and len(again) == 2
    assert first[0].token == other[0].token  # same sequence, same greedy draft
    assert waited < 0.3, f"the worker kept drafting the closed stream ({waited:.3f}s)"
