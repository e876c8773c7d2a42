"""What every service is told about observability: one frozen value, from flags and env."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TelemetryConfig:
    otlp_endpoint: str | None = None  # OTLP gRPC collector, e.g. http://127.0.0.1:4317; None: no span export
    metrics_port: int = 0  # Prometheus /metrics HTTP port; 0: not served (metrics are still counted)

    def __post_init__(self):
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be in 0..65535 (0 = off), got {self.metrics_port}")
