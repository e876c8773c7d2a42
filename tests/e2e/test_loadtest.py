"""The load generator (loadtest/): bounds, scenarios, the loopback guard and the report,
with a few tiny requests against the shared tiny stack."""

from __future__ import annotations

import asyncio
import json

import pytest

from loadtest.__main__ import main
from loadtest.report import markdown_table, percentile, plot, summarise, write_json
from loadtest.runner import run_plan
from loadtest.scenarios import (
    SHORT_PROMPTS,
    LoadPlan,
    Prompt,
    Scenario,
    check_loopback,
    interleave,
    load_prompts,
)


@pytest.mark.parametrize("address", ["127.0.0.1:50051", "localhost:1", "[::1]:50051", "127.0.0.2:9"])
def test_loopback_addresses_are_allowed(address):
    assert check_loopback(address) is None


@pytest.mark.parametrize("address", ["10.0.0.1:50051", "example.com:443", "0.0.0.0:50051", "[2001:db8::1]:1"])
def test_other_addresses_are_refused_unless_allowed(address):
    with pytest.raises(ValueError, match="--allow-remote"):
        check_loopback(address)
    assert "warning" in check_loopback(address, allow_remote=True)


def test_the_cli_refuses_a_remote_address_before_sending_anything(capsys):
    assert main(["--address", "192.0.2.1:50051", "--requests", "1"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_prompt_mix_and_ramp_offsets():
    prompts = load_prompts(kinds=("code", "prose"))
    assert {p.kind for p in prompts} == {"code", "prose"}
    assert [p.kind for p in interleave(prompts)][:4] == ["code", "prose", "code", "prose"]
    with pytest.raises(ValueError, match="kind"):
        load_prompts(kinds=("poetry",))
    short = load_prompts(SHORT_PROMPTS)  # the decode-heavy set (--prompts short)
    assert {p.kind for p in short} == {"code", "prose", "maths"} and max(len(p.text) for p in short) <= 40
    ramp = LoadPlan(scenario=Scenario.RAMP, clients=4, duration_s=8.0)
    assert [ramp.start_offset(c) for c in range(4)] == [0.0, 1.0, 2.0, 3.0]
    assert LoadPlan(clients=4).start_offset(3) == 0.0
    with pytest.raises(ValueError, match="requests"):
        LoadPlan(requests=0)


def test_percentiles_interpolate():
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(range(101), 95) == 95


@pytest.mark.parametrize("scenario,stream", [(Scenario.BURST, True), (Scenario.RAMP, False), (Scenario.STEADY, True)])
def test_a_bounded_run_records_every_request(tiny_stack, tmp_path, scenario, stream):
    plan = LoadPlan(
        scenario=scenario, clients=3, requests=5, duration_s=20.0, drain_s=20.0, ramp_s=0.2, stream=stream,
        params=dict(max_new_tokens=6, ignore_eos=True, mode="pearl"), warmup=0,
    )
    result = asyncio.run(run_plan(tiny_stack.address, plan, [Prompt("code", "def f(x):"), Prompt("prose", "Once")]))
    assert len(result.records) == 5 and all(r.ok for r in result.records), [r.message for r in result.records]
    assert all(r.tokens == 6 and r.ttft_s is not None and r.stats["tokens"] == 6 for r in result.records)
    summary = summarise(result)
    assert summary["ok"] == 5 and summary["errors"] == {} and summary["tokens"] == 30
    assert summary["requests_per_s"] > 0 and summary["latency_s"]["p99"] >= summary["latency_s"]["p50"]
    assert summary["tau"] >= 1.0 and 0.0 <= summary["acceptance_rate"] <= 1.0
    assert summary["modes_run"] == {"pearl": 5}
    assert summary["auto_k_rounds"] and all(k >= 1 for k in summary["auto_k_rounds"])  # the default policy, auto
    if scenario is Scenario.BURST:
        assert summary["max_in_flight"] == 3  # waves of 3 sent at once
    assert "| " + scenario.value in markdown_table([summary])
    write_json(tmp_path / "run.json", [result], {"date": "now"})
    saved = json.loads((tmp_path / "run.json").read_text())
    assert len(saved["runs"][0]["records"]) == 5
    plot(tmp_path / "run.png", [summary], title="tiny")
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_are_counted_by_status_code(tiny_stack):
    plan = LoadPlan(clients=2, requests=4, duration_s=20.0, params=dict(max_new_tokens=0), warmup=0)
    summary = summarise(asyncio.run(run_plan(tiny_stack.address, plan, [Prompt("code", "x")])))
    assert summary["ok"] == 0 and summary["errors"] == {"INVALID_ARGUMENT": 4}


def _summary(clients: int, tok_s: float, tpot_p50: float, tpot_p95: float, ok: int = 4, overruns: int = 0) -> dict:
    return {"clients": clients, "tokens_per_s": tok_s, "requests_per_s": tok_s / 32, "ok": ok, "requests": 4,
            "tpot_s": {"p50": tpot_p50, "p95": tpot_p95}, "overruns": {"overruns": overruns, "forwards": 100}}


def test_sweep_configurations_parse_or_say_what_is_wrong():
    from loadtest.capacity import parse_configs

    configs = parse_configs("autoregressive, sequential:fixed:4,pearl:adaedl,auto")
    assert [c.name for c in configs] == ["autoregressive", "sequential fixed:4", "pearl adaedl", "auto"]
    assert configs[1].params == {"mode": "sequential", "policy": "fixed", "draft_length": 4}
    assert configs[3].params == {"mode": "auto", "policy": "auto"} and configs[3].is_auto
    assert configs[0].is_target_alone and not configs[1].is_auto
    for bad, message in (("warp", "unknown mode"), ("sequential:magic", "unknown policy"),
                         ("sequential:fixed:x", "a number"), ("auto,auto", "twice"), ("", "at least one")):
        with pytest.raises(ValueError, match=message):
            parse_configs(bad)


def test_the_cli_refuses_a_bad_sweep_before_starting_anything(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--stack", "tiny", "--sweep", "sequential:nope"])
    assert exited.value.code == 2 and "unknown policy 'nope'" in capsys.readouterr().err


def test_capacity_is_the_highest_rate_within_the_goal(tmp_path):
    """The goal: 2 x the target alone's single-request TPOT (p50, 40 ms) = 80 ms at p95."""
    from loadtest.capacity import analyse, markdown, parse_configs, plot as plot_capacity

    configs = parse_configs("autoregressive,sequential:fixed:4,auto")
    summaries = {
        "autoregressive": [_summary(1, 25, 0.040, 0.045), _summary(16, 300, 0.060, 0.070), _summary(32, 330, 0.1, 0.2)],
        "sequential fixed:4": [_summary(1, 50, 0.020, 0.030), _summary(16, 280, 0.070, 0.090),
                               _summary(32, 250, 0.1, 0.3)],
        "auto": [_summary(1, 48, 0.021, 0.031), _summary(16, 310, 0.055, 0.075, overruns=3),
                 _summary(32, 340, 0.09, 0.2, ok=3)],
    }
    summaries["auto"][2] |= {"modes_run": {"sequential": 3}, "auto_k_rounds": {0: 40, 1: 7}}
    summaries["autoregressive"][1]["sessions_per_target_forward"] = 7.5
    summaries["autoregressive"][1]["ttft_s"] = {"p50": 0.5, "p95": 1.25}
    analysis = analyse(configs, summaries)
    assert analysis["goal_tpot_p95_s"] == pytest.approx(0.080)
    rows = analysis["configs"]
    assert rows["autoregressive"]["capacity_clients"] == 16 and rows["sequential fixed:4"]["capacity_clients"] == 1
    assert rows["auto"]["capacity_requests_per_s"] == pytest.approx(310 / 32)  # 32 clients: a request failed
    assert analysis["capacity_ranking"] == ["auto", "autoregressive", "sequential fixed:4"]
    at = {e["clients"]: e for e in analysis["by_clients"]}
    assert at[1]["best_static_sd"] == "sequential fixed:4" and at[1]["auto_vs_best_rival"]["auto"] == pytest.approx(0.96)
    assert at[16]["auto_vs_best_rival"]["auto"] == pytest.approx(310 / 300)
    table = markdown(analysis)
    assert "goal: TPOT p95 <= 2 x" in table and "(3 overruns)" in table and "90 ✗" in table
    assert "| 32 | auto | sequential 3; k=0: 40, k=1: 7 |" in table and "| 1 | auto | - |" not in table
    assert "| 16 | autoregressive | 7.5 sessions per target forward |" in table
    assert "| 300.0, 70, 1.2 |" in table  # tok/s, TPOT p95 in ms, TTFT p95 in s
    plot_capacity(tmp_path / "capacity.png", analysis, "tiny")
    assert (tmp_path / "capacity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.full
def test_a_capacity_sweep_through_a_batching_stack(tmp_path):
    """The sweep end to end: a stack under gpu-batch with --max-batch, two configurations at
    two levels; the workers' overrun counters come back per level."""
    out = tmp_path / "capacity.json"
    code = main([
        "--stack", "tiny", "--cost-profile", "gpu-batch", "--max-batch", "4", "--clients", "1,2",
        "--sweep", "autoregressive,auto", "--max-new-tokens", "4", "--requests", "2", "--json", str(out),
    ])
    assert code == 0
    saved = json.loads(out.read_text())
    assert set(saved["capacity"]["configs"]) == {"autoregressive", "auto"}
    assert len(saved["runs"]) == 4 and all(r["summary"]["ok"] == r["summary"]["requests"] for r in saved["runs"])
    assert all(r["summary"]["overruns"]["forwards"] > 0 for r in saved["runs"])
    assert all(0 < r["summary"]["sessions_per_target_forward"] <= 4 for r in saved["runs"])  # --max-batch 4
    assert saved["capacity"]["goal_tpot_p95_s"] > 0
