"""Fast tests of specdec.bench: the bound maths on known numbers and a tiny run of the
matrix end to end (JSON with every field, the markdown tables, a PNG). No speed is asserted."""

from __future__ import annotations

import json
import math

import pytest
from typer import Typer
from typer.testing import CliRunner

from specdec.bench import DEFAULT_PROMPTS
from specdec.bench.cli import bench
from specdec.bench.report import (
    expected_emitted,
    headline,
    markdown,
    mean_draft_length,
    per_position_acceptance,
    sd_bound,
    summarise,
)
from specdec.core.pipeline import Acceptance, pearl_model
from specdec.bench.runner import (
    BenchSettings,
    build_matrix,
    load_prompts,
    parse_policies,
    run_bench,
)

CONFIG_FIELDS = {
    "name", "mode", "policy", "draft_length", "runs", "tokens_per_s", "speedup", "rounds", "draft_tokens",
    "accepted_tokens", "acceptance_rate", "a", "tau", "k_mean", "draft_compute_s", "target_compute_s", "network_s",
    "draft_share", "target_share", "network_share", "overhead_share", "other_share", "c_observed", "bound_sd",
    "efficiency_sd", "a_after_reject", "a_after_accept", "model_pearl", "efficiency_pearl", "overruns", "identical", "identical_runs",
}


# -- bounds --------------------------------------------------------------------------


def test_sd_bound_on_known_numbers():
    # a = 0.8, k = 4: (1 - 0.8^5) / 0.2 = 3.3616 tokens per round; c = 0.25: / (4 * 0.25 + 1) = 2
    assert expected_emitted(0.8, 4) == pytest.approx(3.3616)
    assert sd_bound(0.8, 4, 0.25) == pytest.approx(1.6808)
    assert sd_bound(1.0, 4, 0.25) == pytest.approx(5 / 2)  # every draft accepted: k + 1 per round
    assert sd_bound(0.0, 4, 0.25) == pytest.approx(1 / 2)  # nothing accepted: pure draft overhead
    assert sd_bound(0.5, 1, 0.0) == pytest.approx(1.5)  # free draft: 1 + a


def test_sd_bound_counts_the_prompt_chunks_on_both_sides():
    # 2 target chunks and 2 draft chunks of prompt: the target alone takes 2 + 9 passes for 10 tokens
    per_round = sd_bound(0.8, 4, 0.25)
    with_prompt = sd_bound(0.8, 4, 0.25, tokens=10, prefill=(2, 2))
    assert with_prompt == pytest.approx(11 / (10 / 3.3616 * 2 + 1 + 0.25))
    assert with_prompt < per_round  # a prompt's fixed cost dilutes the speed-up
    assert sd_bound(0.8, 4, 0.25, tokens=10) == pytest.approx(per_round)  # one chunk: the plain bound


def test_pearl_model_at_its_limits():
    perfect, hopeless = Acceptance(1.0, 1.0), Acceptance(0.0, 0.0)
    # every token accepted, the draft hides behind the target: ~window tokens per pass
    assert pearl_model(perfect, 0.24, 4, 400, episodes=4) == pytest.approx(4.0, rel=0.03)
    # a draft too slow to fill the window in one pass: ~1/c tokens per pass
    assert pearl_model(perfect, 0.49, 4, 400, episodes=4) == pytest.approx(2.0, rel=0.03)
    # nothing accepted: every window's first token is rejected against the kept row, then a
    # pre-verify pass: one token per pass, as the target alone
    assert pearl_model(hopeless, 0.25, 4, 400, episodes=4) == pytest.approx(1.0, rel=0.03)
    # more acceptance, more speed; and above vanilla SD at the same acceptance (i.i.d. 0.7)
    a = [pearl_model(Acceptance(x, x), 0.267, 4, 200) for x in (0.5, 0.7, 0.9)]
    assert a == sorted(a) and a[1] > max(sd_bound(0.7, k, 0.267) for k in range(1, 9))
    # a long prompt dilutes it the same way as the target alone's time
    assert pearl_model(perfect, 0.25, 4, 40, episodes=4, prefill=5) < pearl_model(perfect, 0.25, 4, 40, episodes=4)


def test_markov_acceptance_fit_from_verdicts_in_call_order():
    # T T T | F | (pre-verify) | F | T F  -> after a rejection/start: T, F, T ; after an accept: T T F F
    fit = Acceptance.fit([(3, 3), (4, 0), (0, 0), (3, 0), (3, 1)])
    assert fit == Acceptance(after_reject=pytest.approx(2 / 3), after_accept=pytest.approx(2 / 4))
    assert Acceptance.fit([(0, 0)]) is None


def test_per_position_acceptance_counts_only_tested_positions():
    # rounds (drafted, accepted): all 4 accepted; 2 then a rejection; target-only round ignored
    verdicts = [(4, 4), (4, 2), (0, 0)]
    assert per_position_acceptance(verdicts) == pytest.approx(6 / 7)
    assert mean_draft_length(verdicts) == pytest.approx(4.0)
    assert per_position_acceptance([(0, 0)]) is None
    # the i.i.d. estimate recovers a from its own expectation: E[accepted | k] = sum a^i
    a, k = 0.7, 4
    assert math.isclose(expected_emitted(a, k), 1 + sum(a**i for i in range(1, k + 1)))


