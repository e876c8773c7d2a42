"""Prometheus metrics: counters move by exactly a request's stats, failures by code,
the /metrics endpoints parse; the Grafana dashboard and the alert/recording rules use
only metrics that exist, and the rules pass promtool (check and a unit test)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from specdec.client import Client, InvalidRequestError
from specdec.telemetry.metrics import all_metric_names
from tests.helpers.paths import REPO
from tests.helpers.polling import wait_for

CHART = REPO / "helm" / "specdec"
PROMPT = "the cat sat"


def scrape(stack, role: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} from a service's /metrics over HTTP."""
    url = f"http://127.0.0.1:{stack.metrics_ports[role]}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def total(samples: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def test_counters_move_by_the_request_stats(inprocess_stack):
    before = {role: scrape(inprocess_stack, role) for role in ("coordinator", "draft", "target")}
    with Client(inprocess_stack.address, timeout=60.0) as client:
        stats = client.complete(PROMPT, max_new_tokens=30, ignore_eos=True, mode="sequential", policy="fixed").stats
    after = {role: scrape(inprocess_stack, role) for role in ("coordinator", "draft", "target")}

    def delta(service, name, **labels):
        return total(after[service], name, **labels) - total(before[service], name, **labels)

    spec = dict(mode="sequential", policy="fixed")
    assert delta("coordinator", "specdec:spec_decode_num_accepted_tokens_total", **spec) == stats.accepted_tokens
    assert delta("coordinator", "specdec:spec_decode_num_draft_tokens_total", **spec) == stats.draft_tokens
    assert delta("coordinator", "specdec:spec_decode_num_drafts_total", **spec) == stats.rounds
    assert delta("coordinator", "specdec:spec_decode_num_accepted_tokens_per_pos_total") == stats.accepted_tokens
    assert delta("coordinator", "specdec:generation_tokens_total") == stats.tokens == 30
    assert delta("coordinator", "specdec:prompt_tokens_total") == stats.prompt_tokens
    assert delta("coordinator", "specdec:request_success_total", finished_reason="length") == 1
    for histogram in ("time_to_first_token_seconds", "time_per_output_token_seconds", "e2e_request_latency_seconds"):
        assert delta("coordinator", f"specdec:{histogram}_count", mode="sequential") == 1, histogram
    assert delta("target", "specdec:worker_forward_latency_seconds_count", role="target") == stats.rounds
    assert delta("draft", "specdec:worker_forward_latency_seconds_count", role="draft") == stats.draft_tokens
    assert total(after["coordinator"], "specdec:num_requests_running") == 0


def test_policy_auto_shows_its_draft_lengths(inprocess_stack):
    before = scrape(inprocess_stack, "coordinator")
    with Client(inprocess_stack.address, timeout=60.0) as client:
        stats = client.complete(PROMPT, max_new_tokens=30, ignore_eos=True, mode="sequential", policy="auto").stats
    after = scrape(inprocess_stack, "coordinator")

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert stats.mode_run == "sequential" and 0 < sum(stats.auto_k_rounds.values()) <= stats.rounds
    assert delta("specdec:spec_decode_auto_k_count", mode="sequential") == stats.rounds
    assert delta("specdec:spec_decode_auto_k_sum", mode="sequential") == stats.draft_tokens


def test_failures_and_cancellations_are_counted(inprocess_stack):
    before = scrape(inprocess_stack, "coordinator")
    with Client(inprocess_stack.address, timeout=60.0) as client:
        with pytest.raises(InvalidRequestError):
            client.complete(PROMPT, max_new_tokens=0)
        stream = client.generate_stream(PROMPT, max_new_tokens=500, ignore_eos=True, mode="pearl")
        next(stream)
        stream.close()

    def moved():
        after = scrape(inprocess_stack, "coordinator")
        failed = total(after, "specdec:request_failure_total", code="INVALID_ARGUMENT") - total(
            before, "specdec:request_failure_total", code="INVALID_ARGUMENT")
        cancelled = total(after, "specdec:request_success_total", finished_reason="cancelled") - total(
            before, "specdec:request_success_total", finished_reason="cancelled")
        return (failed, cancelled) if (failed, cancelled) == (1, 1) else None

    assert wait_for(moved) == (1, 1)


