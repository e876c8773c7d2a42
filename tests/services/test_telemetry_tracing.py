"""Tracing end to end, in one process: a request through the client SDK, the
coordinator and both workers (grpc.aio servers on one loop) is ONE trace whose spans
link client -> coordinator -> request -> rounds -> phases -> worker calls, with the
spec-decode attributes; the core's spans alone (embedded engine); `generate --trace`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry.trace import SpanKind

from specdec.client import Client
from specdec.telemetry import spans as names
from tests.helpers.polling import wait_for

PROMPT = "the cat sat"


def _request_trace(collector, stack, **params):
    """Send one Complete; return (completion, spans of its trace once the servers' spans ended)."""
    collector.clear()
    with Client(stack.address, timeout=60.0) as client:
        completion = client.complete(PROMPT, max_new_tokens=24, ignore_eos=True, **params)

    def finished():
        got = collector.spans()
        servers = [s for s in got if s.kind is SpanKind.SERVER and s.name.endswith("Release")]
        return got if len(servers) == 2 else None  # the sessions' releases on both workers end a request

    got = wait_for(finished)
    assert got, f"spans never completed: {sorted({s.name for s in collector.spans()})}"
    return completion, got


def _one(found, name, kind=None):
    hits = [s for s in found if s.name == name and (kind is None or s.kind is kind)]
    assert len(hits) == 1, (name, kind, len(hits))
    return hits[0]


def _parent(span, by_id):
    return by_id.get(span.parent.span_id) if span.parent is not None else None


def test_one_trace_from_client_to_both_workers(span_collector, inprocess_stack):
    completion, got = _request_trace(span_collector, inprocess_stack, mode="sequential", policy="fixed")
    stats = completion.stats
    assert len({s.context.trace_id for s in got}) == 1, "one request, one trace"
    by_id = {s.context.span_id: s for s in got}

    client = _one(got, "/specdec.v1.Coordinator/Complete", SpanKind.CLIENT)
    server = _one(got, "/specdec.v1.Coordinator/Complete", SpanKind.SERVER)
    request = _one(got, "specdec.request")
    assert client.parent is None and _parent(server, by_id) is client and _parent(request, by_id) is server
    a = request.attributes
    assert (a[names.MODE], a[names.POLICY], a[names.ROUNDS]) == ("sequential", "fixed", stats.rounds)
    assert (a[names.ACCEPTED_TOKENS], a[names.DRAFT_TOKENS]) == (stats.accepted_tokens, stats.draft_tokens)
    session = a[names.SESSION]

    rounds = sorted((s for s in got if s.name == "specdec.round"), key=lambda s: s.attributes[names.ROUND])
    assert [r.attributes[names.ROUND] for r in rounds] == list(range(1, stats.rounds + 1))
    assert all(_parent(r, by_id) is request and r.attributes[names.SESSION] == session for r in rounds)
    assert sum(r.attributes[names.ACCEPTED_TOKENS] for r in rounds) == stats.accepted_tokens
    assert sum(r.attributes[names.DRAFT_TOKENS] for r in rounds) == stats.draft_tokens
    for r in rounds:
        ra = r.attributes
        assert ra[names.RECOVERED] != ra[names.BONUS] and ra[names.TAU] >= 1.0  # a drafted round ends in one of them
        assert ra[names.BONUS] == (ra[names.ACCEPTED_TOKENS] == ra[names.DRAFT_TOKENS])
    assert rounds[-1].attributes[names.TAU] == pytest.approx(stats.mean_acceptance_length)

    # every round's worker work hangs under its phase span: the session streams carry the
    # round's context in each message, and each worker opens a server span per round
    for name, phase in (("specdec.worker.draft", "specdec.draft"), ("specdec.worker.verify", "specdec.verify")):
        servers = [s for s in got if s.name == name]
        assert len(servers) >= stats.rounds - 1 and all(s.kind is SpanKind.SERVER for s in servers)
        for s in servers:
            assert _parent(s, by_id).name == phase and _parent(_parent(s, by_id), by_id) in rounds
            assert s.attributes[names.SESSION] != ""  # the worker's bound id, not the caller's
    verifies = [s for s in got if s.name == "specdec.worker.verify"]
    assert sum(s.attributes[names.ACCEPTED_TOKENS] for s in verifies) == stats.accepted_tokens
    # one stream per worker for the whole request, opened inside the first round
    for rpc in ("/specdec.v1.DraftWorker/DraftStream", "/specdec.v1.TargetWorker/VerifyStream"):
        assert len([s for s in got if s.name == rpc and s.kind is SpanKind.CLIENT]) == 1
    assert {s.name for s in got if _parent(s, by_id) is request} == {"specdec.round"} | {
        s.name for s in got if s.name.endswith("Release") and s.kind is SpanKind.CLIENT
    }


def test_pearl_rounds_are_pre_and_post_verify(span_collector, inprocess_stack):
    completion, got = _request_trace(span_collector, inprocess_stack, mode="pearl", draft_length=3)
    by_id = {s.context.span_id: s for s in got}
    request = _one(got, "specdec.request")
    rounds = [s for s in got if s.name == "specdec.round"]
    verifies = [s for s in got if s.attributes.get(names.PHASE) in (names.PRE_VERIFY, names.POST_VERIFY)]
    passes = [v for v in verifies if not v.attributes.get(names.KEPT_ROW_ONLY)]  # the others ran no pass
    assert len(rounds) == len(verifies) and len(passes) == completion.stats.rounds
    assert all(_parent(v, by_id) in rounds for v in verifies)
    assert any(v.attributes[names.PHASE] == names.PRE_VERIFY for v in verifies)  # post-verify: next test
    assert verifies[0].attributes[names.PHASE] == names.PRE_VERIFY  # the prompt's pass starts at once
    assert request.attributes[names.DRAFT_LENGTH] == 3
    drafts = [s for s in got if s.name == "specdec.draft"]
    assert drafts and all(_parent(d, by_id) is request for d in drafts)  # streams overlap rounds
    assert sum(d.attributes[names.DRAFT_TOKENS] for d in drafts) >= completion.stats.draft_tokens
    # every rejection (a round ending in a recovered token) rolls back once, under the request
    rollbacks = [s for s in got if s.name == "specdec.rollback"]
    rejected = [r for r in rounds if r.attributes[names.RECOVERED]]
    assert rejected and len(rollbacks) == len(rejected)
    for rollback in rollbacks:
        assert _parent(rollback, by_id) is request and names.DISCARDED_TOKENS in rollback.attributes


def test_pearl_post_verifies_while_the_draft_goes_on(span_collector):
    """With a target pass 20x a draft step (emulated), the draft has the next window ready
    whenever a pre-verify accepts: those windows are verified in the post-verify phase."""
    from specdec import Engine
    from specdec.runtime.cost import CostProfile

    engine = Engine.from_preset("tiny", seed=0, cost=CostProfile("test-20x", target_ms=20.0, draft_ms=1.0))
    span_collector.clear()
    result = engine.generate(PROMPT, max_new_tokens=24, mode="pearl", policy="fixed", draft_length=3, ignore_eos=True)
    got = [s for s in span_collector.spans() if s.name.startswith("specdec.")]
    phases = [s.attributes.get(names.PHASE) for s in got if not s.attributes.get(names.KEPT_ROW_ONLY)]
    assert phases.count(names.PRE_VERIFY) + phases.count(names.POST_VERIFY) == result.stats.rounds
    assert names.POST_VERIFY in phases and names.PRE_VERIFY in phases


def test_pearl_without_a_draft_length_runs_the_measured_window(span_collector, inprocess_stack):
    """The coordinator sets PEARL's default window from its workers' measured speed ratio."""
    from specdec.core.speed import SpeedRatio

    speed = SpeedRatio()
    for _ in range(64):  # as if drafting a token took 10 ms and a verification pass 70 ms
        speed.observe_draft_step(0.010)
        speed.observe_target_pass(0.070)
    inprocess_stack.workers.speed = speed
    _, got = _request_trace(span_collector, inprocess_stack, mode="pearl", policy="fixed")
    assert _one(got, "specdec.request").attributes[names.DRAFT_LENGTH] == 7
    _, got = _request_trace(span_collector, inprocess_stack, mode="sequential", policy="fixed")
    assert _one(got, "specdec.request").attributes[names.DRAFT_LENGTH] == 4  # other modes: the default k


def test_embedded_engine_traces_the_core_alone(span_collector):
    from specdec import Engine

    span_collector.clear()
    result = Engine.from_preset("tiny", seed=0).generate(PROMPT, max_new_tokens=12, mode="sequential", policy="fixed", ignore_eos=True)
    request = _one(span_collector.spans(), "specdec.request")
    # only this request's trace: a server span of an earlier test's cancelled PEARL draft
    # stream may end after clear()
    got = [s for s in span_collector.spans() if s.context.trace_id == request.context.trace_id]
    assert {s.name for s in got} == {"specdec.request", "specdec.round", "specdec.draft", "specdec.verify"}
    assert len([s for s in got if s.name == "specdec.round"]) == result.stats.rounds


def test_gsd_draft_spans_say_what_merging_saved(span_collector):
    from specdec import Engine

    span_collector.clear()
    result = Engine.from_preset("tiny", seed=0).generate(
        "the the the the", max_new_tokens=24, mode="gsd", ignore_eos=True, tree_width=4, tree_nodes=48,
        sibling_threshold=0.0, prob_threshold=0.0, merge_context=0,
    )
    request = _one(span_collector.spans(), "specdec.request")
    drafts = [s for s in span_collector.spans() if s.context.trace_id == request.context.trace_id
              and s.name == "specdec.draft"]
    assert len(drafts) == result.stats.rounds
    for key, total in [(names.MERGED_NODES, result.stats.merged_nodes), (names.SAVED_ROWS, result.stats.saved_rows),
                       (names.SAVED_FORWARDS, result.stats.saved_forwards), (names.DAG_NODES, result.stats.dag_nodes)]:
        assert sum(s.attributes[key] for s in drafts) == total
    assert result.stats.merged_nodes > 0 and result.stats.saved_rows > 0  # this shape merges: not vacuous


def test_generate_trace_prints_the_span_tree(inprocess_stack):
    from typer.testing import CliRunner

    from specdec.cli import app

    embedded = CliRunner().invoke(app, ["generate", "--preset", "tiny", "--max-new-tokens", "8", "--trace", PROMPT])
    assert embedded.exit_code == 0, embedded.output
    out = embedded.output + (embedded.stderr if embedded.stderr_bytes is not None else "")
    assert "specdec.request" in out and "specdec.round" in out and "where the time went" in out
    remote = CliRunner().invoke(
        app, ["generate", "--address", inprocess_stack.address, "--max-new-tokens", "8", "--mode", "pearl", "--trace", PROMPT]
    )
    assert remote.exit_code == 0, remote.output
    out = remote.output + (remote.stderr if remote.stderr_bytes is not None else "")
    assert "/specdec.v1.Coordinator/Generate [client]" in out and "look up trace" in out


def test_the_telemetry_modules_load_without_grpc_or_torch():
    """The telemetry modules load without grpc or torch (OTLP export loads on demand).
    The static layer rules are tests/core/test_layers.py."""
    code = (
        "import sys, specdec.telemetry.spans, specdec.telemetry.tracing, specdec.telemetry.metrics, "
        "specdec.telemetry.view; print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
