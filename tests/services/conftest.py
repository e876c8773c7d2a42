"""Fixtures of the service tests: one SDK TracerProvider for the whole test process
(OpenTelemetry allows one global provider), a collector on it, and the three services
in this process."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def span_collector():
    from specdec.telemetry.tracing import SpanCollector, setup_tracing

    collector = SpanCollector()
    setup_tracing("specdec-test").add_span_processor(collector)
    yield collector
    collector.close()


@pytest.fixture(scope="session")
def inprocess_stack(span_collector):
    """Draft worker, target worker and coordinator in this process, traced, metrics on HTTP."""
    from specdec.launch.inprocess import InProcessStack

    with InProcessStack(preset="tiny", seed=0, metrics_http=True) as stack:
        yield stack
