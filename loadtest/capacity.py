"""The capacity sweep: which configuration serves the most load within a latency goal.

`python -m loadtest --sweep autoregressive,sequential:fixed:4,pearl:fixed:4,auto ...` runs
every configuration (a mode, a policy, a draft length) at every --clients level, one
steady closed-loop level each, against the same servers. Then, per configuration:

- throughput (tokens/s, requests/s) and TPOT p95 at every level;
- capacity: the highest requests/s of a level whose TPOT p95 <= the goal. The goal is
  `goal_factor` x the single-request TPOT (p50 at the fewest clients) of the target alone
  (`autoregressive` in the sweep; else of the first configuration), one goal for all so
  that capacities compare.

And the headline: auto against max(autoregressive, the best static speculative
configuration) at each level, and the configurations ranked by capacity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from loadtest.report import choices, clients_axis, save_figure
from specdec.core.names import Mode, PolicyName

GOAL_FACTOR = 2.0


@dataclass(frozen=True)
class Config:
    """One swept configuration: its name in tables and the request fields it sets."""

    name: str
    params: dict

    @property
    def is_auto(self) -> bool:
        return self.params.get("mode") == Mode.AUTO.value or self.params.get("policy") == PolicyName.AUTO.value

    @property
    def is_target_alone(self) -> bool:
        return self.params.get("mode") == Mode.AUTOREGRESSIVE.value


def parse_configs(text: str) -> list[Config]:
    """MODE[:POLICY[:K]] separated by commas, e.g. `autoregressive,sequential:fixed:4,
    pearl:adaedl,auto` (`auto` alone: mode auto, policy auto)."""
    configs = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        parts = item.split(":")
        if len(parts) > 3:
            raise ValueError(f"--sweep entries are MODE[:POLICY[:K]], got {item!r}")
        mode = parts[0]
        if mode not in {m.value for m in Mode}:
            raise ValueError(f"--sweep: unknown mode {mode!r} in {item!r}; modes: {', '.join(m.value for m in Mode)}")
        params: dict = {"mode": mode}
        if len(parts) > 1:
            if parts[1] not in {p.value for p in PolicyName}:
                policies = ", ".join(p.value for p in PolicyName)
                raise ValueError(f"--sweep: unknown policy {parts[1]!r} in {item!r}; policies: {policies}")
            params["policy"] = parts[1]
        elif mode == Mode.AUTO.value:
            params["policy"] = PolicyName.AUTO.value
        if len(parts) > 2:
            try:
                params["draft_length"] = int(parts[2])
            except ValueError:
                raise ValueError(f"--sweep: draft length must be a number, got {parts[2]!r} in {item!r}") from None
        configs.append(Config(" ".join([mode, ":".join(parts[1:])]).strip(), params))
    if not configs:
        raise ValueError("--sweep needs at least one MODE[:POLICY[:K]]")
    if len({c.name for c in configs}) != len(configs):
        raise ValueError(f"--sweep names a configuration twice: {text!r}")
    return configs


def analyse(configs: Sequence[Config], summaries: dict[str, list[dict]], goal_factor: float = GOAL_FACTOR) -> dict:
    """`summaries`: configuration name -> its levels' summaries (loadtest.report.summarise)."""
    reference = next((c for c in configs if c.is_target_alone), configs[0])
    first = min(summaries[reference.name], key=lambda s: s["clients"])
    single_tpot = first["tpot_s"]["p50"]
    goal = goal_factor * single_tpot if single_tpot else None
    rows = {}
    for c in configs:
        levels = {}
        for s in sorted(summaries[c.name], key=lambda s: s["clients"]):
            tpot95 = s["tpot_s"]["p95"]
            levels[s["clients"]] = {
                "tokens_per_s": s["tokens_per_s"], "requests_per_s": s["requests_per_s"], "tpot_p95_s": tpot95,
                "ttft_p95_s": (s.get("ttft_s") or {}).get("p95"),
                "ok": s["ok"], "requests": s["requests"], "overruns": (s.get("overruns") or {}).get("overruns", 0),
                "meets_goal": goal is not None and tpot95 is not None and tpot95 <= goal and s["ok"] == s["requests"],
                "chose": choices(s),
            }
        meeting = [(v["requests_per_s"], n) for n, v in levels.items() if v["meets_goal"]]
        best = max(meeting, default=(0.0, None))
        rows[c.name] = {"params": c.params, "levels": levels, "capacity_requests_per_s": best[0],
                        "capacity_clients": best[1], "auto": c.is_auto, "target_alone": c.is_target_alone}
    clients = sorted({n for r in rows.values() for n in r["levels"]})
    static_sd = [c.name for c in configs if not c.is_auto and not c.is_target_alone]
    autos = [c.name for c in configs if c.is_auto]
    headline = []
    for n in clients:
        entry: dict = {"clients": n}
        if reference.is_target_alone and n in rows[reference.name]["levels"]:
            entry["autoregressive_tokens_per_s"] = rows[reference.name]["levels"][n]["tokens_per_s"]
        sd = [(rows[name]["levels"][n]["tokens_per_s"], name) for name in static_sd if n in rows[name]["levels"]]
        if sd:
            entry["best_static_sd"], entry["best_static_sd_tokens_per_s"] = max(sd)[1], max(sd)[0]
        for name in autos:
            if n in rows[name]["levels"]:
                entry.setdefault("auto", {})[name] = rows[name]["levels"][n]["tokens_per_s"]
        rivals = [v for k, v in entry.items() if k in ("autoregressive_tokens_per_s", "best_static_sd_tokens_per_s")]
        if rivals and entry.get("auto"):
            entry["auto_vs_best_rival"] = {name: t / max(rivals) for name, t in entry["auto"].items()}
        headline.append(entry)
    ranking = sorted(rows, key=lambda name: -rows[name]["capacity_requests_per_s"])
    return {"goal_factor": goal_factor, "single_request_tpot_s": single_tpot, "goal_tpot_p95_s": goal,
            "reference": reference.name, "configs": rows, "by_clients": headline, "capacity_ranking": ranking}