def test_every_service_exposes_parseable_metrics(inprocess_stack):
    for role in ("coordinator", "draft", "target"):
        names = {name for name, _ in scrape(inprocess_stack, role)}
        assert "process_cpu_seconds_total" in names  # each service's own registry, with the process collector
        if role == "coordinator":
            assert {"specdec:num_requests_running", "specdec:num_requests_waiting"} <= names
        else:
            assert {"specdec:sessions", "specdec:session_evictions_total"} <= names
    registered = all_metric_names()
    for name in ("spec_decode_num_draft_tokens_total", "spec_decode_num_accepted_tokens_total",
                 "spec_decode_num_accepted_tokens_per_pos_total", "spec_decode_num_drafts_total",
                 "time_to_first_token_seconds_bucket", "time_per_output_token_seconds_bucket",
                 "e2e_request_latency_seconds_bucket", "request_success_total", "request_failure_total",
                 "generation_tokens_total", "prompt_tokens_total", "num_requests_running", "num_requests_waiting",
                 "sessions", "session_evictions_total", "worker_failovers_total", "draft_fallbacks_total",
                 "reprefills_total", "worker_forward_latency_seconds_bucket", "spec_decode_auto_k_bucket"):
        assert f"specdec:{name}" in registered, name


def _metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"specdec:[a-z0-9_:]+", expr))


def _rules() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra")
    return yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())


def test_dashboard_and_rules_query_only_existing_metrics():
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    rules = [r for g in _rules()["groups"] for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    known = all_metric_names() | recorded
    for expr in exprs + [r["expr"] for r in rules]:
        assert _metrics_in(expr) <= known, (expr, _metrics_in(expr) - known)
    assert {r["alert"] for r in rules if "alert" in r} >= {
        "SpecdecDraftNoLongerFitsTraffic", "SpecdecHighErrorRate", "SpecdecHighP95Latency"
    }


needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")


@needs_promtool
def test_promtool_checks_the_rules():
    out = subprocess.run(["promtool", "check", "rules", str(CHART / "files" / "prometheus-rules.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_acceptance_length_near_one_for_15_minutes_alerts(tmp_path):
    """promtool's rule unit test: drafts keep coming, nothing is accepted -> the alert fires
    after its 15 minutes, not before; a healthy tau does not alert."""
    yaml = pytest.importorskip("yaml")
    accepted, drafts, good = "specdec:spec_decode_num_accepted_tokens_total", "specdec:spec_decode_num_drafts_total", "0+40x60"
    labels = '{mode="pearl", policy="adaedl", namespace="ml"}'
    (alert,) = [r for g in _rules()["groups"] for r in g["rules"] if r.get("alert") == "SpecdecDraftNoLongerFitsTraffic"]
    other = '{mode="sequential", policy="fixed", namespace="ml"}'
    tests = {
        "rule_files": [str(CHART / "files" / "prometheus-rules.yaml")],
        "evaluation_interval": "30s",
        "tests": [{
            "interval": "30s",
            "input_series": [
                {"series": f"{accepted}{labels}", "values": "0+0x60"},  # nothing accepted
                {"series": f"{drafts}{labels}", "values": "0+20x60"},
                {"series": f"{accepted}{other}", "values": good},  # 2 accepted per round: tau 3
                {"series": f"{drafts}{other}", "values": "0+20x60"},
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "SpecdecDraftNoLongerFitsTraffic", "exp_alerts": []},
                {"eval_time": "25m", "alertname": "SpecdecDraftNoLongerFitsTraffic", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "mode": "pearl", "policy": "adaedl", "namespace": "ml"},
                    "exp_annotations": {"summary": "Mean acceptance length is 1.00 for pearl/adaedl",
                                        "description": alert["annotations"]["description"]},
                }]},
            ],
            "promql_expr_test": [{
                "expr": "specdec:mean_acceptance_length:rate5m", "eval_time": "10m",
                "exp_samples": [{"labels": f"specdec:mean_acceptance_length:rate5m{labels}", "value": 1},
                                {"labels": f"specdec:mean_acceptance_length:rate5m{other}", "value": 3}],
            }],
        }],
    }
    path = tmp_path / "rules-test.yaml"
    path.write_text(yaml.safe_dump(tests))
    out = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
