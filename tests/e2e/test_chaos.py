"""The chaos scenario (loadtest/chaos.py), small: 8 streams of every kind (sequential, PEARL,
GSD; greedy and sampled) against 2 draft and 2 target replicas, real processes on
127.0.0.1; a target and a draft replica SIGKILLed mid-run, the target restarted. No
request may be lost or fail, every greedy output must be the target alone's, and the
restarted replica must serve again. (`make loadtest-chaos`: 32 streams, BENCHMARKS.md §12.)

The report's checks are tested first on made-up records, so a comparison that always
said "identical", or phases that dropped a request, would fail here.
"""

from __future__ import annotations

import json
import shutil

import pytest

import loadtest.chaos as chaos
from loadtest.__main__ import chaos_plan, main, parser
from loadtest.chaos import COMPLETED, FAILED, LOST, ChaosPlan, ChaosRecord, ChaosResult, Events
from loadtest.chaos_report import greedy_verdict, phase_of, summarise
from tests.e2e.test_make_targets import make_commands
from tests.helpers.paths import REPO

REFERENCE = {"p": (1, 2, 3, 4)}


def _record(started: float, ended: float, tokens=(1, 2, 3, 4), outcome=COMPLETED, sampled=False,
            code="") -> ChaosRecord:
    kind = "sequential sampled" if sampled else "sequential greedy"
    return ChaosRecord(0, kind, "sequential", sampled, "p", 7 if sampled else None, started, ended, outcome, code,
                       token_ids=list(tokens), finish_reason="length" if outcome == COMPLETED else None)


def _result(records, events=None) -> ChaosResult:
    events = events or Events(kill_s=10.0, restart_s=12.0, serving_s=18.0, settled_s=20.0, rejoined_sessions=2)
    plan = ChaosPlan(clients=1, requests=10, duration_s=30.0, kill_at_s=10.0, restart_at_s=12.0)
    return ChaosResult(plan, events, records, REFERENCE, 30.0, {})


def test_every_request_is_in_exactly_the_phase_its_time_says():
    events = Events(kill_s=10.0, settled_s=20.0)
    cases = {
        (0.0, 9.9): "before",  # ended before the kill
        (5.0, 10.5): "during",  # in flight at the kill
        (12.0, 15.0): "during",  # between the kill and settled
        (19.0, 25.0): "during",  # started before settled
        (20.0, 22.0): "after",
    }
    for (started, ended), phase in cases.items():
        assert phase_of(_record(started, ended), events) == phase, (started, ended)
    assert phase_of(_record(40.0, 41.0), Events()) == "before"  # no kill happened: nothing is "during"


def test_a_wrong_greedy_token_is_caught_whatever_the_outcome():
    assert greedy_verdict(_record(0, 1), REFERENCE) is True
    assert greedy_verdict(_record(0, 1, tokens=(1, 2, 3, 5)), REFERENCE) is False
    assert greedy_verdict(_record(0, 1, tokens=(1, 2, 3)), REFERENCE) is False  # completed but short
    assert greedy_verdict(_record(0, 1, tokens=(1, 2), outcome=LOST), REFERENCE) is True  # a prefix, then cut
    assert greedy_verdict(_record(0, 1, tokens=(9,), outcome=FAILED, code="UNAVAILABLE"), REFERENCE) is False
    assert greedy_verdict(_record(0, 1, tokens=(9, 9, 9, 9), sampled=True), REFERENCE) is None

    summary = summarise(_result([
        _record(0, 5), _record(9, 11, tokens=(1, 2, 3, 5)), _record(11, 12, tokens=(1,), outcome=LOST),
        _record(12, 13, tokens=(), outcome=FAILED, code="UNAVAILABLE"), _record(21, 22, tokens=(8,) * 4, sampled=True),
    ]))
    assert (summary["lost"], summary["failed"], summary["greedy_mismatches"]) == (1, 1, 1)
    before, during, after = summary["phases"]
    assert (before["requests"], during["requests"], after["requests"]) == (1, 3, 1)
    assert during["failed"] == {"UNAVAILABLE": 1} and during["greedy_identical"] == 0
    assert during["greedy_completed"] == 1 and before["greedy_identical"] == 1
    assert summary["in_flight_at_kill"] == 1 and summary["complete"]


