"""The coordinator's request metrics: `RequestMetrics.observe` wraps the response stream
of each Generate/Complete call and records latency, tokens, finish reason or failure
code into specdec.telemetry.metrics.CoordinatorMetrics. The per-round counters come
from the MeteredTarget that run_request puts around the request's target endpoint.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Callable, Mapping

import grpc

from coordinator.requests import MODES
from specdec.pb.v1 import coordinator_pb2 as pb
from specdec.telemetry.metrics import CoordinatorMetrics


class RequestMetrics:
    """CoordinatorMetrics plus how to name a failure: `errors` maps exception classes to
    the status codes the server answers with (coordinator/server.py ERRORS)."""

    def __init__(
        self,
        metrics: CoordinatorMetrics | None = None,
        errors: Mapping[type[BaseException], grpc.StatusCode] | None = None,
    ):
        self.metrics = metrics if metrics is not None else CoordinatorMetrics()
        self.errors = dict(errors or {})
        self.in_progress = 0  # calls being observed: waiting + running
        self._running: Callable[[], int] = lambda: 0

    @property
    def registry(self):
        return self.metrics.registry

    def watch(self, running: Callable[[], int]) -> None:
        """Read num_requests_running (and so waiting) from `running()` at scrape time."""
        self._running = running
        self.metrics.running.set_function(running)
        self.metrics.waiting.set_function(lambda: max(0, self.in_progress - self._running()))

    def meter(self, target, request):
        return self.metrics.meter(target, request)

    async def observe(
        self, msg: pb.GenerateRequest, responses: AsyncIterator[pb.GenerateResponse]
    ) -> AsyncIterator[pb.GenerateResponse]:
        m = self.metrics
        mode = MODES[msg.mode].value if msg.mode in MODES else "unknown"
        began = time.perf_counter()
        first = None  # when the first token went out
        last = None  # the response with the stats
        self.in_progress += 1
        try:
            async for response in responses:
                if first is None and response.token_ids:
                    first = time.perf_counter()
                    m.ttft.labels(mode).observe(first - began)
                if response.HasField("stats"):
                    last = response
                yield response
        except (asyncio.CancelledError, GeneratorExit):  # the client cancelled, or its deadline passed
            m.success.labels("cancelled").inc()
            raise
        except Exception as exc:
            m.failure.labels(self.code_of(exc)).inc()
            raise
        finally:
            self.in_progress -= 1
        ended = time.perf_counter()
        m.e2e.labels(mode).observe(ended - began)
        if last is None:
            return
        stats = last.stats
        m.success.labels(pb.FinishReason.Name(last.finish_reason).removeprefix("FINISH_REASON_").lower()).inc()
        m.generation_tokens.inc(stats.tokens)
        m.prompt_tokens.inc(stats.prompt_tokens)
        if first is not None and stats.tokens > 1:
            m.tpot.labels(mode).observe((ended - first) / (stats.tokens - 1))
        if stats.reprefills:
            m.reprefills.inc(stats.reprefills)
        if stats.draft_fallback:
            m.draft_fallbacks.inc()

    def code_of(self, exc: BaseException) -> str:
        for kind, code in self.errors.items():
            if isinstance(exc, kind):
                return code.name
        return grpc.StatusCode.UNKNOWN.name
