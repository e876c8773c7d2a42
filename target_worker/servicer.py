"""TargetWorker servicer: protobuf in -> LocalTarget -> protobuf out. No maths here.

Errors are mapped by specdec.rpc.serving.ErrorInterceptor (see server.py):
SessionStateLost -> FAILED_PRECONDITION (the coordinator re-prefills), ValueError ->
INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from specdec.backend.local import LocalTarget
from specdec.pb.v1 import common_pb2, target_worker_pb2, target_worker_pb2_grpc
from specdec.rpc.checks import check_verify_request, check_verify_tree_request
from specdec.rpc.convert import (
    proposal_from_pb,
    sampling_from_pb,
    tree_from_pb,
    tree_verification_to_pb,
    verification_to_pb,
)
from specdec.telemetry import spans

WORKER_VERIFY = "specdec.worker.verify"  # the span of one round on a VerifyStream


class TargetWorkerServicer(target_worker_pb2_grpc.TargetWorkerServicer):
    def __init__(self, endpoint: LocalTarget, describe: Callable[[], common_pb2.WorkerInfo]):
        self.endpoint = endpoint
        self.describe = describe

    async def Verify(self, request: target_worker_pb2.VerifyRequest, context) -> target_worker_pb2.VerifyResponse:
        return await self._verify(request)

    async def VerifyStream(self, requests, context) -> AsyncIterator[target_worker_pb2.VerifyResponse]:
        """One round per message, in order (the session binding checked every message)."""
        async for request in requests:
            with spans.worker_round(WORKER_VERIFY, request.traceparent, **{
                spans.SESSION: request.session_id, spans.START: request.start,
                spans.DRAFT_TOKENS: len(request.draft_tokens)}) as span:
                reply = await self._verify(request)
                span.set_attribute(spans.ACCEPTED_TOKENS, reply.accepted)
            yield reply

    async def _verify(self, request: target_worker_pb2.VerifyRequest) -> target_worker_pb2.VerifyResponse:
        if not request.session_id:
            raise ValueError("session_id is empty")
        params = sampling_from_pb(request.sampling)
        check_verify_request(request, self.endpoint.sessions.model, sampled=not params.greedy)
        proposals = None if params.greedy else [proposal_from_pb(q) for q in request.proposals]
        verification = await self.endpoint.verify_from(
            request.session_id,
            request.start,
            list(request.tokens),
            list(request.draft_tokens),
            proposals,
            params,
            request.seed,
        )
        return verification_to_pb(verification)

    async def VerifyTree(
        self, request: target_worker_pb2.VerifyTreeRequest, context
    ) -> target_worker_pb2.VerifyTreeResponse:
        if not request.session_id:
            raise ValueError("session_id is empty")
        params = sampling_from_pb(request.sampling)
        check_verify_tree_request(request, self.endpoint.sessions.model, sampled=not params.greedy)
        tree = tree_from_pb(request.tree)
        tree.validate(self.endpoint.sessions.model.config.vocab_size, sampled=not params.greedy)
        verification = await self.endpoint.verify_tree_from(
            request.session_id, request.start, list(request.tokens), tree, params, request.seed
        )
        return tree_verification_to_pb(verification)

    async def Release(self, request: common_pb2.ReleaseRequest, context) -> common_pb2.ReleaseResponse:
        held = request.session_id in self.endpoint.sessions
        await self.endpoint.release(request.session_id)
        return common_pb2.ReleaseResponse(released=held)

    async def GetInfo(self, request: common_pb2.GetInfoRequest, context) -> common_pb2.WorkerInfo:
        return self.describe()
