"""From raw bench runs to figures: analytic bounds, medians, tables, JSON and a plot.

Terms as in docs/algorithms.md: a round is one target verification pass; tau = emitted
tokens / rounds; acceptance rate = accepted / drafted. The analytic bounds need the
i.i.d. per-position acceptance `a` of section 0, which is NOT the acceptance rate (the
rate also counts the draft tokens after the first rejection, which were never tested):
    a = accepted / (accepted + rounds with a rejection)
is its maximum-likelihood estimate from the rounds' verdicts.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence

from specdec.core.pipeline import Acceptance, pearl_model
from specdec.bench.transport import GRPC_SUFFIX

SD_BOUND = "(1 - a^(k+1)) / (1 - a) / (k*c + 1)"
BOUND_NOTES = {
    "sd": f"vanilla speculative decoding over target-only: {SD_BOUND} (docs/algorithms.md §0)",
    "pearl": (
        "the PEARL pipeline model (specdec/core/pipeline.py, docs/algorithms.md §4): the loop's own rules "
        "played with every pass costing one target step and every draft step c, no per-call cost, the window "
        "K of the row, and the run's acceptance as a two-state Markov chain (a_r: P(accepted) right after a "
        "rejection or at the start; a_a: right after an accepted token), mean over 400 simulated requests of "
        "the run's length"
    ),
    "a_r / a_a": "the Markov acceptance fitted to the run's verdicts in call order (see pearl)",
    "a": "per-position acceptance, accepted / (accepted + rounds with a rejection), over rounds with a draft",
    "k": "mean draft tokens per round with a draft (= k for fixed; the adaptive policies' mean)",
    "c": "draft step cost / target step cost: the profile's draft_ms / target_ms (emulated); real: the median "
         "decode step (forward over <= 2 new tokens, real compute) of the draft in the sequential runs / of the "
         "target in the baseline runs (fallback: single forwards timed before the run)",
    "c_observed": "per configuration: median draft decode step / median target forward after the prefill (its "
                  "verification passes), real compute; the cost ratio that configuration actually faced",
    "efficiency": "median over runs of (speedup of the run / its bound)",
    "speedup": "median over prompts x repeats of (baseline wall / configuration wall) for the same prompt and repeat",
}


# -- the analytic bounds (docs/algorithms.md §0) -----------------------------------


def expected_emitted(a: float, k: float) -> float:
    """Expected tokens emitted per round with i.i.d. acceptance a and draft length k."""
    if a >= 1.0:
        return k + 1.0
    return (1.0 - a ** (k + 1.0)) / (1.0 - a)


def sd_bound(a: float, k: float, c: float, tokens: int | None = None, prefill: tuple[int, int] = (1, 1)) -> float:
    """The speedup a vanilla (sequential) speculative decoder can reach over target-only.

    With `tokens` (the run's length) and `prefill` = (target passes over the prompt and
    its first draft tokens, draft steps over the prompt) under a chunked cost profile, the
    prompt's extra chunks are counted on both sides: the target alone takes
    prefill[0] + tokens - 1 passes, speculation one per round plus the same extra chunks."""
    per_round = expected_emitted(a, k) / (k * c + 1.0)
    if tokens is None or prefill == (1, 1):
        return per_round
    target_chunks, draft_chunks = prefill
    rounds = tokens / expected_emitted(a, k)
    spec = rounds * (k * c + 1.0) + (target_chunks - 1) + (draft_chunks - 1) * c
    return (target_chunks + tokens - 1) / spec


def prefill_chunks(raw: dict, run: dict, k: float | None) -> tuple[int, int]:
    """(target passes over the prompt plus k draft tokens, draft steps over the prompt)
    under the run's cost profile (budgets per started chunk of flat_tokens); (1, 1) on
    real costs, where the bounds count no prefill."""
    profile = raw.get("profile")
    if not profile:
        return 1, 1
    flat = profile.get("flat_tokens", 32)
    length = raw["prompts"][run["prompt"]]["prompt_tokens"]
    return math.ceil((length + round(k or 0)) / flat), math.ceil(length / flat)


def per_position_acceptance(verdicts: Iterable[Sequence[int]]) -> float | None:
    """a = accepted / (accepted + rejections) over rounds (drafted, accepted) with drafted > 0."""
    accepted = rejections = 0
    for drafted, acc in verdicts:
        if drafted > 0:
            accepted += acc
            rejections += acc < drafted
    tested = accepted + rejections
    return accepted / tested if tested else None


def mean_draft_length(verdicts: Iterable[Sequence[int]]) -> float | None:
    lengths = [d for d, _ in verdicts if d > 0]
    return sum(lengths) / len(lengths) if lengths else None


def cost_ratio(raw: dict) -> tuple[float, str]:
    """c for the bounds, and where it came from.

    Real costs: the median decode step of the draft (sequential runs) over that of the
    target (baseline runs), timed during the run itself: thousands of forwards spread
    over the whole run, so a busy moment of a shared machine does not set c. The single
    forwards timed before the run are the fallback (and are reported beside it)."""
    if raw["profile"]:
        p = raw["profile"]
        return p["draft_ms"] / p["target_ms"], f"profile {p['name']}: {p['draft_ms']} ms / {p['target_ms']} ms"
    fwd = raw["calibration"]["forward_s"]
    before = f"single forwards timed before the run: draft {fwd['draft']['1'] * 1000:.2f} ms / target " \
             f"{fwd['target']['1'] * 1000:.2f} ms"
    runs = raw["runs"]
    d = _median(r["forwards"]["draft"]["step_s"] for r in runs if r["mode"] == "sequential")
    t = _median(r["forwards"]["target"]["step_s"] for r in runs if r["mode"] == "autoregressive")
    if d and t:
        return d / t, (f"median decode steps timed during the run: draft {d * 1000:.2f} ms (sequential runs) / "
                       f"target {t * 1000:.2f} ms (baseline runs); {before}")
    return fwd["draft"]["1"] / fwd["target"]["1"], before


# -- medians --------------------------------------------------------------------------


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def derive(run: dict, baseline_wall: float | None, c: float, raw: dict | None = None) -> dict:
    """The per-run figures the summary takes medians of."""
    d = {"tokens_per_s": run["tokens_per_s"], "speedup": baseline_wall / run["wall_s"] if baseline_wall else None}
    fwd = run["forwards"]
    d.update(draft_step_s=fwd["draft"]["step_s"], target_pass_s=fwd["target"]["pass_s"])
    if fwd["draft"]["step_s"] and fwd["target"]["pass_s"]:  # the c this configuration really faced
        d["c_observed"] = fwd["draft"]["step_s"] / fwd["target"]["pass_s"]
    st = run.get("stats")
    if st is None:  # the peer: rounds are its target forwards
        d["rounds"] = fwd["target"]["forwards"]
        d["tau"] = run["tokens"] / d["rounds"] if d["rounds"] else None
        return d
    wall = st["wall_s"] or 1e-12
    overhead = st["overhead_share"]
    d.update(
        rounds=st["rounds"], draft_tokens=st["draft_tokens"], accepted_tokens=st["accepted_tokens"],
        acceptance_rate=st["acceptance_rate"] if st["draft_tokens"] else None, tau=st["mean_acceptance_length"],
        ttft_s=st["time_to_first_token_s"], draft_compute_s=st["draft_compute_s"],
        target_compute_s=st["target_compute_s"], network_s=st["network_s"],
        draft_share=st["draft_compute_s"] / wall, target_share=st["target_compute_s"] / wall,
        network_share=st["network_s"] / wall, overhead_share=overhead,
        other_share=max(0.0, overhead - st["network_s"] / wall),
    )
    if run["mode"] == "gsd" and st["rounds"]:  # the tree's size and how much merging saved, per round
        d.update(tree_nodes=st["tree_nodes"] / st["rounds"], dag_nodes=st["dag_nodes"] / st["rounds"],
                 merged_nodes=st["merged_nodes"] / st["rounds"], saved_rows=st.get("saved_rows", 0) / st["rounds"],
                 saved_forwards=st.get("saved_forwards", 0) / st["rounds"])
    a, k = per_position_acceptance(run["verdicts"]), mean_draft_length(run["verdicts"])
    d.update(a=a, k_mean=k)
    if run["mode"] != "autoregressive" and k is not None and a is not None:
        d["bound_sd"] = sd_bound(a, k, c, run["tokens"], prefill_chunks(raw, run, k) if raw else (1, 1))
        d["efficiency_sd"] = d["speedup"] / d["bound_sd"] if d["speedup"] else None
    acceptance = Acceptance.fit(run["verdicts"])
    if acceptance is not None:
        d.update(a_after_reject=acceptance.after_reject, a_after_accept=acceptance.after_accept)
        if run["mode"] == "pearl" and run.get("draft_length"):
            prefill = prefill_chunks(raw, run, 0)[1] if raw else 1
            d["model_pearl"] = pearl_model(acceptance, c, run["draft_length"], run["tokens"], prefill=prefill)
            d["efficiency_pearl"] = d["speedup"] / d["model_pearl"] if d["speedup"] else None
    return d


FIELDS = ("tokens_per_s", "speedup", "rounds", "draft_tokens", "accepted_tokens", "acceptance_rate", "a", "tau",
          "k_mean", "ttft_s", "draft_compute_s", "target_compute_s", "network_s", "draft_share", "target_share",
          "network_share", "overhead_share", "other_share", "draft_step_s", "target_pass_s", "c_observed",
          "bound_sd", "efficiency_sd", "a_after_reject", "a_after_accept", "model_pearl", "efficiency_pearl", "tree_nodes", "dag_nodes", "merged_nodes",
          "saved_rows", "saved_forwards")


def summarise(raw: dict) -> dict:
    """Medians per configuration and per (configuration, prompt kind); validity."""
    c, c_source = cost_ratio(raw)
    runs = raw["runs"]
    # speedup against the baseline of the same transport (the peer, in-process, against whichever ran)
    base = {(_transport(r), r["prompt"], r["repeat"]): r["wall_s"] for r in runs if r["mode"] == "autoregressive"}
    base_any = {(p, rep): w for (_, p, rep), w in reversed(list(base.items()))}
    runs = [_with_verdicts(r, runs) for r in runs]
    names = [cfg["name"] for cfg in raw["configs"]] + (["hf-assisted"] if raw.get("peer") else [])
    configs, per_kind = [], {}
    kinds = list(dict.fromkeys(p["kind"] for p in raw["prompts"]))
    for name in names:
        rs = [r for r in runs if r["config"] == name]
        derived = [derive(r, base.get((_transport(r), r["prompt"], r["repeat"]),
                                      base_any.get((r["prompt"], r["repeat"]))), c, raw) for r in rs]
        row = {"name": name, "mode": rs[0]["mode"] if rs else None, "policy": rs[0]["policy"] if rs else None,
               "draft_length": rs[0]["draft_length"] if rs else None, "runs": len(rs),
               "transport": _transport(rs[0]) if rs else "inprocess"}
        row.update({f: _median(d.get(f) for d in derived) for f in FIELDS})
        row["overruns"] = _overruns(r["budget"] for r in rs)
        row["overruns"]["remote"] = row["transport"] == "grpc"  # counted by the workers (GetInfo), no worst one
        same = [r["identical"] for r in rs if r["identical"] is not None]
        row["identical"] = all(same) if same else None
        row["identical_runs"] = f"{sum(same)}/{len(same)}" if same else None
        configs.append(row)
        per_kind[name] = {
            kind: {"speedup": _median(d.get("speedup") for r, d in zip(rs, derived) if r["kind"] == kind),
                   "tau": _median(d.get("tau") for r, d in zip(rs, derived) if r["kind"] == kind),
                   "runs": sum(r["kind"] == kind for r in rs)}
            for kind in kinds
        }
    overran = [f"{row['name']} ({row['overruns']['total']} of {row['overruns']['forwards_checked']}, "
               + ("worst not reported by the workers)" if row["overruns"]["remote"] else
                  f"worst +{row['overruns']['worst_overrun_s'] * 1000:.0f} ms)")
               for row in configs if row["overruns"]["total"]]
    invalid = [f"forwards overran their budget: {', '.join(overran)}"] if overran else []
    not_lossless = [row["name"] for row in configs if row["identical"] is False]
    return {
        "valid": not invalid, "invalid_reasons": invalid, "not_identical": not_lossless,
        "c": c, "c_source": c_source, "bounds": BOUND_NOTES, "kinds": kinds,
        "configs": configs, "per_kind": per_kind, "transport": transport_comparison(raw, configs),
        "headline": headline(configs, transport_comparison(raw, configs)),
    }


def headline(configs: list[dict], transport: list[dict] | None) -> dict:
    """The figures a reader wants first, from one run: per transport, the best PEARL row
    against the best sequential row (speed-up over the target alone, ratio of the two), and
    the gRPC transport's largest and median share of wall over the in-process path."""
    out: dict = {"best": {}}
    for where in dict.fromkeys(r["transport"] for r in configs):
        best = {}
        for mode in ("sequential", "pearl", "gsd"):
            rows = [r for r in configs if r["transport"] == where and r["mode"] == mode and r["speedup"]]
            if rows:
                top = max(rows, key=lambda r: r["speedup"])
                best[mode] = {"name": top["name"], "speedup": top["speedup"]}
        if "pearl" in best and "sequential" in best:
            best["pearl_vs_sequential"] = best["pearl"]["speedup"] / best["sequential"]["speedup"]
        rows = [r for r in configs if r["transport"] == where and r["speedup"]]
        auto = [r for r in rows if _is_auto(r)]
        static = [r for r in rows if not _is_auto(r)]
        if auto and static:
            top, rival = max(auto, key=lambda r: r["speedup"]), max(static, key=lambda r: r["speedup"])
            best["auto"] = {"name": top["name"], "speedup": top["speedup"]}
            best["static"] = {"name": rival["name"], "speedup": rival["speedup"]}
            best["auto_vs_static"] = top["speedup"] / rival["speedup"]
        out["best"][where] = best
    shares = [t["transport_overhead_share"] for t in transport or () if t["transport_overhead_share"] is not None]
    if shares:
        worst = max(transport, key=lambda t: t["transport_overhead_share"] or -1.0)
        out["grpc_overhead"] = {"worst": worst["transport_overhead_share"], "worst_name": worst["name"],
                                "median": statistics.median(shares)}
    return out