def markdown(analysis: dict) -> str:
    rows = analysis["configs"]
    clients = sorted({n for r in rows.values() for n in r["levels"]})
    goal = analysis["goal_tpot_p95_s"]
    lines = [
        f"Latency goal: TPOT p95 <= {analysis['goal_factor']:g} x the single-request TPOT of "
        f"{analysis['reference']} = {_ms(goal)} ms.",
        "",
        "| configuration | " + " | ".join(f"{n} clients: tok/s, TPOT p95 (ms), TTFT p95 (s)" for n in clients)
        + " | capacity (req/s at the goal) |",
        "|---|" + "---|" * (len(clients) + 1),
    ]
    for name in analysis["capacity_ranking"]:
        r = rows[name]
        cells = []
        for n in clients:
            v = r["levels"].get(n)
            if v is None:
                cells.append("-")
                continue
            mark = "" if v["meets_goal"] else " ✗"
            errors = "" if v["ok"] == v["requests"] else f" ({v['requests'] - v['ok']} failed)"
            overran = f" ({v['overruns']} overruns)" if v["overruns"] else ""
            ttft = "" if v.get("ttft_p95_s") is None else f", {v['ttft_p95_s']:.1f}"
            cells.append(f"{v['tokens_per_s']:.1f}, {_ms(v['tpot_p95_s'])}{mark}{ttft}{errors}{overran}")
        at = f" ({r['capacity_clients']} clients)" if r["capacity_clients"] else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['capacity_requests_per_s']:.2f}{at} |")
    lines.append("\n✗: TPOT p95 over the goal (or a request failed). overruns: forwards whose real compute "
                 "exceeded the cost profile's budget (that level measured the host, not the profile).")
    verdicts = []
    for e in analysis["by_clients"]:
        for name, ratio in (e.get("auto_vs_best_rival") or {}).items():
            rival = max(
                (("autoregressive", e.get("autoregressive_tokens_per_s", 0.0)),
                 (e.get("best_static_sd", "-"), e.get("best_static_sd_tokens_per_s", 0.0))),
                key=lambda x: x[1],
            )
            verdicts.append(f"| {e['clients']} | {name} | {e['auto'][name]:.1f} | {rival[0]} | {rival[1]:.1f} | {ratio:.2f}x |")
    if verdicts:
        lines += ["", "| clients | auto | tok/s | best of autoregressive and static SD | tok/s | auto / best |",
                  "|---|---|---|---|---|---|", *verdicts]
    chose = [f"| {n} | {name} | {r['levels'][n]['chose']} |" for name, r in rows.items() for n in sorted(r["levels"])
             if r["levels"][n]["chose"] != "-"]
    if chose:
        lines += ["", "| clients | configuration | what ran (batching; requests by mode; rounds by draft length k) |",
                  "|---|---|---|", *chose]
    return "\n".join(lines)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.0f}"


def plot(path: str | Path, analysis: dict, title: str = "") -> None:
    """Tokens/s and TPOT p95 against clients, one line per configuration, the goal dashed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install matplotlib (in the bench extra)") from None
    fig, (thr, lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    levels = sorted({n for r in analysis["configs"].values() for n in r["levels"]})
    for name, r in analysis["configs"].items():
        x = sorted(r["levels"])
        style = "-o" if r["auto"] else ("--s" if r["target_alone"] else ":^")
        thr.plot(x, [r["levels"][n]["tokens_per_s"] for n in x], style, label=name)
        tpot = [r["levels"][n]["tpot_p95_s"] for n in x]
        lat.plot(x, [1000 * t if t is not None else float("nan") for t in tpot], style, label=name)
    if analysis["goal_tpot_p95_s"]:
        lat.axhline(1000 * analysis["goal_tpot_p95_s"], color="grey", linestyle="--", label="goal")
    for ax, ylabel, heading in ((thr, "tokens/s", "throughput"), (lat, "TPOT p95 (ms)", "time per output token")):
        clients_axis(ax, levels, ylabel, heading)
    save_figure(fig, path, title)
