"""Coordinator servicer: GenerateRequest in -> the orchestration loop over remote
endpoints -> streamed GenerateResponses out.

The loop runs as its own task and hands committed tokens over a queue, so the
stream yields them as they are committed. Closing the stream (client cancel, deadline,
stop string) cancels the loop task: in-flight worker calls are cancelled and the loop
releases the session on both workers. Errors map to status codes in server.py.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator

from coordinator.admission import Admission, Overloaded, RetryAfter
from coordinator.metrics import RequestMetrics
from coordinator.remote import Workers
from coordinator.requests import (
    ModelLimits,
    ParsedRequest,
    finish_reason_to_pb,
    flatten,
    parse_request,
    stats_to_pb,
)
from specdec.core.request import Mode
from specdec.loop.generate import generate
from specdec.models.text import TextStream
from specdec.pb.v1 import common_pb2, coordinator_pb2_grpc
from specdec.pb.v1 import coordinator_pb2 as pb
from specdec.rpc.retry_after import retry_after_metadata

log = logging.getLogger(__name__)

class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(
        self, tokenizer, workers: Workers, limits: ModelLimits, info: pb.CoordinatorInfo,
        metrics: RequestMetrics | None = None, retry_after: RetryAfter = RetryAfter(),
    ):
        self.tokenizer = tokenizer
        self._tokenizer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")
        self.workers = workers
        self.limits = limits
        self.info = info
        self.admission = Admission(info.max_concurrent_requests, retry_after)
        self.metrics = metrics if metrics is not None else RequestMetrics()
        self.metrics.watch(lambda: self.active)

    @property
    def active(self) -> int:
        """Requests running now."""
        return self.admission.running

    async def Generate(self, request: pb.GenerateRequest, context) -> AsyncIterator[pb.GenerateResponse]:
        async for response in self.metrics.observe(request, self._serve(request, context)):
            yield response

    async def Complete(self, request: pb.GenerateRequest, context) -> pb.CompleteResponse:
        responses = self.metrics.observe(request, self._serve(request, context))
        return flatten([response async for response in responses])

    async def GetInfo(self, request: common_pb2.GetInfoRequest, context) -> pb.CoordinatorInfo:
        return self.info

    async def _serve(self, msg: pb.GenerateRequest, context=None) -> AsyncIterator[pb.GenerateResponse]:
        try:
            began = self.admission.enter()
        except Overloaded as exc:
            # Trailing metadata set before the error escapes: the error interceptor's abort
            # (specdec/rpc/serving.py) sends what was set along with the status.
            if context is not None:
                context.set_trailing_metadata(retry_after_metadata(exc.retry_after_ms))
            raise
        try:
            # Tokenising a long prompt takes a while: off the event loop, so other requests
            # keep streaming; one thread, because a tokenizer is not safe to share across threads.
            parsed = await asyncio.get_running_loop().run_in_executor(
                self._tokenizer_thread, parse_request, msg, self.tokenizer, self.limits
            )
            async for response in run_request(parsed, self.tokenizer, self.workers, self.limits, self.metrics):
                yield response
        finally:
            self.admission.leave(began)


async def run_request(
    parsed: ParsedRequest, tokenizer, workers: Workers, limits: ModelLimits, metrics: RequestMetrics | None = None
) -> AsyncIterator[pb.GenerateResponse]:
    """Run one request to its end, yielding a response per batch of committed tokens and
    a last one with the finish reason and the stats."""
    request = parsed.request
    draft, target = workers.endpoints()
    if request.mode is Mode.AUTOREGRESSIVE:
        draft = None
    text = TextStream(tokenizer, request.prompt_ids, parsed.stop)
    queue: asyncio.Queue = asyncio.Queue()

    def on_tokens(ids: list[int]) -> bool:
        delta, kept = text.push(ids)
        if kept:
            queue.put_nowait(pb.GenerateResponse(text=delta, token_ids=kept))
        return text.stopped  # True ends the loop with finish reason STOP

    loop = asyncio.create_task(
        generate(
            request, draft, metrics.meter(target, request) if metrics else target,  # per-round counters
            limits.eos_token_ids, limits.context_length, on_tokens, speed=workers.speed,
        )
    )
    loop.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while (response := await queue.get()) is not None:
            yield response
        result = loop.result()
    finally:
        await _stop(loop)
    result.stats.reprefills += target.reprefills + (draft.reprefills if draft is not None else 0)
    stats = stats_to_pb(result.stats, result.seed, text.tokens, len(request.prompt_ids))
    yield pb.GenerateResponse(text=text.finish(), finish_reason=finish_reason_to_pb(result.finish_reason), stats=stats)


async def _stop(loop: asyncio.Task) -> None:
    """Cancel the loop task if it still runs and wait for it (it releases the sessions)."""
    if not loop.done():
        loop.cancel()
        try:
            await loop
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # failed while winding down; the caller is gone anyway
            log.warning("request failed while being cancelled: %s", exc)
        return
    if not loop.cancelled() and loop.exception() is not None:
        log.debug("request failed: %s", loop.exception())