def test_matrix_and_prompt_parsing():
    assert parse_policies(["fixed:2", "adaedl"], 6) == [("fixed", 2, None, "fixed:2"), ("adaedl", 6, None, "adaedl")]
    assert parse_policies(["specdecpp:8@0.3"], 4) == [("specdecpp", 8, 0.3, "specdecpp:8@0.3")]
    # AdaEDL's earlier one-token-late rule runs next to the paper's; plain specdecpp takes its k_max of 20
    assert parse_policies(["adaedl", "adaedl_late", "specdecpp"], 4) == [
        ("adaedl", 4, None, "adaedl"), ("adaedl_late", 4, None, "adaedl_late"), ("specdecpp", 20, None, "specdecpp")]
    with pytest.raises(ValueError, match="policy must be one of"):
        parse_policies(["greedyish"], 4)
    with pytest.raises(ValueError, match="threshold must be in"):
        parse_policies(["specdecpp:8@1.5"], 4)
    with pytest.raises(ValueError, match="after '@' must be a threshold"):
        parse_policies(["specdecpp@high"], 4)
    names = [c.name for c in build_matrix(BenchSettings(modes=("sequential",), policies=("fixed:4",)))]
    assert names == ["autoregressive", "sequential fixed:4"]  # the baseline always runs, first
    late = build_matrix(BenchSettings(modes=("sequential",), policies=("adaedl", "adaedl_late")))
    assert [c.name for c in late] == ["autoregressive", "sequential adaedl", "sequential adaedl_late"]  # table labels
    prompts = load_prompts(DEFAULT_PROMPTS)
    assert {p.kind for p in prompts} == {"code", "prose", "maths", "summaries"}
    assert {p.kind for p in prompts[:4]} == {"code", "prose", "maths", "summaries"}  # --limit 4 covers all
    assert all(p.kind == "maths" for p in load_prompts(DEFAULT_PROMPTS, kinds=["maths"]))
    with pytest.raises(ValueError, match="no prompts of kind"):
        load_prompts(DEFAULT_PROMPTS, kinds=["poetry"])


# -- a tiny run of the matrix ---------------------------------------------------------


def test_tiny_emulated_matrix_summary_has_every_field():
    settings = BenchSettings(preset="tiny", cost="gpu-like", policies=("fixed:2", "adaedl"), max_new_tokens=8,
                             limit=2, warmup_tokens=4)
    raw = run_bench(settings, progress=lambda line: None)
    summary = summarise(raw)
    names = [r["name"] for r in summary["configs"]]
    assert names == ["autoregressive", "sequential fixed:2", "sequential adaedl", "pearl fixed:2", "pearl adaedl",
                     "hf-assisted"]
    for row in summary["configs"]:
        assert CONFIG_FIELDS <= set(row), CONFIG_FIELDS - set(row)
        assert row["runs"] == 2
        assert row["identical"] is True, row["name"]  # greedy: lossless, and the peer agrees
    assert all(r["tokens"] == 8 for r in raw["runs"])  # ignore_eos: exactly max_new_tokens
    rows = {r["name"]: r for r in summary["configs"]}
    assert rows["autoregressive"]["speedup"] == pytest.approx(1.0)
    assert rows["pearl fixed:2"]["model_pearl"] is not None and rows["sequential fixed:2"]["model_pearl"] is None
    assert rows["sequential fixed:2"]["overruns"]["forwards_checked"] > 0
    assert set(summary["per_kind"]["sequential adaedl"]) == {"code", "prose"}
    text = markdown(raw, summary)
    assert "| configuration |" in text and "Per prompt kind" in text
    assert ("VALID" in text) or ("INVALID" in text)
    best = summary["headline"]["best"]["inprocess"]
    assert best["pearl_vs_sequential"] == pytest.approx(best["pearl"]["speedup"] / best["sequential"]["speedup"])
    assert best["pearl"]["speedup"] == max(rows["pearl fixed:2"]["speedup"], rows["pearl adaedl"]["speedup"])
    assert "Best PEARL vs best sequential (inprocess)" in text


def test_the_headline_picks_the_best_rows_per_transport():
    configs = [
        dict(name="sequential fixed:4", mode="sequential", transport="inprocess", speedup=1.2),
        dict(name="sequential adaedl", mode="sequential", transport="inprocess", speedup=1.3),
        dict(name="pearl fixed:4", mode="pearl", transport="inprocess", speedup=1.56),
        dict(name="pearl fixed:4 [grpc]", mode="pearl", transport="grpc", speedup=1.5),
        dict(name="autoregressive", mode="autoregressive", transport="inprocess", speedup=1.0),
    ]
    transport = [dict(name="pearl fixed:4", transport_overhead_share=0.08),
                 dict(name="sequential adaedl", transport_overhead_share=0.02)]
    got = headline(configs, transport)
    assert got["best"]["inprocess"]["pearl_vs_sequential"] == pytest.approx(1.2)
    assert got["best"]["inprocess"]["sequential"]["name"] == "sequential adaedl"
    assert "pearl_vs_sequential" not in got["best"]["grpc"]  # no sequential row over grpc
    assert got["grpc_overhead"] == {"worst": 0.08, "worst_name": "pearl fixed:4", "median": pytest.approx(0.05)}


