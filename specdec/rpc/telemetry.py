"""Observability at the gRPC edge of the services: OpenTelemetry interceptors (trace
context travels in gRPC metadata, client span -> server span), the workers' metrics
interceptor, and `ServiceTelemetry`, what a service starts next to its gRPC server.

Tracing is on in a process when an SDK TracerProvider is installed (setup_tracing,
run by ServiceTelemetry.start when an OTLP endpoint is configured); off, no
interceptor is added, so an untraced deployment pays nothing on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import (
    aio_client_interceptors,
    aio_server_interceptor,
)

from specdec.telemetry import spans
from specdec.telemetry.config import TelemetryConfig
from specdec.telemetry.metrics import WorkerMetrics, new_registry, serve_metrics
from specdec.telemetry.tracing import setup_tracing, tracing_enabled

# Worker rpcs whose responses carry model compute (compute_seconds)
FORWARD_METHODS = ("Draft", "Verify", "DraftTree", "VerifyTree", "DraftStream", "VerifyStream")


@dataclass
class ServiceTelemetry:
    """A service's tracer provider (when it exports), metrics registry and /metrics server."""

    tracing: bool
    registry: object = field(default_factory=new_registry)  # prometheus_client.CollectorRegistry
    provider: object = None  # the TracerProvider this service installed, flushed on close
    http: object = None  # the /metrics HTTP server

    @classmethod
    def start(cls, service_name: str, config: TelemetryConfig, host: str = "127.0.0.1") -> ServiceTelemetry:
        provider = setup_tracing(service_name, config.otlp_endpoint) if config.otlp_endpoint else None
        telemetry = cls(tracing=tracing_enabled())
        telemetry.provider = provider
        telemetry.http = serve_metrics(telemetry.registry, config.metrics_port, host.strip("[]"))
        return telemetry

    def server_interceptors(self, *more: grpc.aio.ServerInterceptor) -> list:
        """Tracing outermost (it sees the status the inner interceptors abort with), then `more`."""
        return ([aio_server_interceptor()] if self.tracing else []) + list(more)

    def client_interceptors(self) -> list:
        """For channels to other services: a client span per call, its context in the metadata."""
        return aio_client_interceptors() if self.tracing else []

    def close(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http = None
        if self.provider is not None:
            self.provider.shutdown()  # flushes the batch of spans not exported yet
            self.provider = None


def worker_interceptors(telemetry: ServiceTelemetry, role: str, sessions) -> list:
    """A worker's server interceptors: tracing, then its metrics (`sessions`: its SessionStore)."""
    return telemetry.server_interceptors(WorkerMetricsInterceptor(WorkerMetrics(role, sessions, telemetry.registry)))


class WorkerMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Draft and Verify calls of a worker: forward latency into WorkerMetrics, and the
    session, start and token counts onto the call's server span."""

    def __init__(self, metrics: WorkerMetrics):
        self.metrics = metrics

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.rsplit("/", 1)[-1] not in FORWARD_METHODS:
            return handler
        kwargs = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary), **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(self._streaming(handler.unary_stream), **kwargs)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(self._session_stream(handler.stream_stream), **kwargs)
        return handler

    def _session_stream(self, behavior):
        """A session stream: forward latency per round (VerifyResponse) or per draft token
        (DraftStreamItem); the call's server span (one per stream) gets the session and
        the totals."""

        async def call(requests, context):
            span = trace.get_current_span()
            rounds = accepted = 0

            async def annotated():
                first = True
                async for request in requests:
                    if first and span.is_recording():
                        span.set_attribute(spans.SESSION, request.session_id)
                    first = False
                    yield request

            try:
                async for response in behavior(annotated(), context):
                    token = getattr(response, "token", None)
                    seconds = token.compute_seconds if token is not None else getattr(response, "compute_seconds", 0.0)
                    if seconds:
                        self.metrics.forward.observe(seconds)
                    rounds += 1
                    accepted += getattr(response, "accepted", 0)
                    yield response
            finally:
                if span.is_recording():
                    span.set_attributes({"specdec.messages": rounds, spans.ACCEPTED_TOKENS: accepted})

        return call

    def _unary(self, behavior):
        async def call(request, context):
            span = _annotate(request)
            response = await behavior(request, context)
            self.metrics.forward.observe(getattr(response, "compute_seconds", 0.0))
            if span.is_recording() and hasattr(response, "accepted"):
                span.set_attribute(spans.ACCEPTED_TOKENS, response.accepted)
            return response

        return call

    def _streaming(self, behavior):
        async def call(request, context):
            span = _annotate(request)
            drafted = 0
            try:
                async for response in behavior(request, context):
                    self.metrics.forward.observe(response.compute_seconds)
                    drafted += 1
                    yield response
            finally:
                if span.is_recording():
                    span.set_attribute(spans.DRAFT_TOKENS, drafted)

        return call


def _annotate(request) -> trace.Span:
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({
            spans.SESSION: request.session_id, spans.START: request.start, "specdec.new_tokens": len(request.tokens),
        })
        if hasattr(request, "draft_tokens"):
            span.set_attribute(spans.DRAFT_TOKENS, len(request.draft_tokens))
    return span
