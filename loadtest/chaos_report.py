"""What the chaos scenario shows: per phase, requests completed / lost / failed (by gRPC
status), greedy outputs against the target alone, latency; as a table, JSON and markdown.

Phases (seconds since the first request, from the run's fault times):
- before: requests that ended before the kill;
- during: requests in flight at any moment from the kill until the run settled (the
  restarted worker answered SERVING, plus the settle time), so every request the faults
  hit is here;
- after:  requests that started once it settled.
Each request is in exactly one phase. Latency percentiles are over completed requests.

Greedy equality: a greedy request that completed must have streamed exactly the target
alone's tokens; one that failed or was lost must have streamed a prefix of them (a fault
never excuses a wrong token). Sampled requests are counted, not compared: a request that
lost its draft finishes target-only, which samples other (equally distributed) tokens.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from loadtest.chaos import COMPLETED, FAILED, LOST, STREAMS, ChaosRecord, ChaosResult, Events
from loadtest.report import percentile

PHASES = ("before", "during", "after")


def phase_of(record: ChaosRecord, events: Events) -> str:
    """before / during / after (module docstring); a fault that never happened (the load
    ended first) leaves its phase empty."""
    if events.kill_s is None or record.ended_s < events.kill_s:
        return "before"
    if events.settled_s is not None and record.started_s >= events.settled_s:
        return "after"
    return "during"


def greedy_verdict(record: ChaosRecord, reference: dict[str, Sequence[int]]) -> bool | None:
    """None for a sampled request; else whether what it streamed is the target alone's
    output (all of it when completed, a prefix of it otherwise)."""
    if record.sampled:
        return None
    expected = list(reference[record.prompt])
    if record.outcome == COMPLETED:
        return record.token_ids == expected
    return record.token_ids == expected[: len(record.token_ids)]


def _counts(records: Sequence[ChaosRecord], reference: dict) -> dict:
    completed = [r for r in records if r.outcome == COMPLETED]
    greedy = [r for r in records if not r.sampled]
    verdicts = [greedy_verdict(r, reference) for r in greedy]
    latencies = [r.latency_s for r in completed]
    return {
        "requests": len(records),
        "completed": len(completed),
        "lost": sum(r.outcome == LOST for r in records),
        "failed": dict(sorted(Counter(r.code for r in records if r.outcome == FAILED).items())),
        "greedy": len(greedy),
        "greedy_completed": sum(r.outcome == COMPLETED for r in greedy),
        "greedy_identical": sum(bool(v) and r.outcome == COMPLETED for r, v in zip(greedy, verdicts)),
        "greedy_mismatches": sum(not v for v in verdicts),
        "latency_s": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                      "max": max(latencies, default=None)},
        "reprefilled": sum(r.reprefills > 0 for r in completed),
        "target_only": sum(r.draft_fallback for r in completed),
    }


def summarise(result: ChaosResult) -> dict:
    events, records, reference = result.events, result.records, result.reference
    phases = {p: [r for r in records if phase_of(r, events) == p] for p in PHASES}
    windows = {"before": (0.0, events.kill_s), "during": (events.kill_s, events.settled_s),
               "after": (events.settled_s, result.wall_s)}
    kill = events.kill_s
    summary = {
        "phases": [{"phase": p, "window_s": windows[p], **_counts(phases[p], reference)} for p in PHASES],
        "total": {"phase": "all", "window_s": (0.0, result.wall_s), **_counts(records, reference)},
        "by_kind": [{"kind": k.name, **_counts([r for r in records if r.kind == k.name], reference)}
                    for k in STREAMS if any(r.kind == k.name for r in records)],
        "in_flight_at_kill": 0 if kill is None else sum(r.started_s <= kill < r.ended_s for r in records),
        "events": asdict(events),
        "missing_events": [name for name in ("kill_s", "restart_s", "serving_s") if getattr(events, name) is None],
        "empty_phases": [p for p in PHASES if not phases[p]],
    }
    total = summary["total"]
    summary["lost"] = total["lost"]
    summary["failed"] = sum(total["failed"].values())
    summary["greedy_mismatches"] = total["greedy_mismatches"]
    # the scenario did what it says: every fault happened and every phase saw requests
    summary["complete"] = not (summary["missing_events"] or summary["empty_phases"] or events.error)
    return summary


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _window(w) -> str:
    a, b = w
    return f"{_s(a)}–{_s(b)}" if a is not None or b is not None else "-"


def _row(name: str, c: dict, window: str | None) -> str:
    failed = ", ".join(f"{code} {n}" for code, n in c["failed"].items()) or "0"
    greedy = f"{c['greedy_identical']} / {c['greedy_completed']} | {c['greedy_mismatches']}" if c["greedy"] else "- | -"
    return (
        f"| {name} |{f' {window} |' if window is not None else ''} {c['requests']} | {c['completed']} | {c['lost']} "
        f"| {failed} | {greedy} "
        f"| {_s(c['latency_s']['p50'])} / {_s(c['latency_s']['p95'])} | {c['reprefilled']} | {c['target_only']} |"
    )


def markdown_table(summary: dict) -> str:
    """Per phase, then per stream kind."""
    cells = ("requests | completed | lost | failed (status) | greedy identical / completed | wrong tokens "
             "| latency p50 / p95 (s) | re-prefilled | target-only |")
    head = f"| phase | window (s) | {cells}"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    rows += [_row(p["phase"], p, _window(p["window_s"])) for p in summary["phases"]]
    rows.append(_row("**all**", summary["total"], _window(summary["total"]["window_s"])))
    head = f"| stream | {cells}"
    rows += ["", head, "|" + "---|" * (head.count("|") - 1)]
    rows += [_row(k["kind"], k, None) for k in summary["by_kind"]]
    return "\n".join(rows)


def describe(summary: dict) -> str:
    """The faults and the verdict in a few lines, below the table."""
    e = summary["events"]
    killed = ", ".join(f"{k['name']} (pid {k['pid']})" for k in e["killed"].values()) or "nothing"
    lines = [f"killed at {_s(e['kill_s'])}s: {killed}; {summary['in_flight_at_kill']} requests in flight then"]
    if e["restarted"]:
        lines.append(f"restarted at {_s(e['restart_s'])}s: {e['restarted']['name']} (pid {e['restarted']['pid']}), "
                     f"serving at {_s(e['serving_s'])}s, settled at {_s(e['settled_s'])}s; then it held up to "
                     f"{e['rejoined_sessions']} sessions")
    if e["error"]:
        lines.append(f"WARNING: the faults stopped short: {e['error']}")
    elif summary["missing_events"] or summary["empty_phases"]:
        lines.append(f"WARNING: the load ended before every fault and phase (never happened: "
                     f"{', '.join(summary['missing_events']) or '-'}; empty phases: "
                     f"{', '.join(summary['empty_phases']) or '-'}): raise --requests or --duration")
    lines.append(f"lost {summary['lost']}, failed {summary['failed']}, greedy outputs differing from the target "
                 f"alone {summary['greedy_mismatches']}")
    return "\n".join(lines)


def write_json(path: str | Path, result: ChaosResult, summary: dict, meta: dict) -> None:
    plan = asdict(result.plan) | {"kill_s": result.plan.kill_s, "restart_s": result.plan.restart_s}
    records = [r.as_dict() | {"phase": phase_of(r, result.events), "greedy_ok": greedy_verdict(r, result.reference)}
               for r in result.records]
    data = {"meta": meta | {"addresses": result.addresses}, "plan": plan, "summary": summary, "records": records,
            "reference": {p: list(ids) for p, ids in result.reference.items()}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def write_markdown(path: str | Path, summary: dict, meta: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(f"{meta['date']}, `{meta['command']}`\n\n{markdown_table(summary)}\n\n{describe(summary)}\n")