def headline_lines(summary: dict) -> list[str]:
    """`headline` as sentences, printed above the table."""
    lines = []
    for where, best in summary.get("headline", {}).get("best", {}).items():
        if "pearl_vs_sequential" in best:
            p, q = best["pearl"], best["sequential"]
            lines.append(f"Best PEARL vs best sequential ({where}): **{best['pearl_vs_sequential']:.2f}x** "
                         f"({p['name']} {p['speedup']:.2f}x vs {q['name']} {q['speedup']:.2f}x over the target alone).")
        if "auto_vs_static" in best:
            p, q = best["auto"], best["static"]
            lines.append(f"Auto vs the best static configuration ({where}): **{best['auto_vs_static']:.2f}x** "
                         f"({p['name']} {p['speedup']:.2f}x vs {q['name']} {q['speedup']:.2f}x over the target alone).")
    grpc = summary.get("headline", {}).get("grpc_overhead")
    if grpc:
        lines.append(f"gRPC vs in-process: the transport costs {grpc['median'] * 100:.1f}% of wall (median over "
                     f"configurations), at most {grpc['worst'] * 100:.1f}% ({grpc['worst_name']}).")
    return lines


def _with_verdicts(run: dict, runs: list[dict]) -> dict:
    """A grpc run whose verdicts the coordinator did not report borrows those of the
    in-process run of the same configuration, prompt and repeat (for a, a_r / a_a and the
    bounds; its speed-up stays its own)."""
    if _transport(run) != "grpc" or run.get("verdicts"):
        return run
    twin = next((r for r in runs if _transport(r) == "inprocess" and r["prompt"] == run["prompt"]
                 and r["repeat"] == run["repeat"] and r["config"] == run["config"].removesuffix(GRPC_SUFFIX)), None)
    return {**run, "verdicts": twin["verdicts"]} if twin else run