@pytest.mark.parametrize("records,code", [
    ([_record(0, 5), _record(9, 11), _record(21, 22)], 0),
    ([_record(0, 5), _record(9, 11), _record(21, 22, tokens=(1, 2, 4, 3))], 1),  # a greedy output differs
    ([_record(0, 5), _record(9, 11), _record(11, 12, tokens=(), outcome=LOST), _record(21, 22)], 1),  # one lost
    ([_record(0, 5), _record(9, 11)], 1),  # no request after the restart: the scenario did not happen
])
def test_fail_on_lost_exits_1_on_a_lost_request_a_wrong_output_or_a_missing_phase(monkeypatch, tmp_path, records, code):
    monkeypatch.setattr(chaos, "run", lambda *args, **kwargs: _result(records))
    out = tmp_path / "new" / "nested"
    argv = ["--stack", "tiny", "--scenario", "chaos", "--clients", "2", "--fail-on-lost",
            "--json", str(out / "a.json"), "--markdown", str(out / "tables" / "a.md")]
    assert main(argv) == code
    assert main(argv[:-5]) == 0  # without --fail-on-lost the same run is only reported
    saved = json.loads((out / "a.json").read_text())
    assert len(saved["records"]) == len(records) and "| before |" in (out / "tables" / "a.md").read_text()


@pytest.mark.parametrize("extra,message", [
    (["--address", "127.0.0.1:1"], "--address"), (["--stack", "tiny", "--mode", "pearl"], "--mode"),
    (["--stack", "tiny", "--clients", "1,2"], "one --clients level"),
    (["--stack", "tiny", "--kill-at", "9", "--restart-at", "5"], "--kill-at"),
])
def test_the_cli_refuses_what_chaos_cannot_run_before_starting_anything(capsys, extra, message):
    assert main(["--scenario", "chaos", *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make (CI runs `make test`)")
def test_make_loadtest_chaos_runs_32_streams_and_fails_on_a_lost_request_or_a_wrong_output():
    """Not run by test_make_targets.py (the full run takes minutes): its command must parse
    into the scenario it promises."""
    (argv,) = make_commands(REPO, "loadtest-chaos")
    assert argv[1:3] == ["-m", "loadtest"]
    args = parser().parse_args(argv[3:])
    plan, _ = chaos_plan(args)
    assert args.stack == "tiny" and plan.clients == 32 and args.fail_on_lost and args.fail_on_errors
    assert args.json_path.startswith("bench-results/") and args.markdown_path.startswith("bench-results/")


@pytest.mark.full  # ~45 s of five processes and a restart: `make test-full` (CI runs it), not the default suite
def test_replicas_killed_under_load_lose_no_request_and_change_no_greedy_token(tmp_path):
    """8 streams, 12 tokens each; the after phase waits for the restarted target (slow to
    load while the CPUs are busy with the load: ~10-20 s here), then runs 2 s."""
    out = tmp_path / "chaos" / "nested"
    code = main([
        "--stack", "tiny", "--scenario", "chaos", "--clients", "8", "--max-new-tokens", "12", "--prompts", "short",
        "--duration", "6", "--kill-at", "2", "--restart-at", "2.5", "--settle", "0.5", "--after", "2",
        "--drain", "30", "--timeout", "240", "--json", str(out / "run.json"), "--markdown", str(out / "md" / "run.md"),
        "--fail-on-lost", "--fail-on-errors",
    ])
    saved = json.loads((out / "run.json").read_text())
    assert "| during |" in (out / "md" / "run.md").read_text()
    summary, events = saved["summary"], saved["summary"]["events"]
    assert code == 0, summary
    assert (summary["lost"], summary["failed"], summary["greedy_mismatches"]) == (0, 0, 0), summary["total"]
    assert summary["complete"] and not summary["empty_phases"]  # every fault happened, every phase ran
    assert {k["kind"] for k in summary["by_kind"]} == {k.name for k in chaos.STREAMS}
    for phase in summary["phases"]:
        assert phase["greedy_completed"] > 0 and phase["greedy_identical"] == phase["greedy_completed"], phase
    # the faults hit work in flight: sessions re-prefilled on target-1, requests gone target-only
    assert summary["in_flight_at_kill"] > 0
    assert summary["total"]["reprefilled"] > 0 and summary["total"]["target_only"] > 0
    assert {k["name"] for k in events["killed"].values()} == {"target-2", "draft-2"}
    assert events["restarted"]["name"] == "target-2" and events["rejoined_sessions"] > 0  # it serves again
    greedy = [r for r in saved["records"] if not r["sampled"]]
    assert all(r["token_ids"] == saved["reference"][r["prompt"]] for r in greedy)  # checked here too
