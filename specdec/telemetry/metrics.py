"""Prometheus metrics, named as vLLM names its own (prefix `specdec:`), one
CollectorRegistry per service so that several services in one process never clash.

Terms as in docs/algorithms.md: a *draft* (vLLM's word) is one round, i.e. one target
verification pass; `1 + accepted / drafts` is the mean acceptance length (tau).
Labels stay bounded: mode (4 values), policy (4), finished_reason (3), code (gRPC
status names), role (draft | target), position (0..MAX_POSITION).

The coordinator records requests (CoordinatorMetrics; the per-round counters through
MeteredTarget, which wraps any TargetEndpoint); workers their sessions and forward
latency (WorkerMetrics). `serve_metrics` exposes a registry on an HTTP port.
"""

from __future__ import annotations

import logging

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

MAX_POSITION = 15  # per-position acceptance for draft positions 0..15 (drafts are at most 64 long)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
E2E_BUCKETS = (0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 120.0, 240.0, 480.0)
AUTO_K_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 12, 16, 32)
FORWARD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SPEC_LABELS = ("mode", "policy")


def new_registry(process: bool = True) -> CollectorRegistry:
    """A registry of one service; with the process_* and python_* collectors."""
    registry = CollectorRegistry()
    if process:
        from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


class CoordinatorMetrics:
    """What the coordinator counts: requests, latencies, spec-decode rounds, degradations."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry if registry is not None else new_registry()
        self.draft_tokens = Counter(
            "specdec:spec_decode_num_draft_tokens", "Draft tokens sent to the target for verification.",
            SPEC_LABELS, registry=r)
        self.accepted_tokens = Counter(
            "specdec:spec_decode_num_accepted_tokens", "Draft tokens the target accepted.", SPEC_LABELS, registry=r)
        self.accepted_per_pos = Counter(
            "specdec:spec_decode_num_accepted_tokens_per_pos",
            f"Accepted draft tokens by position in the draft (0-based; {MAX_POSITION} also counts deeper ones).",
            ("position",), registry=r)
        self.drafts = Counter(
            "specdec:spec_decode_num_drafts", "Rounds: target verification passes (with or without draft tokens).",
            SPEC_LABELS, registry=r)
        self.auto_k = Histogram(
            "specdec:spec_decode_auto_k",
            "Policy auto: draft tokens per verification pass (0: the round ran the target alone).",
            ("mode",), buckets=AUTO_K_BUCKETS, registry=r)
        self.ttft = Histogram(
            "specdec:time_to_first_token_seconds", "Request arrival to its first token, at the coordinator.",
            ("mode",), buckets=TTFT_BUCKETS, registry=r)
        self.tpot = Histogram(
            "specdec:time_per_output_token_seconds", "Mean time per output token after the first, per request.",
            ("mode",), buckets=TPOT_BUCKETS, registry=r)
        self.e2e = Histogram(
            "specdec:e2e_request_latency_seconds", "Request arrival to its last response.",
            ("mode",), buckets=E2E_BUCKETS, registry=r)
        self.success = Counter(
            "specdec:request_success", "Requests finished, by finish reason (stop, length, cancelled by the client).",
            ("finished_reason",), registry=r)
        self.failure = Counter(
            "specdec:request_failure", "Requests that failed, by gRPC status code.", ("code",), registry=r)
        self.generation_tokens = Counter("specdec:generation_tokens", "Tokens generated (returned).", registry=r)
        self.prompt_tokens = Counter("specdec:prompt_tokens", "Prompt tokens of requests.", registry=r)
        self.running = Gauge("specdec:num_requests_running", "Requests being generated now.", registry=r)
        self.waiting = Gauge(
            "specdec:num_requests_waiting",
            "Requests received but not running yet (being parsed; over the limit is RESOURCE_EXHAUSTED, no queue).",
            registry=r)
        self.worker_failovers = Counter(
            "specdec:worker_failovers", "Target calls retried because their worker was gone (next replica or again).",
            registry=r)
        self.draft_fallbacks = Counter(
            "specdec:draft_fallbacks", "Requests that lost their draft worker and went on target-only.", registry=r)
        self.reprefills = Counter(
            "specdec:reprefills", "Worker sessions rebuilt from the coordinator's history.", registry=r)

    def observe_round(self, mode: str, policy: str, drafted: int, accepted: int) -> None:
        """One verification pass: `accepted` of `drafted` draft tokens kept (a prefix)."""
        self.drafts.labels(mode, policy).inc()
        if policy == "auto":
            self.auto_k.labels(mode).observe(drafted)
        if drafted:
            self.draft_tokens.labels(mode, policy).inc(drafted)
        if accepted:
            self.accepted_tokens.labels(mode, policy).inc(accepted)
            for position in range(min(accepted, MAX_POSITION + 1)):
                self.accepted_per_pos.labels(str(position)).inc()
            if accepted > MAX_POSITION + 1:
                self.accepted_per_pos.labels(str(MAX_POSITION)).inc(accepted - MAX_POSITION - 1)

    def meter(self, target, request) -> "MeteredTarget":
        """`target` (a TargetEndpoint) counting the rounds of `request` (a GenerationRequest)."""
        return MeteredTarget(target, self, request.mode.value, request.policy)


class MeteredTarget:
    """A TargetEndpoint that counts every round into CoordinatorMetrics, and on release
    the failovers of the endpoint it wraps (coordinator.remote.RemoteTarget has them)."""

    def __init__(self, inner, metrics: CoordinatorMetrics, mode: str, policy: str):
        self.inner, self.metrics, self.mode, self.policy = inner, metrics, mode, policy

    async def verify(self, session_id, committed, draft, proposals, params, seed):
        v = await self.inner.verify(session_id, committed, draft, proposals, params, seed)
        self.metrics.observe_round(self.mode, self.policy, len(draft), v.verdict.accepted)
        return v

    async def verify_tree(self, session_id, committed, tree, params, seed):
        v = await self.inner.verify_tree(session_id, committed, tree, params, seed)
        self.metrics.observe_round(self.mode, self.policy, len(tree), v.verdict.accepted)
        return v

    async def release(self, session_id: str) -> None:
        failovers = getattr(self.inner, "failovers", 0)
        if failovers:
            self.metrics.worker_failovers.inc(failovers)
        await self.inner.release(session_id)


class WorkerMetrics:
    """What a worker counts: sessions held (read at scrape time), evictions, forward latency."""

    def __init__(self, role: str, sessions=None, registry: CollectorRegistry | None = None):
        """`sessions`: the worker's specdec.backend.sessions.SessionStore (len() and .evictions)."""
        r = self.registry = registry if registry is not None else new_registry()
        self.role = role
        self.forward = Histogram(
            "specdec:worker_forward_latency_seconds",
            "Model compute per call: one draft token (draft worker) or one verification pass (target worker).",
            ("role",), buckets=FORWARD_BUCKETS, registry=r).labels(role)
        if sessions is not None:
            r.register(_SessionCollector(role, sessions))


