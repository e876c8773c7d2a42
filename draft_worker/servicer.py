"""DraftWorker servicer: protobuf in -> LocalDraft -> protobuf out. No maths here.

Errors are mapped by specdec.rpc.serving.ErrorInterceptor (see server.py):
SessionStateLost -> FAILED_PRECONDITION (the coordinator re-prefills), ValueError ->
INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

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
from specdec.telemetry import spans

WORKER_DRAFT = "specdec.worker.draft"  # the span of one round on a DraftStream


class DraftWorkerServicer(draft_worker_pb2_grpc.DraftWorkerServicer):
    def __init__(self, endpoint: LocalDraft, describe: Callable[[], common_pb2.WorkerInfo]):
        self.endpoint = endpoint
        self.describe = describe

    async def Draft(self, request: draft_worker_pb2.DraftRequest, context) -> AsyncIterator[draft_worker_pb2.DraftToken]:
        if not request.session_id:
            raise ValueError("session_id is empty")
        check_draft_request(request, self.endpoint.sessions.model)
        tokens = self._tokens(request)
        # a cancelled call closes the generator, which stops the model thread's drafting
        async with aclosing(tokens):
            async for token in tokens:
                yield draft_token_to_pb(token)

    async def DraftStream(self, commands, context) -> AsyncIterator[draft_worker_pb2.DraftStreamItem]:
        """Rounds over one stream: a start command stops the round in progress and starts
        its own; items carry their round. A round's error ends the stream."""
        items: asyncio.Queue = asyncio.Queue()
        rounds: list[asyncio.Task] = []

        async def run_round(command) -> None:
            request = command.draft
            request.session_id = command.session_id  # the bound id
            try:
                with spans.worker_round(WORKER_DRAFT, command.traceparent, **{
                        spans.SESSION: command.session_id, spans.START: request.start}) as span:
                    check_draft_request(request, self.endpoint.sessions.model)
                    tokens = self._tokens(request)
                    drafted = 0
                    try:
                        async with aclosing(tokens):
                            async for token in tokens:
                                drafted += 1
                                items.put_nowait(draft_worker_pb2.DraftStreamItem(
                                    round=command.round, token=draft_token_to_pb(token)))
                    finally:
                        span.set_attribute(spans.DRAFT_TOKENS, drafted)
                items.put_nowait(draft_worker_pb2.DraftStreamItem(round=command.round, end=True))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # ends the stream with its status (serving.ErrorInterceptor)
                items.put_nowait(exc)

        async def read_commands() -> None:
            try:
                async for command in commands:
                    if not command.session_id:
                        raise ValueError("session_id is empty")
                    while rounds:  # a new command stops the round in progress, whatever it says
                        await _cancel(rounds.pop())
                    if not command.stop:
                        rounds.append(asyncio.ensure_future(run_round(command)))
            except Exception as exc:
                items.put_nowait(exc)
            finally:
                items.put_nowait(_DONE)

        reader = asyncio.ensure_future(read_commands())
        try:
            while (item := await items.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            for task in [reader, *rounds]:
                await _cancel(task)

    def _tokens(self, request: draft_worker_pb2.DraftRequest):
        return self.endpoint.draft_from(
            request.session_id, request.start, list(request.tokens), rule_from_pb(request.rule),
            sampling_from_pb(request.sampling), request.seed,
        )

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


_DONE = object()  # the caller closed its side of a DraftStream


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
