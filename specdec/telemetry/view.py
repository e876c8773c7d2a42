"""A trace as text: the span tree with start offsets and durations, then where the time
went by span name. For `specdec generate --trace` (spans from a SpanCollector)."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from opentelemetry.sdk.trace import ReadableSpan

# attributes shown next to a span, in this order, without the "specdec." prefix
SHOWN = (
    "mode", "policy", "draft_length", "prompt_tokens", "tokens", "round", "draft_tokens", "accepted_tokens",
    "recovered", "bonus", "tau", "rounds", "acceptance_rate", "discarded_tokens", "cancelled", "worker", "start",
    "new_tokens", "finish_reason",
)


def format_trace(spans: Sequence[ReadableSpan], max_children: int = 10) -> str:
    """The span tree of `spans` (any traces; spans whose parent is absent are roots);
    runs of more than `max_children` siblings show their first and last ones."""
    if not spans:
        return "(no spans recorded)"
    by_id = {s.context.span_id: s for s in spans}
    children = defaultdict(list)
    roots = []
    for s in sorted(spans, key=lambda s: s.start_time):
        parent = s.parent.span_id if s.parent is not None else None
        (children[parent] if parent in by_id else roots).append(s)
    t0 = min(s.start_time for s in spans)
    lines = [f"{'start':>9} {'duration':>10}  span"]

    def walk(span: ReadableSpan, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        lines.append(f"{_ms(span.start_time - t0):>9} {_ms(span.end_time - span.start_time):>10}  "
                     f"{prefix}{branch}{_label(span)}")
        kids = children[span.context.span_id]
        shown = kids if len(kids) <= max_children else kids[: max_children - 2] + [None] + kids[-2:]
        inner = prefix + ("" if top else ("   " if last else "│  "))
        for i, kid in enumerate(shown):
            if kid is None:
                lines.append(f"{'':>9} {'':>10}  {inner}├─ … {len(kids) - max_children + 1} more")
                continue
            walk(kid, inner, i == len(shown) - 1, False)

    for root in roots:
        walk(root, "", True, True)
    return "\n".join(lines + ["", summarize(spans)])


def summarize(spans: Sequence[ReadableSpan]) -> str:
    """Total duration per span name (spans nest, so shares overlap), longest first."""
    totals: dict[str, list] = defaultdict(lambda: [0, 0])
    for s in spans:
        totals[s.name][0] += 1
        totals[s.name][1] += s.end_time - s.start_time
    wall = max(s.end_time for s in spans) - min(s.start_time for s in spans)
    lines = [f"where the time went ({_ms(wall)} wall; nested spans overlap):"]
    for name, (count, total) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"  {name:<36} {count:>5} x {_ms(total / count):>9} = {_ms(total):>10}")
    return "\n".join(lines)


def _label(span: ReadableSpan) -> str:
    attrs = span.attributes or {}
    shown = []
    for key in SHOWN:
        value = attrs.get(f"specdec.{key}")
        if value is None or (key in ("mode", "policy") and span.name != "specdec.request"):
            continue
        if isinstance(value, float):
            value = f"{value:.2f}"
        shown.append(f"{key}={value}")
    code = attrs.get("rpc.grpc.status_code")
    if code:  # 0 is OK
        shown.append(f"grpc_status={code}")
    kind = span.kind.name.lower()
    tag = f" [{kind}]" if kind in ("client", "server") else ""
    return f"{span.name}{tag}" + (f"  {' '.join(shown)}" if shown else "")


def _ms(ns: int | float) -> str:
    return f"{ns / 1e6:.1f}ms"


def collect_spans():
    """Install tracing in this process (service specdec-client; also exported when
    OTEL_EXPORTER_OTLP_ENDPOINT is set) and a SpanCollector on it."""
    import os

    from specdec.telemetry.tracing import CLIENT, SpanCollector, setup_tracing

    collector = SpanCollector()
    setup_tracing(CLIENT, os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None).add_span_processor(collector)
    return collector


def trace_report(collector, stats: dict, remote: bool) -> str:
    """What `specdec generate --trace` prints after the stats line."""
    spans = collector.spans()
    collector.close()
    out = ["", format_trace(spans)]
    if remote:
        trace_ids = sorted({f"{s.context.trace_id:032x}" for s in spans})
        split = ", ".join(
            f"{name} {stats.get(key, 0.0) * 1000:.1f}ms" for name, key in (
                ("draft compute", "draft_compute_s"), ("target compute", "target_compute_s"),
                ("network", "network_s"), ("critical path compute", "critical_compute_s"), ("wall", "wall_s"))
        )
        out += [
            "",
            f"server-side time split (response stats): {split}",
            "The coordinator's and workers' spans live in their processes: start them with --otlp-endpoint "
            f"(or OTEL_EXPORTER_OTLP_ENDPOINT) and look up trace {', '.join(trace_ids)} in Jaeger/Tempo.",
        ]
    return "\n".join(out)
