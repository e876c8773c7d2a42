"""Shared by the test_telemetry_* files: one SDK TracerProvider for the whole test
process (OpenTelemetry allows one global provider), a collector on it, and the three
services in this process."""

from __future__ import annotations

import time

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
    from coordinator.inprocess import InProcessStack

    with InProcessStack(preset="tiny", seed=0, metrics_http=True) as stack:
        yield stack


def wait_for(predicate, timeout_s: float = 10.0, every_s: float = 0.05):
    """Poll `predicate()` until it returns something truthy; returns it (or the last value)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)
