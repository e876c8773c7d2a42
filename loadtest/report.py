"""Records -> figures: requests/s, tokens/s, TTFT, TPOT, latency percentiles, errors by
status code, acceptance rate and tau; as JSON, a markdown table and a PNG plot.

Throughput counts successful requests only, over the level's wall time (first request
sent -> last one ended). Percentiles are over successful requests (linear
interpolation, numpy's default). Acceptance rate = sum accepted / sum drafted and
tau = sum emitted / sum rounds over the successful requests' server stats
(docs/algorithms.md terms), i.e. token-weighted, not a mean of per-request ratios.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from loadtest.runner import RunResult

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None when empty."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _spread(values: Sequence[float]) -> dict:
    out = {f"p{q}": percentile(values, q) for q in PERCENTILES}
    out["mean"] = sum(values) / len(values) if values else None
    out["max"] = max(values) if values else None
    return out


def summarise(result: RunResult) -> dict:
    plan, records = result.plan, result.records
    ok = [r for r in records if r.ok]
    stats = [r.stats for r in ok if r.stats]
    drafted = sum(s["draft_tokens"] for s in stats)
    rounds = sum(s["rounds"] for s in stats)
    wall = result.wall_s
    return {
        "scenario": plan.scenario.value,
        "clients": plan.clients,
        "stream": plan.stream,
        "mode": plan.params.get("mode") or "server default",
        "max_new_tokens": plan.params.get("max_new_tokens"),
        "requests": len(records),
        "ok": len(ok),
        "errors": dict(sorted(Counter(r.code for r in records if not r.ok).items())),
        "wall_s": wall,
        "requests_per_s": len(ok) / wall if wall > 0 else 0.0,
        "tokens_per_s": sum(r.tokens for r in ok) / wall if wall > 0 else 0.0,
        "tokens": sum(r.tokens for r in ok),
        "timing": "client" if plan.stream else "server",
        "ttft_s": _spread([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot_s": _spread([r.tpot_s for r in ok if r.tpot_s is not None]),
        "latency_s": _spread([r.latency_s for r in ok]),
        "max_in_flight": max((r.in_flight for r in records), default=0),
        "acceptance_rate": sum(s["accepted_tokens"] for s in stats) / drafted if drafted else None,
        "tau": sum(s["emitted_tokens"] for s in stats) / rounds if rounds else None,
        "draft_fallbacks": sum(bool(s["draft_fallback"]) for s in stats),
        "reprefills": sum(s["reprefills"] for s in stats),
        "overruns": result.overruns,
        "modes_run": dict(sorted(Counter(s["mode_run"] for s in stats if s.get("mode_run")).items())),
        "sessions_per_target_forward": _per_forward(stats, len(ok), result.overruns),
        "auto_k_rounds": _k_rounds(stats),
    }


def _per_forward(stats: Sequence[dict], requests: int, overruns: dict | None) -> float | None:
    """How many sessions the target worker merged into a forward on average: the requests'
    target calls (a pass per round, a prefill per request) over the worker's forwards in the
    level (from its GetInfo counters; None without them, and with other traffic it is a bound)."""
    forwards = (overruns or {}).get("target_forwards")
    return (sum(s["rounds"] for s in stats) + requests) / forwards if forwards else None


def _k_rounds(stats: Sequence[dict]) -> dict[int, int]:
    """Rounds by the draft length policy auto chose, over the requests (empty for other policies)."""
    total: Counter = Counter()
    for s in stats:
        total.update({int(k): int(n) for k, n in (s.get("auto_k_rounds") or {}).items()})
    return dict(sorted(total.items()))


def choices(summary: dict) -> str:
    """What ran in a level, for a table cell: `4.2 sessions per target forward; sequential 30, pearl 2;
    k=0: 41, k=1: 300` (the modes and k of mode / policy auto)."""
    modes = ", ".join(f"{m} {n}" for m, n in (summary.get("modes_run") or {}).items())
    ks = ", ".join(f"k={k}: {n}" for k, n in (summary.get("auto_k_rounds") or {}).items())
    merged = summary.get("sessions_per_target_forward")
    per = f"{merged:.1f} sessions per target forward" if merged else ""
    return "; ".join(x for x in (per, modes, ks) if x) or "-"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.0f}"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown_table(summaries: Sequence[dict]) -> str:
    head = (
        "| scenario | clients | call | ok / sent | req/s | tok/s | TTFT p50 / p95 (ms) | TPOT p50 / p95 (ms) "
        "| latency p50 / p95 / p99 (s) | errors | acceptance | tau |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in summaries:
        errors = ", ".join(f"{code} {n}" for code, n in s["errors"].items()) or "none"
        call = "stream" if s["stream"] else "unary*"
        rows.append(
            f"| {s['scenario']} | {s['clients']} | {call} | {s['ok']} / {s['requests']} | {s['requests_per_s']:.2f} "
            f"| {s['tokens_per_s']:.1f} | {_ms(s['ttft_s']['p50'])} / {_ms(s['ttft_s']['p95'])} "
            f"| {_ms(s['tpot_s']['p50'])} / {_ms(s['tpot_s']['p95'])} "
            f"| {_s(s['latency_s']['p50'])} / {_s(s['latency_s']['p95'])} / {_s(s['latency_s']['p99'])} "
            f"| {errors} | {_ratio(s['acceptance_rate'])} | {_ratio(s['tau'])} |"
        )
    if any(not s["stream"] for s in summaries):
        rows.append("\n*unary: TTFT and TPOT from the server's stats (no first chunk to time on the client).")
    return "\n".join(rows)


def machine_info() -> dict:
    """Where and when (torch-free: the load generator never imports torch)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m loadtest", *(shlex.quote(a) for a in sys.argv[1:])]),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": load,
        "git_commit": commit or None,
    }