class _SessionCollector(Collector):
    """specdec:sessions and specdec:session_evictions_total, read from a SessionStore."""

    def __init__(self, role: str, sessions):
        self.role, self.sessions = role, sessions

    def collect(self):
        held = GaugeMetricFamily("specdec:sessions", "KV-cache sessions held by the worker.", labels=["role"])
        held.add_metric([self.role], len(self.sessions))
        evictions = CounterMetricFamily(
            "specdec:session_evictions", "Sessions dropped by the TTL or the session bound (recoverable).",
            labels=["role"])
        evictions.add_metric([self.role], self.sessions.evictions)
        return [held, evictions]


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "127.0.0.1"):
    """Serve `registry` as Prometheus text on http://host:port/metrics (a daemon thread);
    returns the server (call .shutdown() to stop), or None when port is 0."""
    if not port:
        return None
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {host}:{port}: {exc} (is the port taken? --metrics-port)") from None
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server


def metric_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry exposes, including families with no labelled child
    yet (counters: _total; histograms: _bucket, _sum, _count)."""
    names = set()
    for family in registry.collect():
        names |= {sample.name for sample in family.samples}
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def all_metric_names() -> set[str]:
    """The names of every specdec metric (coordinator and workers), for dashboards and rules."""

    class _NoSessions:
        evictions = 0

        def __len__(self):
            return 0

    registry = CollectorRegistry()
    CoordinatorMetrics(registry)
    WorkerMetrics("draft", _NoSessions(), registry)
    return {name for name in metric_names(registry) if name.startswith("specdec:")}
