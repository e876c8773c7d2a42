"""Client-side tracing: OpenTelemetry's gRPC client interceptors on the SDK's channels,
so a request's trace starts in the caller (a client span per call; its context goes
to the coordinator in the gRPC metadata, and from there to every worker call).

On by default when the process has an OpenTelemetry SDK TracerProvider installed
(or one is passed in); otherwise the channel is left as it is, at no cost.
"""

from __future__ import annotations

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.instrumentation.grpc._client import OpenTelemetryClientInterceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel


def wanted(tracing: bool | None, tracer_provider) -> bool:
    """Whether to trace: as asked, else when a provider is given or an SDK one is installed."""
    if tracing is not None:
        return tracing
    if tracer_provider is not None:
        return True
    from opentelemetry.sdk.trace import TracerProvider

    return isinstance(trace.get_tracer_provider(), TracerProvider)


def traced_channel(channel: grpc.Channel, tracer_provider=None) -> grpc.Channel:
    """`channel` with a client span around every call (sync API)."""
    tracer = trace.get_tracer("opentelemetry.instrumentation.grpc", tracer_provider=tracer_provider)
    return intercept_channel(channel, _CancellableInterceptor(tracer))


def aio_interceptors(tracer_provider=None) -> list:
    """Interceptors for a grpc.aio channel: a client span around every call."""
    return aio_client_interceptors(tracer_provider=tracer_provider)


class _CancellableInterceptor(OpenTelemetryClientInterceptor):
    """OpenTelemetry's sync client interceptor, whose server-streaming calls return a
    plain generator; this one keeps the call's cancel() (the SDK cancels a stream the
    caller closes early)."""

    def intercept_stream(self, request_or_iterator, metadata, client_info, invoker):
        calls = []

        def invoke(request, metadata):
            calls.append(invoker(request, metadata))
            return calls[-1]

        return _Stream(super().intercept_stream(request_or_iterator, metadata, client_info, invoke), calls)


class _Stream:
    """An iterator of responses that can cancel its call."""

    def __init__(self, responses, calls: list):
        self._responses, self._calls = responses, calls

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._responses)

    def cancel(self) -> None:
        for call in self._calls:
            call.cancel()
        close = getattr(self._responses, "close", None)
        if close is not None:
            close()  # ends the client span
