"""OpenTelemetry SDK setup for a process: a TracerProvider named after the service,
OTLP export over gRPC when an endpoint is given, and an in-process span collector.

Without `setup_tracing` nothing is installed and every span opened through the
OpenTelemetry API (specdec.telemetry.spans) is a no-op. The OTLP exporter is
imported only when an endpoint is configured.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from urllib.parse import urlparse

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)

log = logging.getLogger(__name__)

# Service names, one per process kind (the chart sets the same in OTEL_SERVICE_NAME).
COORDINATOR = "specdec-coordinator"
DRAFT_WORKER = "specdec-draft-worker"
TARGET_WORKER = "specdec-target-worker"
CLIENT = "specdec-client"


def setup_tracing(service_name: str, otlp_endpoint: str | None = None, console: bool = False) -> TracerProvider:
    """Install (once per process) an SDK TracerProvider for `service_name` as the global
    one, exporting to `otlp_endpoint` (OTLP/gRPC, batched) and/or the console. A second
    call adds its exporters to the provider already installed (OpenTelemetry allows one
    global provider per process; its service name stays the first one's).
    The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (default: all)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
        trace.set_tracer_provider(provider)
    if otlp_endpoint:
        provider.add_span_processor(BatchSpanProcessor(otlp_exporter(otlp_endpoint)))
        log.info("exporting spans of %s over OTLP to %s", service_name, otlp_endpoint)
    if console:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return provider


def tracing_enabled() -> bool:
    """Whether an SDK TracerProvider is installed, i.e. whether spans are recorded at all."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def otlp_exporter(endpoint: str):
    """An OTLP/gRPC span exporter. Plaintext for http:// and for loopback addresses given
    without a scheme; otherwise TLS unless OTEL_EXPORTER_OTLP_INSECURE=true."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    if "://" not in endpoint and _is_loopback(endpoint.rsplit(":", 1)[0]):
        endpoint = f"http://{endpoint}"
    insecure = True if urlparse(endpoint).scheme == "http" else None
    return OTLPSpanExporter(endpoint=endpoint, insecure=insecure)


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SpanCollector(SpanProcessor):
    """Keeps finished spans in memory while open (e.g. for `specdec generate --trace`, or
    tests): `provider.add_span_processor(collector)`, then `collector.spans(trace_id)`.
    A provider cannot drop a processor, so `close()` only stops collecting."""

    def __init__(self):
        self._spans: list[ReadableSpan] = []
        self._lock = threading.Lock()
        self._open = True

    def on_end(self, span: ReadableSpan) -> None:
        if self._open:
            with self._lock:
                self._spans.append(span)

    def spans(self, trace_id: int | None = None) -> list[ReadableSpan]:
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.context.trace_id == trace_id]

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def close(self) -> None:
        self._open = False
        self.clear()

    def shutdown(self) -> None:
        self.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
