"""Remote draft and target endpoints: the interfaces of specdec.endpoints over gRPC.

One `RemoteDraft` / `RemoteTarget` per request, sharing the channels of a `Workers`
pool. Each remembers what its worker is known to hold for the session and sends only
the tokens it lacks (`start` = common prefix of that and the new sequence), so a
rejection rolls the worker back implicitly. A worker that lost the session
(restart, eviction) answers FAILED_PRECONDITION and gets the whole history again
from start = 0: a re-prefill, counted in `reprefills`.

Failures: a draft worker that fails becomes EndpointUnavailable (the loop goes on
target-only); a target is retried on the next replica (or the same one, restarting)
for up to `retry_s`, then the request fails with EndpointUnavailable.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import AsyncIterator, Sequence

import grpc

from specdec.drafting import DraftToken
from specdec.endpoints import EndpointUnavailable
from specdec.pb.convert import draft_token_from_pb, proposal_to_pb, rule_to_pb, sampling_to_pb, verification_from_pb
from specdec.pb.v1 import common_pb2, draft_worker_pb2, draft_worker_pb2_grpc, target_worker_pb2, target_worker_pb2_grpc
from specdec.policies import StopRule
from specdec.sampling import SamplingParams, SparseDist
from specdec.session import common_prefix
from specdec.verifying import Verification

log = logging.getLogger(__name__)

# Reconnect quickly to a restarted worker on loopback / in a cluster.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# Codes meaning "this worker cannot answer now" (dead, restarting, shutting down).
GONE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL}


class Replica:
    """One worker address: a channel and a stub, shared by all requests."""

    def __init__(self, address: str, stub_class):
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = stub_class(self.channel)

    async def info(self, timeout: float) -> common_pb2.WorkerInfo:
        return await self.stub.GetInfo(common_pb2.GetInfoRequest(), timeout=timeout, wait_for_ready=True)

    async def release(self, session_id: str) -> None:
        try:
            await self.stub.Release(common_pb2.ReleaseRequest(session_id=session_id), timeout=5.0)
        except grpc.aio.AioRpcError as exc:  # the session expires by TTL anyway
            log.debug("release of %s on %s failed: %s", session_id, self.address, exc.code().name)


class _Held:
    """What a worker is known to hold per session: a prefix of what was last sent."""

    def __init__(self):
        self._tokens: dict[str, list[int]] = {}

    def start(self, session_id: str, sequence: Sequence[int]) -> int:
        return common_prefix(self._tokens.get(session_id, ()), sequence)

    def set(self, session_id: str, tokens: Sequence[int]) -> None:
        self._tokens[session_id] = list(tokens)

    def forget(self, session_id: str) -> None:
        self._tokens.pop(session_id, None)


class RemoteDraft:
    """specdec.endpoints.DraftEndpoint over one draft worker."""

    def __init__(self, replica: Replica):
        self.replica = replica
        self.held = _Held()
        self.reprefills = 0

    async def draft(
        self, session_id: str, committed: Sequence[int], rule: StopRule, params: SamplingParams, seed: int
    ) -> AsyncIterator[DraftToken]:
        """Stream draft tokens; closing the iterator (aclose) cancels the call, so the
        worker stops drafting."""
        base = list(committed)
        start = self.held.start(session_id, base)
        for attempt in range(2):
            request = draft_worker_pb2.DraftRequest(
                session_id=session_id, start=start, tokens=base[start:], rule=rule_to_pb(rule),
                sampling=sampling_to_pb(params), seed=seed,
            )
            self.held.set(session_id, base[:start])  # all we can be sure of until a token arrives
            call = self.replica.stub.Draft(request)
            drafted: list[int] = []
            try:
                async for message in call:
                    # the worker appends each draft token before drafting the next one
                    self.held.set(session_id, base + drafted)
                    drafted.append(message.token_id)
                    yield draft_token_from_pb(message)
                return
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.FAILED_PRECONDITION and attempt == 0 and not drafted:
                    log.info("draft worker %s lost session %s; re-prefilling", self.replica.address, session_id)
                    self.reprefills += 1
                    start = 0
                    continue
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise ValueError(exc.details()) from None
                self.held.forget(session_id)
                raise EndpointUnavailable(f"draft worker {self.replica.address}: {code.name}: {exc.details()}") from None
            finally:
                call.cancel()

    async def release(self, session_id: str) -> None:
        self.held.forget(session_id)
        await self.replica.release(session_id)


class RemoteTarget:
    """specdec.endpoints.TargetEndpoint over target replicas, starting at `first`."""

    def __init__(self, replicas: Sequence[Replica], first: int = 0, retry_s: float = 10.0):
        self.replicas = list(replicas)
        self.current = first % len(self.replicas)
        self.retry_s = retry_s
        self.held = _Held()
        self.reprefills = 0

    @property
    def replica(self) -> Replica:
        return self.replicas[self.current]

    async def verify(
        self,
        session_id: str,
        committed: Sequence[int],
        draft: Sequence[int],
        proposals: Sequence[SparseDist] | None,
        params: SamplingParams,
        seed: int,
    ) -> Verification:
        committed, draft = list(committed), list(draft)
        request = target_worker_pb2.VerifyRequest(
            session_id=session_id, draft_tokens=draft, sampling=sampling_to_pb(params), seed=seed,
            proposals=[proposal_to_pb(q) for q in proposals] if proposals is not None else [],
        )
        deadline = None
        while True:
            start = min(self.held.start(session_id, committed), len(committed))
            request.start = start
            del request.tokens[:]
            request.tokens.extend(committed[start:])
            self.held.set(session_id, committed[:start])
            try:
                reply = await self.replica.stub.Verify(request)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.FAILED_PRECONDITION and start > 0:
                    log.info("target worker %s lost session %s; re-prefilling", self.replica.address, session_id)
                    self._resend_all(session_id)
                    continue
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise ValueError(exc.details()) from None
                if code not in GONE:
                    raise RuntimeError(f"target worker {self.replica.address}: {code.name}: {exc.details()}") from None
                deadline = deadline or time.monotonic() + self.retry_s
                await self._fail_over(session_id, exc, deadline)
                continue
            self.held.set(session_id, committed + draft)
            return verification_from_pb(reply)

    def _resend_all(self, session_id: str) -> None:
        self.held.forget(session_id)
        self.reprefills += 1

    async def _fail_over(self, session_id: str, exc: grpc.aio.AioRpcError, deadline: float) -> None:
        """Move to the next replica (or wait for this one to come back) until `deadline`."""
        left = deadline - time.monotonic()
        if left <= 0:
            tried = ", ".join(r.address for r in self.replicas)
            raise EndpointUnavailable(
                f"no target worker answered within {self.retry_s:.1f}s (tried {tried}; last: "
                f"{exc.code().name}: {exc.details()}): check that a target worker is running (--target)"
            )
        log.warning("target worker %s failed (%s); trying again", self.replica.address, exc.code().name)
        if len(self.replicas) > 1:
            self.current = (self.current + 1) % len(self.replicas)
            self._resend_all(session_id)  # the next replica has never seen this session
        try:
            await asyncio.wait_for(self.replica.channel.channel_ready(), timeout=min(left, 1.0))
        except asyncio.TimeoutError:
            pass

    async def release(self, session_id: str) -> None:
        self.held.forget(session_id)
        await self.replica.release(session_id)


class Workers:
    """The worker pool: channels to every replica; round-robin endpoints per request."""

    def __init__(self, draft: Sequence[str], target: Sequence[str], target_retry_s: float = 10.0):
        self.drafts = [Replica(a, draft_worker_pb2_grpc.DraftWorkerStub) for a in draft]
        self.targets = [Replica(a, target_worker_pb2_grpc.TargetWorkerStub) for a in target]
        self.target_retry_s = target_retry_s
        self._turn = itertools.count()

    def endpoints(self) -> tuple[RemoteDraft | None, RemoteTarget]:
        """Fresh endpoints for one request: the next draft replica and target replica."""
        n = next(self._turn)
        draft = RemoteDraft(self.drafts[n % len(self.drafts)]) if self.drafts else None
        return draft, RemoteTarget(self.targets, first=n, retry_s=self.target_retry_s)

    async def target_info(self, timeout: float) -> common_pb2.WorkerInfo:
        """The first target replica's description; waits up to `timeout` for one to start."""
        return await _first_info(self.targets, timeout, "target")

    async def draft_info(self, timeout: float) -> common_pb2.WorkerInfo | None:
        if not self.drafts:
            return None
        try:
            return await _first_info(self.drafts, timeout, "draft")
        except EndpointUnavailable as exc:  # requests degrade to target-only until one starts
            log.warning("%s", exc)
            return None

    async def close(self) -> None:
        await asyncio.gather(*(r.channel.close() for r in (*self.drafts, *self.targets)))


async def _first_info(replicas: Sequence[Replica], timeout: float, role: str) -> common_pb2.WorkerInfo:
    calls = [asyncio.ensure_future(r.info(timeout)) for r in replicas]
    try:
        for next_done in asyncio.as_completed(calls):
            try:
                return await next_done
            except grpc.aio.AioRpcError:
                continue
    finally:
        for call in calls:
            call.cancel()
    addresses = ", ".join(r.address for r in replicas)
    raise EndpointUnavailable(f"no {role} worker answered GetInfo within {timeout:.0f}s at {addresses}: start one")
