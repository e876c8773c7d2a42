"""Observability shared by the services and the embedded engine, transport-free.

- `spans`: the span and attribute names of a request (core code opens spans through
  the OpenTelemetry API, a no-op until an SDK TracerProvider is installed).
- `tracing`: `setup_tracing` (SDK provider, OTLP export), `SpanCollector` (in-process).
- `metrics`: the Prometheus metrics (vLLM-style names, prefix `specdec:`), one
  CollectorRegistry per service, and the `/metrics` HTTP server.
- `view`: a span tree as text (`specdec generate --trace`).
- `config`: `TelemetryConfig`, the flags every service shares.

The gRPC side (interceptors) lives in specdec/rpc/telemetry.py and specdec/client/tracing.py.
"""