def _is_auto(row: dict) -> bool:
    """A row whose mode or policy is chosen from the measured costs (mode / policy auto)."""
    return row.get("mode") == "auto" or row.get("policy") == "auto"


def _transport(run: dict) -> str:
    return run.get("transport", "inprocess")


def transport_comparison(raw: dict, configs: list[dict]) -> list[dict] | None:
    """With --transport both: per configuration, the in-process and grpc medians side by side and
    the network/serialisation overhead share = (grpc wall - in-process wall) / grpc wall, the median
    over (prompt, repeat) pairs. None unless both transports ran."""
    if "grpc" not in raw.get("transports", ()) or "inprocess" not in raw.get("transports", ()):
        return None
    rows = {r["name"]: r for r in configs}
    runs = raw["runs"]
    out = []
    for cfg in raw["configs"]:
        if cfg["transport"] != "inprocess":
            continue
        name, remote = cfg["name"], cfg["name"] + " [grpc]"
        local = {(r["prompt"], r["repeat"]): r for r in runs if r["config"] == name}
        pairs = [(local[(r["prompt"], r["repeat"])], r) for r in runs
                 if r["config"] == remote and (r["prompt"], r["repeat"]) in local]
        li, gr = rows.get(name, {}), rows.get(remote, {})
        out.append({
            "name": name, "pairs": len(pairs),
            "inprocess_wall_s": _median(a["wall_s"] for a, _ in pairs),
            "grpc_wall_s": _median(b["wall_s"] for _, b in pairs),
            "inprocess_tokens_per_s": li.get("tokens_per_s"), "grpc_tokens_per_s": gr.get("tokens_per_s"),
            "inprocess_speedup": li.get("speedup"), "grpc_speedup": gr.get("speedup"),
            "inprocess_tau": li.get("tau"), "grpc_tau": gr.get("tau"),
            "transport_overhead_share": _median((b["wall_s"] - a["wall_s"]) / b["wall_s"] for a, b in pairs),
            "inprocess_network_share": li.get("network_share"), "grpc_network_share": gr.get("network_share"),
            "grpc_overhead_share": gr.get("overhead_share"),
            "identical": gr.get("identical"), "identical_runs": gr.get("identical_runs"),
        })
    return out