def test_cli_writes_json_table_and_png(tmp_path):
    app = Typer()
    app.command()(bench)
    out = tmp_path / "tiny.json"
    result = CliRunner().invoke(app, [
        "--preset", "tiny", "--cost", "real", "--modes", "sequential,pearl", "--policies", "fixed:4",
        "--max-new-tokens", "8", "--limit", "2", "--warmup-tokens", "4", "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["schema"] == "specdec-bench/1" and doc["regime"] == "real" and doc["valid"] is True
    for key in ("cpu_count", "torch_threads", "platform", "torch", "transformers", "date", "git_commit", "command"):
        assert key in doc["machine"]
    assert {"sd", "pearl", "a", "k", "c"} <= set(doc["summary"]["bounds"])
    assert doc["summary"]["c"] > 0 and len(doc["runs"]) == 2 * 4  # baseline, 2 modes, the peer
    assert all(r["identical"] for r in doc["runs"])
    assert "| sequential fixed:4 |" in (tmp_path / "tiny.md").read_text()
    assert (tmp_path / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# starts a whole local stack beside the in-process run: `make test-full`
@pytest.mark.full
def test_transport_both_runs_grpc_beside_inprocess(tmp_path):
    """--transport both: the local stack answers the same configuration; greedy tokens identical."""
    app = Typer()
    app.command()(bench)
    out = tmp_path / "both.json"
    result = CliRunner().invoke(app, [
        "--preset", "tiny", "--cost", "gpu-like", "--transport", "both", "--modes", "sequential",
        "--policies", "fixed:4", "--no-peer", "--max-new-tokens", "6", "--limit", "1", "--warmup-tokens", "2",
        "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["transports"] == ["inprocess", "grpc"]
    runs = {(r["config"], r["transport"]) for r in doc["runs"]}
    assert runs == {("autoregressive", "inprocess"), ("autoregressive [grpc]", "grpc"),
                    ("sequential fixed:4", "inprocess"), ("sequential fixed:4 [grpc]", "grpc")}
    assert all(r["tokens"] == 6 and r["identical"] is True for r in doc["runs"])
    grpc = [r for r in doc["runs"] if r["transport"] == "grpc"]
    assert all(r["stats"]["network_s"] >= 0 and r["stats"]["rounds"] > 0 for r in grpc)
    rows = {r["name"]: r for r in doc["summary"]["transport"]}
    assert set(rows) == {"autoregressive", "sequential fixed:4"}
    assert rows["sequential fixed:4"]["identical"] is True and rows["sequential fixed:4"]["pairs"] == 1
    # the workers' budgets are checked too: their overrun counters, read over GetInfo per request
    assert all(r["budget"]["target"]["forwards"] > 0 for r in grpc)
    checked = {c["name"]: c["overruns"] for c in doc["summary"]["configs"]}
    assert checked["sequential fixed:4 [grpc]"]["remote"] and checked["sequential fixed:4 [grpc]"]["forwards_checked"] > 0
    text = (tmp_path / "both.md").read_text()
    assert "In-process vs gRPC" in text


def test_specdecpp_and_gsd_cells(tiny_head_dir):
    """policy specdecpp with a head (threshold per cell) and mode gsd with its tree table; no head: a clear error."""
    with pytest.raises(ValueError, match="needs an acceptance head: pass --acceptance-head"):
        run_bench(BenchSettings(modes=("sequential",), policies=("specdecpp",)), progress=lambda line: None)
    settings = BenchSettings(preset="tiny", cost="real", modes=("sequential", "gsd"),
                             policies=("specdecpp:6@0.3", "specdecpp:6@0.7"), max_new_tokens=8, limit=2,
                             warmup_tokens=4, peer=False, acceptance_head=tiny_head_dir, tree_nodes=3)
    raw = run_bench(settings, progress=lambda line: None)
    summary = summarise(raw)
    rows = {r["name"]: r for r in summary["configs"]}
    assert set(rows) == {"autoregressive", "sequential specdecpp:6@0.3", "sequential specdecpp:6@0.7", "gsd"}
    assert all(r["identical"] is True for r in rows.values())
    # a lower threshold stops earlier: never more draft tokens per round than the higher one
    assert rows["sequential specdecpp:6@0.3"]["k_mean"] <= rows["sequential specdecpp:6@0.7"]["k_mean"]
    assert 1 <= rows["gsd"]["tree_nodes"] <= 3 and rows["gsd"]["dag_nodes"] >= 1  # held (default: ~8 here)
    assert rows["sequential specdecpp:6@0.3"]["tree_nodes"] is None
    text = markdown(raw, summary)
    assert "GSD trees" in text and "| gsd |" in text
