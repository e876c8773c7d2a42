"""Graceful overload: beyond --max-concurrent-requests the coordinator answers
RESOURCE_EXHAUSTED at once with a `retry-after-ms` hint in the trailing metadata; the SDK
waits that hint out and retries while its retries and its deadline allow, else raises
OverloadedError at once; the requests already running are not disturbed.

The stacks run in this process with the gpu-like cost profile, so a request holds its slot
for a predictable while (30 ms per target forward); slots are held by streams the test
opens and cancels itself, never by timing."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

from coordinator.admission import Admission, Overloaded, RetryAfter
from specdec.client import AsyncClient, Client, OverloadedError
from specdec.client.client import Deadline, retry_delay
from specdec.pb.v1 import coordinator_pb2 as pb
from specdec.pb.v1 import coordinator_pb2_grpc
from specdec.rpc.retry_after import RETRY_AFTER_KEY, retry_after_s
from tests.helpers.polling import wait_for
from tests.helpers.reference import reference

PROMPTS = ("the cat sat", "def add(a, b):")
LIMIT = 2
FLOOR_MS = 200  # the quick stack's smallest hint: well above the SDK's first backoff (50-100 ms)
HOLD_TOKENS = 900  # ~27 s at 30 ms a forward: a held slot never frees by itself during a test


@pytest.fixture(scope="module")
def quick_stack():
    from specdec.launch.inprocess import InProcessStack

    coordinator = dict(max_concurrent_requests=LIMIT, retry_after=RetryAfter(floor_ms=FLOOR_MS))
    with InProcessStack(preset="tiny", seed=0, cost_profile="gpu-like", coordinator=coordinator) as stack:
        yield stack


def _stub(stack) -> coordinator_pb2_grpc.CoordinatorStub:
    return coordinator_pb2_grpc.CoordinatorStub(grpc.insecure_channel(stack.address))


class Held:
    """`n` long streams admitted and running (their first tokens read); cancelled on exit,
    which frees their slots."""

    def __init__(self, stack, n: int):
        self.stack, self.n, self.calls = stack, n, []

    def __enter__(self) -> "Held":
        coordinator = self.stack.servicers["coordinator"]
        assert wait_for(lambda: coordinator.active == 0), "a previous test's request still runs"
        stub = _stub(self.stack)
        for i in range(self.n):
            call = stub.Generate(pb.GenerateRequest(
                prompt=PROMPTS[i % len(PROMPTS)], max_new_tokens=HOLD_TOKENS, ignore_eos=True,
                mode=pb.MODE_AUTOREGRESSIVE), timeout=60)
            self.calls.append(call)
            next(call)  # a token came back: the request holds a slot
        return self

    def release(self, i: int = 0) -> None:
        self.calls[i].cancel()

    def __exit__(self, *exc) -> None:
        for call in self.calls:
            call.cancel()


def _rejections(stack) -> float:
    registry = stack.telemetry["coordinator"].registry
    return registry.get_sample_value("specdec:request_failure_total", {"code": "RESOURCE_EXHAUSTED"}) or 0.0


# -- the retry rule and the estimate, without a server ---------------------------------


class _Refused(grpc.RpcError):
    def __init__(self, code=grpc.StatusCode.RESOURCE_EXHAUSTED, metadata=()):
        self._code, self._metadata = code, metadata

    def code(self):
        return self._code

    def trailing_metadata(self):
        return self._metadata


def test_retry_delay_follows_the_hint_within_the_deadline():
    hinted = _Refused(metadata=((RETRY_AFTER_KEY, "750"),))
    assert 0.75 <= retry_delay(hinted, 0, 3, False, Deadline(None)) <= 0.75 * 1.1  # the hint, not the backoff
    assert 0.75 <= retry_delay(hinted, 2, 3, False, Deadline(10.0)) <= 0.75 * 1.1
    assert retry_delay(hinted, 0, 3, False, Deadline(0.5)) is None  # would end past the deadline
    assert retry_delay(hinted, 3, 3, False, Deadline(None)) is None  # retries spent
    assert retry_delay(hinted, 0, 3, True, Deadline(None)) is None  # tokens already received
    # gRPC's own RESOURCE_EXHAUSTED (a message over the size limit) carries no hint: not retried
    assert retry_delay(_Refused(), 0, 3, False, Deadline(None)) is None
    unavailable = _Refused(grpc.StatusCode.UNAVAILABLE)
    assert 0.05 <= retry_delay(unavailable, 0, 3, False, Deadline(None)) <= 0.1  # backoff
    assert retry_delay(unavailable, 0, 3, False, Deadline(0.01)) is None
    assert retry_delay(_Refused(grpc.StatusCode.INVALID_ARGUMENT), 0, 3, False, Deadline(None)) is None
    assert retry_after_s(((RETRY_AFTER_KEY, "soon"),)) is None and retry_after_s(None) is None


def test_the_hint_is_the_mean_holding_time_over_the_running_requests():
    admission = Admission(2, RetryAfter(floor_ms=10, cap_ms=5_000, unmeasured_s=1.0, smoothing=0.5))
    began = [admission.enter(), admission.enter()]
    with pytest.raises(Overloaded) as refused:
        admission.enter()
    assert refused.value.retry_after_ms == 500  # nothing finished yet: 1 s assumed, 2 running
    assert "limit of 2 concurrent requests" in str(refused.value) and "retry in 500 ms" in str(refused.value)
    admission.leave(began[0] - 3.0)  # held ~3 s
    admission.leave(began[1] - 1.0)  # held ~1 s: the average moves halfway
    assert admission.hold_s == pytest.approx(2.0, abs=0.05) and admission.running == 0
    admission.enter()
    assert admission.retry_after_ms() == pytest.approx(2000, abs=50)
    admission.hold_s = 60.0
    assert admission.retry_after_ms() == 5_000  # capped
    admission.hold_s = 0.001
    assert admission.retry_after_ms() == 10  # floored
    with pytest.raises(ValueError, match="floor_ms"):
        RetryAfter(floor_ms=10, cap_ms=5)


# -- through the stack -------------------------------------------------------------------


def test_over_the_limit_is_resource_exhausted_with_a_retry_hint(quick_stack):
    stub = _stub(quick_stack)
    request = pb.GenerateRequest(prompt=PROMPTS[0], max_new_tokens=4)
    with Held(quick_stack, LIMIT):
        for call in (lambda: stub.Complete(request, timeout=10), lambda: list(stub.Generate(request, timeout=10))):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            exc = refused.value
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            hints = [value for key, value in exc.trailing_metadata() if key == RETRY_AFTER_KEY]
            assert len(hints) == 1 and int(hints[0]) >= FLOOR_MS, exc.trailing_metadata()
            assert f"limit of {LIMIT} concurrent requests" in exc.details()
            assert f"retry in {hints[0]} ms" in exc.details() and "fewer requests" in exc.details()


def test_the_sdk_waits_out_the_hint_then_succeeds(quick_stack):
    outcome = {}

    def call():
        began = time.monotonic()
        with Client(quick_stack.address, timeout=30, retries=20) as client:
            try:
                outcome["result"] = client.complete(PROMPTS[1], max_new_tokens=4, ignore_eos=True)
            except Exception as exc:  # reported below
                outcome["result"] = exc
        outcome["seconds"] = time.monotonic() - began

    before = _rejections(quick_stack)
    with Held(quick_stack, LIMIT) as held:
        caller = threading.Thread(target=call)
        caller.start()
        assert wait_for(lambda: _rejections(quick_stack) > before, timeout_s=10), "the SDK's call was never refused"
        held.release(0)  # a slot frees: the next retry gets in
        caller.join(20)
    assert not caller.is_alive()
    assert not isinstance(outcome["result"], BaseException), repr(outcome["result"])
    assert outcome["result"].stats.tokens == 4
    assert _rejections(quick_stack) - before >= 1  # refused at least once, then retried to success
    assert outcome["seconds"] >= FLOOR_MS / 1000  # it waited at least one hint (the floor) before retrying


def test_requests_in_flight_complete_unaffected(quick_stack, tiny_engine):
    n = 40
    results, started, threads = {}, [threading.Event() for _ in PROMPTS], []

    def run(i: int):
        with Client(quick_stack.address, timeout=60, retries=0) as client:
            ids = []
            for chunk in client.generate_stream(PROMPTS[i], max_new_tokens=n, ignore_eos=True, mode="autoregressive"):
                ids += chunk.token_ids
                started[i].set()
            results[i] = (ids, chunk.finish_reason)

    assert wait_for(lambda: quick_stack.servicers["coordinator"].active == 0)
    for i in range(len(PROMPTS)):
        threads.append(threading.Thread(target=run, args=(i,)))
        threads[-1].start()
    assert all(event.wait(20) for event in started)
    with Client(quick_stack.address, timeout=10, retries=0) as client:
        for _ in range(3):  # refused at once while both run (no retries: nothing waits)
            with pytest.raises(OverloadedError) as refused:
                client.complete(PROMPTS[0], max_new_tokens=4)
            assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= FLOOR_MS / 1000
    for thread in threads:
        thread.join(30)
    for i, prompt in enumerate(PROMPTS):
        assert results[i] == (reference(tiny_engine, prompt, n), "length")


def test_a_deadline_shorter_than_the_hint_fails_fast():
    """A 5 s hint and a 2 s timeout: OverloadedError on the first refusal, no sleep, no
    second attempt, for the sync stream and unary calls and the async client."""
    from specdec.launch.inprocess import InProcessStack

    coordinator = dict(max_concurrent_requests=1, retry_after=RetryAfter(floor_ms=5_000))
    with InProcessStack(preset="tiny", seed=0, cost_profile="gpu-like", coordinator=coordinator) as stack:
        with Held(stack, 1), Client(stack.address, timeout=2.0, retries=5) as client:
            calls = [
                lambda: client.complete(PROMPTS[0], max_new_tokens=4),
                lambda: list(client.generate_stream(PROMPTS[0], max_new_tokens=4)),
                lambda: asyncio.run(_async_complete(stack.address)),
            ]
            for call in calls:
                before, began = _rejections(stack), time.monotonic()
                with pytest.raises(OverloadedError) as refused:
                    call()
                assert time.monotonic() - began < 2.0  # within its deadline: it did not wait the 5 s hint
                assert refused.value.retry_after_s == pytest.approx(5.0)
                assert _rejections(stack) - before == 1  # one attempt: no retry it could not finish in time


async def _async_complete(address: str):
    async with AsyncClient(address, timeout=2.0, retries=5) as client:
        return await client.complete(PROMPTS[0], max_new_tokens=4)