def write_json(path: str | Path, results: Sequence[RunResult], meta: dict, **extra) -> None:
    runs = []
    for result in results:
        plan = asdict(result.plan)
        plan["scenario"] = result.plan.scenario.value
        runs.append({
            "summary": summarise(result), "plan": plan, "records": [r.as_dict() for r in result.records],
        })
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"meta": meta, "runs": runs, **extra}, indent=1) + "\n")


def plot(path: str | Path, summaries: Sequence[dict], title: str = "") -> None:
    """Latency percentiles and throughput against the number of clients, one line per
    scenario/call kind."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install matplotlib (in the bench extra)") from None
    groups: dict[str, list[dict]] = {}
    for s in summaries:
        groups.setdefault(f"{s['scenario']}, {'stream' if s['stream'] else 'unary'}", []).append(s)
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, group in groups.items():
        group = sorted(group, key=lambda s: s["clients"])
        x = [s["clients"] for s in group]
        for q, style in zip(PERCENTILES, ("-o", "--s", ":^")):
            y = [s["latency_s"][f"p{q}"] for s in group]
            lat.plot(x, [v if v is not None else float("nan") for v in y], style, label=f"p{q} ({name})")
        thr.plot(x, [s["tokens_per_s"] for s in group], "-o", label=f"tokens/s ({name})")
        thr.plot(x, [10 * s["requests_per_s"] for s in group], "--s", label=f"10 x requests/s ({name})")
    levels = sorted({s["clients"] for s in summaries})
    for ax, ylabel, heading in ((lat, "latency (s)", "latency percentiles"), (thr, "per second", "throughput")):
        clients_axis(ax, levels, ylabel, heading)
    save_figure(fig, path, title)


def clients_axis(ax, levels: Sequence[int], ylabel: str, heading: str) -> None:
    """A log2 axis of client counts, labelled with the levels run."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(n) for n in levels])
    ax.minorticks_off()
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel(ylabel)
    ax.set_title(heading)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def save_figure(fig, path: str | Path, title: str = "") -> None:
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
