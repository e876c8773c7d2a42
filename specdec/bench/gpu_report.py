"""summary.md of scripts/gpu_check.sh: every table of its results.json, in the order of its steps."""

from __future__ import annotations


def _f(value, fmt: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def header(r: dict) -> list[str]:
    s, e = r.get("settings", {}), r.get("env", {})
    m = e.get("machine", {})
    where = e.get("gpu") or "no GPU"
    lines = [
        "# GPU check" + (" (--quick: tiny stand-ins, a smoke run, not a measurement of real sizes)" if s.get("quick")
                         else ""),
        "",
        f"- device: `{s.get('device')}`" + (f", draft on `{s['draft_device']}`" if s.get("draft_device") else "")
        + f"; {where}" + (f", {e['gpu_memory_gib']} GiB ({e['gpu_free_gib']} free at start), capability "
                          f"{e['capability']}, {e['gpus']} visible" if e.get("gpu") else ""),
        f"- torch {m.get('torch')} (CUDA {e.get('torch_cuda')}), transformers {m.get('transformers')}, "
        f"{m.get('cpu_count')} CPUs, {m.get('platform')}",
        f"- started {e.get('started_at')}, load average {e.get('load_average')} -> {r.get('load_average_end')}; "
        f"commit {(m.get('git_commit') or 'unknown')[:10]}{' (dirty)' if m.get('git_dirty') else ''}",
        f"- budget {s.get('budget_s'):.0f} s, used {r.get('elapsed_s', 0):.0f} s; real sizes in {s.get('real_dtype')}; "
        f"{len(s.get('prompts', []))} prompt(s) x {s.get('max_new_tokens')} greedy tokens",
        f"- command: `{s.get('command')}`",
        "",
    ]
    return lines


def steps(r: dict) -> list[str]:
    lines = ["## Steps", "", "| step | status | seconds | note |", "|---|---|---:|---|"]
    for st in r.get("steps", []):
        note = (st["note"].splitlines() or [""])[0].replace("|", "/")
        lines.append(f"| {st['name']} | {st['status']} | {st['seconds']:.1f} | {note} |")
    return lines + [""]


def equality(r: dict) -> list[str]:
    eq = r.get("equality", {})
    if not eq:
        return []
    lines = ["## Greedy equality against the target alone", "",
             "Each case's greedy tokens against the target alone's on the same engine, equal or a near tie (both "
             "tokens within the tie tolerance, in rounding steps of the dtype, of one forward's best logit: "
             "specdec/bench/equality.py). Real sizes: random weights, the draft's acceptance imposed (EMULATED).", ""]
    for label, res in eq.items():
        verdict = "ALL OK" if res["all_ok"] else "FAILED"
        lines += [f"### {label} ({res['dtype']}, ties within {res.get('tie_ulps', 4):g} steps): {verdict}: "
                  f"{res['exact']} exact, {res['near_ties']} near ties, "
                  f"{len(res['failures'])} failures" + (f"; not run (budget): {', '.join(res['skipped'])}"
                                                        if res["skipped"] else ""), "",
                  "| case | prompt | result | rounds | acc. rate | tau | mode run | wall s |",
                  "|---|---:|---|---:|---:|---:|---|---:|"]
        for row in res["rows"]:
            result = "equal" if row["equal"] else ("near tie" if row["ok"] else "**DIFFERS**")
            lines.append(f"| {row['case']} | {row['prompt']} | {result} | {row['rounds']} | "
                         f"{row['acceptance_rate']:.0%} | {row['tau']:.2f} | {row['mode_run']} | {row['wall_s']:.2f} |")
        lines += [f"- {n}" for n in (*res["failures"], *[x["note"] for x in res["rows"] if x["ok"] and not x["equal"]])]
        lines.append("")
    return lines


def _curve_table(label: str, points: dict) -> list[str]:
    if not points["ms"]:
        return []
    return [f"| {label} | " + " | ".join(points["ms"]) + " |", "|---|" + "---:|" * len(points["ms"]),
            "| ms | " + " | ".join(f"{v:.2f}" for v in points["ms"].values()) + " |",
            "| first s | " + " | ".join(f"{v:.2f}" for v in points["first_call_s"].values()) + " |", ""]


def cost(r: dict) -> list[str]:
    c = r.get("cost", {})
    if not c:
        return []
    context = next(iter(next(iter(c.values())).values()))["context_tokens"]
    lines = ["## One forward's cost (ms, median) against tokens in the pass and sessions in the batch", "",
             f"After {context} cached tokens per session; `first` is the first call of a shape (compiled: includes "
             "its compilation), seconds.", ""]
    for key, runs in c.items():
        for runtime, curve in runs.items():
            cut = "" if curve["tokens"]["ms"] and curve["batch"]["ms"] else ", cut short by the budget"
            lines += [f"### {key}, {runtime} ({curve['dtype']}; {curve.get('graphs_compiled', 0)} graphs "
                      f"compiled{cut})", "", *_curve_table("tokens", curve["tokens"]),
                      *_curve_table("sessions", curve["batch"])]
        if {"eager", "compiled"} <= set(runs):
            e, k = runs["eager"]["tokens"]["ms"], runs["compiled"]["tokens"]["ms"]
            shared = [q for q in e if q in k]
            lines += [f"{key}: compiled / eager per token count: "
                      + ", ".join(f"{q}: {k[q] / e[q]:.2f}x" for q in shared), ""]
    return lines


def profiles(r: dict) -> list[str]:
    ps = r.get("profiles", [])
    if not ps:
        return []
    lines = ["## Measured cost profiles (load with `--cost-profile PATH`)", "",
             "| profile | target ms | draft ms | c | flat tokens | file |", "|---|---:|---:|---:|---:|---|"]
    for p in ps:
        lines.append(f"| {p['name']} | {p['target_ms']:.2f} | {p['draft_ms']:.2f} | "
                     f"{p['draft_ms'] / p['target_ms']:.3f} | {p['flat_tokens']} | `{p['path']}` |")
    return lines + [""]


def bench(r: dict) -> list[str]:
    b = r.get("bench", {})
    if not b:
        return []
    lines = ["## specdec bench on the device", ""]
    for label, res in b.items():
        lines += [f"### {label} (`{res['json']}`)", ""]
        if "imposed" in res:
            i = res["imposed"]
            lines += [f"EMULATED acceptance: the draft's rows are the target's greedy token with probability "
                      f"{i['imposed_acceptance']} (specdec/bench/imposed_acceptance.py); {i['rows']} draft rows, "
                      f"{i['rows_on_target_token']} on the target's token, {i['rows_passed_through']} passed through.",
                      ""]
        lines += [res["markdown"].replace("\n### ", "\n#### ").removeprefix("### "), ""]
    return lines


def overhead(r: dict) -> list[str]:
    rows = r.get("overhead_shares", [])
    if not rows:
        return []
    order = r.get("settings", {}).get("sizes", [])
    sizes = sorted({size for row in rows for size in row["shares"]}, key=lambda x: (x not in order, order.index(x)
                                                                                    if x in order else 0, x))
    lines = ["## Orchestration per round against a real-size verification pass", "",
             "Per round: (wall - model compute) / rounds of the tiny pair's speculative runs on the device "
             "(in-process: Python only; grpc: + serialisation and gRPC), against one 5-token pass "
             "(k = 4) of each target size (eager, interpolated from the cost curve).", "",
             "| transport | overhead / round ms | network / round ms | "
             + " | ".join(f"{s} pass ms | share of a {s} pass" for s in sizes) + " |",
             "|---|---:|---:|" + "---:|---:|" * len(sizes)]
    for row in rows:
        cells = []
        for s in sizes:
            sh = row["shares"].get(s)
            cells += [_f(sh and sh["pass_ms"]), _f(sh and sh["share"], ".1%")]
        lines.append(f"| {row['transport']} | {row['overhead_ms']:.2f} | {row['network_ms']:.2f} | "
                     + " | ".join(cells) + " |")
    return lines + [""]


def markdown(r: dict) -> str:
    return "\n".join([*header(r), *steps(r), *equality(r), *cost(r), *profiles(r), *overhead(r), *bench(r)]) + "\n"
