"""Shared fixtures: the tiny stack as real processes on 127.0.0.1 free ports.

`tiny_stack` is started once per test session and shared by the tests that only send
requests; tests that kill or reconfigure workers start their own `LocalStack`.
"""

from __future__ import annotations

import time

import grpc
import pytest

STACK_STARTUP_S = 90.0


def pytest_configure(config):
    """Tiny models on a 2-core box: one intra-op thread is fastest, and it keeps the
    in-process tests from fighting the worker processes for cores."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_head_dir(tmp_path_factory):
    """An (untrained, seeded) SpecDec++ acceptance head for the tiny draft, on disk."""
    import torch

    from specdec.models import load_preset
    from specdec.specdecpp.head import AcceptanceHead, head_meta

    draft = load_preset("tiny", seed=0, roles=("draft",)).draft
    with torch.random.fork_rng():  # seeded weights without touching the global RNG
        torch.manual_seed(0)
        head = AcceptanceHead(draft.config.hidden_size)
    return str(head.save(tmp_path_factory.mktemp("head"), head_meta(draft)))


@pytest.fixture(scope="session")
def tiny_stack(tiny_head_dir):
    """Draft worker (with the acceptance head), target worker and coordinator, tiny preset."""
    from specdec.launch.stack import LocalStack

    with LocalStack(
        preset="tiny", seed=0, startup_timeout_s=STACK_STARTUP_S, worker_args=("--acceptance-head", tiny_head_dir)
    ) as stack:
        yield stack


@pytest.fixture(scope="session")
def tiny_engine():
    """The in-process reference: the same tiny pair, target alone."""
    from specdec import Engine

    return Engine.from_preset("tiny", seed=0)


@pytest.fixture()
def client(tiny_stack):
    from specdec.client import Client

    with Client(tiny_stack.address, timeout=60.0) as c:
        yield c


def _worker_info(address: str, role: str):
    """A worker's GetInfo (sessions held, evictions, ...)."""
    from specdec.pb.v1 import common_pb2, draft_worker_pb2_grpc, target_worker_pb2_grpc

    stub_class = draft_worker_pb2_grpc.DraftWorkerStub if role == "draft" else target_worker_pb2_grpc.TargetWorkerStub
    with grpc.insecure_channel(address) as channel:
        return stub_class(channel).GetInfo(common_pb2.GetInfoRequest(), timeout=10.0)


def _wait_for_no_sessions(stack, timeout_s: float = 10.0) -> dict:
    """Poll both workers until they hold no session; returns the last counts."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = {r: _worker_info(s.address, r).sessions for r, s in (("draft", stack.draft), ("target", stack.target))}
        if not any(counts.values()) or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


@pytest.fixture()
def worker_info():
    """worker_info(address, role) -> WorkerInfo (sessions held, evictions, ...)."""
    return _worker_info


@pytest.fixture()
def wait_for_no_sessions():
    """wait_for_no_sessions(stack, timeout_s=10) -> {"draft": n, "target": n} once both are 0."""
    return _wait_for_no_sessions