def _overruns(budgets) -> dict:
    out = {"draft": 0, "target": 0, "forwards_checked": 0, "worst_overrun_s": 0.0}
    for b in budgets:
        for role, v in (b or {}).items():
            out[role] += v["overruns"]
            out["forwards_checked"] += v["forwards"]
            out["worst_overrun_s"] = max(out["worst_overrun_s"], v["worst_overrun_s"])
    out["total"] = out["draft"] + out["target"]
    return out


# -- rendering ------------------------------------------------------------------------


def _f(x, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def title(raw: dict, summary: dict) -> str:
    s = raw["settings"]
    if raw["profile"]:
        p = raw["profile"]
        scale = p.get("preset_scale", {}).get(s["preset"], 1.0)
        regime = (f"cost **{p['name']}** (EMULATED: target {p['target_ms'] * scale:g} ms, draft "
                  f"{p['draft_ms'] * scale:g} ms per forward, flat up to {p['flat_tokens']} tokens)")
    else:
        regime = "cost **real** (this machine's compute)"
    n_prompts = len(raw["prompts"])
    sampling = "greedy" if s["temperature"] == 0 else f"temperature {s['temperature']}"
    transport = s.get("transport", "inprocess")
    via = "" if transport == "inprocess" else f", transport {transport}"
    device = s.get("device", "cpu")
    if s.get("draft_device") and s["draft_device"] != device:
        device = f"target {device}, draft {s['draft_device']}"
    gpu = raw.get("machine", {}).get("gpu")
    where = f", device {device}" + (f" ({gpu})" if gpu and "cuda" in device else "") if device != "cpu" else ""
    runtime = f", runtime {s['runtime']}" if s.get("runtime", "eager") != "eager" else ""
    return (f"specdec bench: preset `{s['preset']}`, {regime}, {n_prompts} prompts x {s['repeats']} repeat(s) x "
            f"{s['max_new_tokens']} tokens, {sampling}, {s['dtype']}{via}{where}{runtime}")


def markdown(raw: dict, summary: dict) -> str:
    lines = [f"### {title(raw, summary)}", ""]
    if raw["profile"]:
        if summary["valid"]:
            checked = sum(r["overruns"]["forwards_checked"] for r in summary["configs"])
            remote = " (grpc rows: as the workers count them, GetInfo)" \
                if any(r["overruns"].get("remote") for r in summary["configs"]) else ""
            lines.append(f"VALID: none of {checked} timed forwards overran its budget{remote}.")
        else:
            lines.append(f"**INVALID: {'; '.join(summary['invalid_reasons'])}**")
        lines.append("")
    if headline_lines(summary):
        lines += [*headline_lines(summary), ""]
    if summary["not_identical"]:
        lines += [f"**NOT LOSSLESS: greedy output differs from the baseline in {', '.join(summary['not_identical'])}**",
                  ""]
    head = ("| configuration | k | tok/s | speedup | rounds | drafted | accepted | acc. rate | a | tau | k mean "
            "| draft | target | network | overhead | other | bound SD | eff. SD | a_r / a_a | model PEARL | eff. PEARL "
            "| overruns d/t | identical |")
    real = raw["profile"] is None
    if real:  # the cost ratio each configuration faced: on a CPU a verification pass is not one step
        head = head.replace("| bound SD |", "| c obs | bound SD |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in summary["configs"]:
        o = r["overruns"]
        overruns = "-" if real else f"{o['draft']}/{o['target']}"
        c_obs = f"| {_f(r['c_observed'])} " if real else ""
        k = "-" if r["draft_length"] is None else str(r["draft_length"])
        lines.append(
            f"| {r['name']} | {k} | {_f(r['tokens_per_s'], '.1f')} | {_f(r['speedup'], '.2f', 'x')} "
            f"| {_f(r['rounds'], '.0f')} | {_f(r['draft_tokens'], '.0f')} | {_f(r['accepted_tokens'], '.0f')} "
            f"| {_pct(r['acceptance_rate'])} | {_f(r['a'])} | {_f(r['tau'])} | {_f(r['k_mean'], '.1f')} "
            f"| {_pct(r['draft_share'])} | {_pct(r['target_share'])} | {_pct(r['network_share'])} "
            f"| {_pct(r['overhead_share'])} | {_pct(r['other_share'])} {c_obs}| {_f(r['bound_sd'], '.2f', 'x')} "
            f"| {_f(r['efficiency_sd'])} | {_f(r['a_after_reject'])} / {_f(r['a_after_accept'])} "
            f"| {_f(r['model_pearl'], '.2f', 'x')} | {_f(r['efficiency_pearl'])} "
            f"| {overruns} | {r['identical_runs'] or '-'} |"
        )
    lines += ["", *footnotes(raw, summary), "", per_kind_table(summary), ""]
    if any(r["mode"] == "gsd" for r in summary["configs"]):
        lines += [gsd_table(summary["configs"]), ""]
    if summary.get("transport"):
        lines += [transport_table(summary["transport"]), ""]
    lines.append(_machine_line(raw))
    return "\n".join(lines) + "\n"


def footnotes(raw: dict, summary: dict) -> list[str]:
    b = summary["bounds"]
    notes = [
        "Medians over prompts x repeats. speedup: " + b["speedup"] + ". tok/s from the wall time of the call.",
        "rounds = target verification passes; tau = emitted tokens / rounds; acc. rate = accepted / drafted; "
        "a = " + b["a"] + "; k mean = " + b["k"] + ".",
        "Time split as shares of the request's wall time: draft / target = model compute (emulated: including "
        "the wait to the budget; under PEARL they overlap and may sum past 100%), network = call time outside "
        "the model, overhead = (wall - union of compute intervals) / wall, other = overhead - network (waiting, "
        "scheduling, Python).",
        f"bound SD = {SD_BOUND} (i.i.d. a); model PEARL = {b['pearl']} (PEARL rows only); a_r / a_a = "
        f"{b['a_r / a_a']}; eff. = median of speedup / bound (or model) per "
        "run. grpc rows borrow the verdicts of the in-process run of the same configuration and prompt (the "
        "coordinator does not report them). eff. above 1 is possible: neither counts the per-call overhead the "
        "baseline pays per token, and the SD bound assumes i.i.d. acceptance.",
        f"c = {summary['c']:.3f} ({summary['c_source']}).",
    ]
    if raw["profile"]:
        p, fwd = raw["profile"], raw["calibration"]["forward_s"]
        scale = p.get("preset_scale", {}).get(raw["settings"]["preset"], 1.0)
        q = max(fwd["target"], key=int)
        notes.append("overruns d/t: timed forwards of the draft / the target that took longer than their budget "
                     "(any overrun makes the run INVALID). hf-assisted is held to the same budgets through module "
                     f"hooks. Headroom (real compute timed before the run): draft step {fwd['draft']['1'] * 1000:.1f} "
                     f"ms of {p['draft_ms'] * scale:g} ms, target pass over {q} tokens "
                     f"{fwd['target'][q] * 1000:.1f} ms of {p['target_ms'] * scale:g} ms.")
    else:
        fwd = raw["calibration"]["forward_s"]["target"]
        qs = sorted(fwd, key=int)
        curve = ", ".join(f"q={q} {fwd[q] * 1000:.1f} ms" for q in qs)
        notes.append(f"Real costs: the bounds assume a verification pass costs one target step; on this CPU it "
                     f"does not (target forward over q new tokens, timed before the run: {curve}). c obs = "
                     + b["c_observed"] + ".")
    if raw.get("peer"):
        p = raw["peer"]
        notes.append(f"hf-assisted: {p['library']}, `{p['call']}` with the same models and prompt ids; assistant "
                     f"schedule {p['num_assistant_tokens']} tokens, {p['num_assistant_tokens_schedule']}, confidence "
                     f"threshold {p['assistant_confidence_threshold']}; its rounds = target forwards, tau = tokens / "
                     "target forwards.")
    return ["- " + n for n in notes]


def transport_table(rows: list[dict]) -> str:
    head = ("| configuration | wall in-proc | wall grpc | transport overhead | tok/s in-proc | tok/s grpc "
            "| speedup in-proc | speedup grpc | tau in-proc | tau grpc | network in-proc | network grpc "
            "| overhead grpc | grpc identical |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['name']} | {_f(r['inprocess_wall_s'], '.3f', ' s')} | {_f(r['grpc_wall_s'], '.3f', ' s')} "
            f"| {_pct(r['transport_overhead_share'])} | {_f(r['inprocess_tokens_per_s'], '.1f')} "
            f"| {_f(r['grpc_tokens_per_s'], '.1f')} | {_f(r['inprocess_speedup'], '.2f', 'x')} "
            f"| {_f(r['grpc_speedup'], '.2f', 'x')} | {_f(r['inprocess_tau'])} | {_f(r['grpc_tau'])} "
            f"| {_pct(r['inprocess_network_share'])} | {_pct(r['grpc_network_share'])} "
            f"| {_pct(r['grpc_overhead_share'])} | {r['identical_runs'] or '-'} |"
        )
    return ("In-process vs gRPC (the local stack: coordinator + 2 worker processes on loopback, the same cost "
            "profile applied in the workers), medians:\n\n" + "\n".join(lines) + "\n\n"
            "- transport overhead = median over prompts of (grpc wall - in-process wall) / grpc wall, each pair run "
            "back to back on the same prompt; network = the request stats' network_s / wall (grpc: the "
            "coordinator's calls to the workers, outside their model time); speedup against the baseline of the "
            "same transport; grpc identical = greedy tokens equal to the in-process baseline's.")


def gsd_table(configs: list[dict]) -> str:
    """Mode gsd: what one target pass verified, and what merging hypotheses into a DAG saved."""
    head = ("| configuration | tree nodes / round | DAG nodes drafted / round | merged draws / round "
            "| draft rows saved / round | draft forwards saved / round | tau | speedup |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in configs:
        if r["mode"] == "gsd":
            lines.append(f"| {r['name']} | {_f(r['tree_nodes'], '.1f')} | {_f(r['dag_nodes'], '.1f')} "
                         f"| {_f(r['merged_nodes'], '.1f')} | {_f(r.get('saved_rows'), '.1f')} "
                         f"| {_f(r.get('saved_forwards'), '.2f')} | {_f(r['tau'])} | {_f(r['speedup'], '.2f', 'x')} |")
    return ("GSD trees (medians per run of the per-round means): tree nodes = the unrolled token tree one target "
            "pass verifies; DAG nodes = the distinct nodes the draft computed; merged = draws linked to an "
            "existing node (any depth, off its own path) instead of being drafted again; rows saved = tree nodes "
            "expanded on a DAG node another path had computed; forwards saved = levels that needed no draft forward.\n\n" + "\n".join(lines))


def per_kind_table(summary: dict) -> str:
    kinds = summary["kinds"]
    head = "| configuration | " + " | ".join(f"{k}: speedup / tau" for k in kinds) + " |"
    rows = [head, "|" + "---|" * (len(kinds) + 1)]
    for name, by_kind in summary["per_kind"].items():
        cells = [f"{_f(v['speedup'], '.2f', 'x')} / {_f(v['tau'])}" for v in by_kind.values()]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "Per prompt kind (medians):\n\n" + "\n".join(rows)


def _machine_line(raw: dict) -> str:
    m = raw["machine"]
    commit = (m["git_commit"] or "unknown")[:10] + (" (dirty)" if m.get("git_dirty") else "")
    return (f"Machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
            f"transformers {m['transformers']}; load average {raw['load_average']['start']} -> "
            f"{raw['load_average']['end']}; date {m['date']}; commit {commit}; run took {raw['duration_s']:.0f} s.  \n"
            f"Command: `{m['command']}`")


def document(raw: dict, summary: dict) -> dict:
    """The JSON file: summary first, the raw runs kept."""
    return {"schema": "specdec-bench/1", "title": title(raw, summary), "valid": summary["valid"],
            "invalid_reasons": summary["invalid_reasons"], "summary": summary, **raw}


def write_json(path: str | Path, raw: dict, summary: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document(raw, summary), indent=1) + "\n")


def write_plot(path: str | Path, raw: dict, summary: dict) -> None:
    """Two panels: speedup and tau per mode/policy (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["configs"]
    names = [r["name"] for r in rows]
    palette = {"autoregressive": "#888888", "sequential": "#1f77b4", "pearl": "#d62728", "gsd": "#2ca02c",
               "hf-assisted": "#ff7f0e"}
    colors = [palette.get(r["mode"], "#9467bd") for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 2), sharey=True)
    y = list(range(len(rows)))[::-1]
    for ax, key, label in ((ax1, "speedup", "speedup over target alone (x)"), (ax2, "tau", "tau (tokens per round)")):
        values = [r[key] or 0.0 for r in rows]
        ax.barh(y, values, color=colors)
        for yi, v in zip(y, values):
            ax.text(v, yi, f" {v:.2f}", va="center", fontsize=8)
        ax.set_xlabel(label)
        ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xlim(0, max(values + [1.0]) * 1.18)
    ax1.set_yticks(y, names)
    flag = "" if summary["valid"] else "  [INVALID: budget overruns]"
    fig.suptitle(title(raw, summary).replace("**", "").replace("`", "") + flag, fontsize=9, wrap=True)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- where it ran --------------------------------------------------------------------


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load: a busy shared machine shows here."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    import torch
    import transformers

    root = Path(__file__).resolve().parents[2]

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    argv = [Path(sys.argv[0]).name] + sys.argv[1:] if sys.argv else []
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "HEAD") or None,
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "command": " ".join(shlex.quote(a) for a in argv),
    }

