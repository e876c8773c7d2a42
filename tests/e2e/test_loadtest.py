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
