"""DraftWorker servicer: protobuf in -> LocalDraft -> protobuf out. No maths here.

Errors are mapped by specdec.rpc.serving.ErrorInterceptor (see server.py):
SessionStateLost -> FAILED_PRECONDITION (the coordinator re-prefills), ValueError ->
INVALID_ARGUMENT.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import AsyncIterator, Callable

from specdec.backend.local import LocalDraft
from specdec.pb.v1 import common_pb2, draft_worker_pb2, draft_worker_pb2_grpc
from specdec.rpc.checks import check_draft_request, check_draft_tree_request
from specdec.rpc.convert import (
    draft_token_to_pb,
    draft_tree_to_pb,
    rule_from_pb,
    sampling_from_pb,
    tree_params_from_pb,
)


class DraftWorkerServicer(draft_worker_pb2_grpc.DraftWorkerServicer):
    def __init__(self, endpoint: LocalDraft, describe: Callable[[], common_pb2.WorkerInfo]):
        self.endpoint = endpoint
        self.describe = describe

    async def Draft(self, request: draft_worker_pb2.DraftRequest, context) -> AsyncIterator[draft_worker_pb2.DraftToken]:
        if not request.session_id:
            raise ValueError("session_id is empty")
        check_draft_request(request, self.endpoint.sessions.model)
        tokens = self.endpoint.draft_from(
            request.session_id,
            request.start,
            list(request.tokens),
            rule_from_pb(request.rule),
            sampling_from_pb(request.sampling),
            request.seed,
        )
        # a cancelled call closes the generator, which stops the model thread's drafting
        async with aclosing(tokens):
            async for token in tokens:
                yield draft_token_to_pb(token)

    async def DraftTree(
        self, request: draft_worker_pb2.DraftTreeRequest, context
    ) -> draft_worker_pb2.DraftTreeResponse:
        if not request.session_id:
            raise ValueError("session_id is empty")
        check_draft_tree_request(request, self.endpoint.sessions.model)
        tree = await self.endpoint.draft_tree_from(
            request.session_id,
            request.start,
            list(request.tokens),
            tree_params_from_pb(request.tree),
            sampling_from_pb(request.sampling),
            request.seed,
        )
        return draft_tree_to_pb(tree)

    async def Release(self, request: common_pb2.ReleaseRequest, context) -> common_pb2.ReleaseResponse:
        held = request.session_id in self.endpoint.sessions
        await self.endpoint.release(request.session_id)
        return common_pb2.ReleaseResponse(released=held)

    async def GetInfo(self, request: common_pb2.GetInfoRequest, context) -> common_pb2.WorkerInfo:
        return self.describe()
