"""`python -m loadtest`: bounded load on a coordinator, as a table, JSON and a plot.

    python -m loadtest --stack tiny --clients 1,4,16 --requests 32 --duration 60 \\
        --json bench-results/loadtest-tiny.json --plot bench-results/loadtest-tiny.png
    python -m loadtest --address 127.0.0.1:50051 --scenario burst --clients 8 --unary
    python -m loadtest --stack tiny --cost-profile gpu-batch --max-batch 16 --clients 1,4,16,32 \
        --sweep autoregressive,sequential:fixed:4,pearl:fixed:4,auto --json bench-results/capacity.json
    python -m loadtest --stack tiny --scenario chaos --clients 32 --duration 60 --fail-on-lost \
        --json bench-results/chaos-tiny.json --markdown bench-results/chaos-tiny.md

--stack starts draft worker, target worker and coordinator on 127.0.0.1 (as
`specdec up`) and stops them at the end; --address loads a running coordinator,
loopback only unless --allow-remote. Each --clients level is one run of the scenario,
in order, against the same servers. --sweep runs every configuration it names at every
level and reports each one's capacity at a latency goal (loadtest/capacity.py).
--scenario chaos starts its own stack of 2 draft and 2 target replicas and kills and
restarts replicas under load (loadtest/chaos.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from contextlib import nullcontext
from pathlib import Path

from loadtest import capacity, chaos, chaos_report
from specdec.client import workers as budgets
from loadtest.report import machine_info, markdown_table, plot, summarise, write_json
from loadtest.runner import run_plan
from loadtest.scenarios import (
    DEFAULT_PROMPTS,
    SHORT_PROMPTS,
    LoadPlan,
    Scenario,
    check_loopback,
    load_prompts,
)
from specdec.core.names import Mode, PolicyName

CHAOS = "chaos"  # not a Scenario of LoadPlan: it has its own runner and report (loadtest/chaos.py)


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--clients takes numbers separated by commas, e.g. 1,4,16; got {text!r}")
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"--clients needs numbers >= 1, got {text!r}")
    return levels


def _sweep(text: str) -> list[capacity.Config]:
    try:
        return capacity.parse_configs(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _kinds(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--address", help="A running coordinator, HOST:PORT (loopback unless --allow-remote).")
    where.add_argument("--stack", choices=["tiny", "qwen-coder"], help="Start a local stack of this preset for the run.")
    p.add_argument("--scenario", choices=[s.value for s in Scenario] + [CHAOS], default="steady",
                   help="steady | ramp | burst | chaos (replicas killed and restarted under load: loadtest/chaos.py).")
    p.add_argument("--clients", type=_levels, default=[1], help="Concurrency levels, e.g. 1,4,16 (one run each).")
    p.add_argument("--requests", type=int, default=None,
                   help=f"Requests per level at most (default 16; chaos: {chaos.ChaosPlan.requests}).")
    p.add_argument("--duration", type=float, default=60.0, help="No request starts after this many s per level.")
    p.add_argument("--drain", type=float, default=30.0, help="Then in-flight requests get this long (s), then TIMEOUT.")
    p.add_argument("--ramp", type=float, default=None, help="ramp: s until the last client joins (default duration/2).")
    p.add_argument("--mix", type=_kinds, default=(), help="Prompt kinds, e.g. code,prose (default: all).")
    p.add_argument("--prompts", default=str(DEFAULT_PROMPTS),
                   help="A jsonl of {\"kind\", \"prompt\"} (default: the bench's prompts), or `short`: "
                        "loadtest/prompts-short.jsonl, a decode-heavy load.")
    p.add_argument("--stream", dest="stream", action="store_true", default=True, help="Streamed Generate (default).")
    p.add_argument("--unary", dest="stream", action="store_false", help="Unary Complete instead.")
    p.add_argument("--max-new-tokens", type=int, default=64, help="Per request (default 64).")
    p.add_argument("--mode", choices=[m.value for m in Mode], default=None, help="Default: the server's.")
    p.add_argument("--policy", choices=[p.value for p in PolicyName], default=None, help="Default: the server's.")
    p.add_argument("--draft-length", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None,
                   help=f"0 = greedy (default). chaos: the sampled streams' (default {chaos.ChaosPlan.temperature}).")
    p.add_argument("--seed", type=int, default=None, help="Fixed seed for sampled requests (chaos: the base seed).")
    p.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True,
                   help="Generate exactly --max-new-tokens (default on: comparable token counts).")
    p.add_argument("--sweep", type=_sweep, default=None,
                   help="Capacity sweep: MODE[:POLICY[:K]],... (e.g. autoregressive,sequential:fixed:4,auto), each "
                        "at every --clients level, >= 2 requests per client; reports capacity at the latency goal.")
    p.add_argument("--goal-factor", type=float, default=capacity.GOAL_FACTOR,
                   help="--sweep: the goal is TPOT p95 <= this x the target alone's single-request TPOT (default 2).")
    p.add_argument("--warmup", type=int, default=1, help="Unrecorded requests before each level (default 1).")
    p.add_argument("--cost-profile", default=None, help="--stack: emulate a device's latency (e.g. gpu-like).")
    p.add_argument("--max-batch", type=int, default=1,
                   help="--stack: workers merge up to N sessions' forwards into one (default 1: no batching).")
    p.add_argument("--startup-timeout", type=float, default=600.0, help="--stack: s to wait for SERVING.")
    p.add_argument("--json", dest="json_path", help="Write summaries and raw records here.")
    p.add_argument("--plot", dest="plot_path", help="Write a PNG of latency and throughput vs clients here.")
    p.add_argument("--markdown", dest="markdown_path", help="Write the markdown table here too.")
    p.add_argument("--fail-on-errors", action="store_true", help="Exit 1 if any request failed (CI).")
    p.add_argument("--allow-remote", action="store_true", help="Allow a non-loopback --address (prints a warning).")
    c = p.add_argument_group("chaos", "--scenario chaos: faults at fixed times after the first request")
    c.add_argument("--kill-at", type=float, default=None,
                   help="SIGKILL a target and a draft replica (default duration/4).")
    c.add_argument("--restart-at", type=float, default=None, help="Restart one of them (default duration/2).")
    c.add_argument("--restart", choices=chaos.RESTARTABLE, default="target", help="Which one (default target).")
    c.add_argument("--settle", type=float, default=chaos.ChaosPlan.settle_s,
                   help="s after the restarted worker serves until the 'after' phase (default 2).")
    c.add_argument("--after", type=float, default=chaos.ChaosPlan.after_s,
                   help="The 'after' phase lasts at least this many s, past --duration if the restart was slow "
                        "(default 5).")
    c.add_argument("--timeout", type=float, default=chaos.ChaosPlan.timeout_s,
                   help="Cut the whole run (reference, start-up, load) after this many s (default 600).")
    c.add_argument("--fail-on-lost", action="store_true",
                   help="Exit 1 if a request was lost, a greedy output differs from the target alone, or a "
                        "fault or phase did not happen (CI).")
    return p


def request_params(args) -> dict:
    params = dict(
        max_new_tokens=args.max_new_tokens, mode=args.mode, policy=args.policy, draft_length=args.draft_length,
        temperature=args.temperature, seed=args.seed, ignore_eos=args.ignore_eos,
    )
    return {k: v for k, v in params.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.scenario == CHAOS:
        return run_chaos(args)
    if args.requests is None:
        args.requests = 16
    try:
        if args.address:
            warning = check_loopback(args.address, args.allow_remote)
            if warning:
                print(warning, file=sys.stderr)
        prompts = load_prompts(SHORT_PROMPTS if args.prompts == "short" else args.prompts, args.mix)
        configs = args.sweep or [None]
        if args.sweep and not args.goal_factor > 1.0:
            raise ValueError(f"--goal-factor must be > 1, got {args.goal_factor}")
        plans = [
            (config, LoadPlan(
                scenario=Scenario(args.scenario), clients=n,
                requests=max(args.requests, 2 * n) if config else args.requests, duration_s=args.duration,
                drain_s=args.drain, ramp_s=args.ramp, stream=args.stream,
                params={**request_params(args), **(config.params if config else {})}, warmup=args.warmup,
            ))
            for config in configs for n in args.clients
        ]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    stack = None
    if args.stack:
        from specdec.launch.stack import LocalStack

        stack = LocalStack(preset=args.stack, cost_profile=args.cost_profile, startup_timeout_s=args.startup_timeout,
                           worker_args=("--max-batch", str(args.max_batch)))
    meta = machine_info()
    results = []
    try:
        with stack if stack is not None else nullcontext():
            address = stack.address if stack is not None else args.address
            meta.update(address=address, stack=args.stack, cost_profile=args.cost_profile, max_batch=args.max_batch)
            workers = {"draft": stack.draft.address, "target": stack.target.address} if stack else {}
            checked = bool(workers and args.cost_profile)
            for config, plan in plans:
                which = f"{config.name}, " if config else ""
                print(f"{which}{plan.scenario.value}: {plan.clients} clients, <= {plan.requests} requests, "
                      f"<= {plan.duration_s:.0f}s ...", file=sys.stderr, flush=True)
                before = budgets.budget_counts(workers) if checked else None
                result = asyncio.run(run_plan(address, plan, prompts))
                if checked:
                    result.overruns = budgets.delta(before, budgets.budget_counts(workers))
                results.append((config, result))
    except Exception as exc:  # a stack that did not start, a KeyboardInterrupt passes through
        print(f"error: {exc}", file=sys.stderr)
        if not results:
            return 1
    summaries = [summarise(r) for _, r in results]
    table = markdown_table(summaries)
    analysis = None
    if args.sweep:
        swept = [c for c in args.sweep if any(config is c for config, _ in results)]
        by_config = {c.name: [summarise(r) for config, r in results if config is c] for c in swept}
        analysis = capacity.analyse(swept, by_config, args.goal_factor)
        table = capacity.markdown(analysis)
    print(table)
    if args.markdown_path:
        Path(args.markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown_path).write_text(f"{meta['date']}, `{meta['command']}`\n\n{table}\n")
    if args.json_path:
        write_json(args.json_path, [r for _, r in results], meta, **({"capacity": analysis} if analysis else {}))
    if args.plot_path:
        title = f"{args.stack or meta['address']}: {args.scenario}, max_new_tokens {args.max_new_tokens}"
        if analysis:
            capacity.plot(args.plot_path, analysis, f"{title}, {args.cost_profile or 'real costs'}, "
                                                    f"max_batch {args.max_batch}")
        else:
            plot(args.plot_path, summaries, title)
    failed = sum(s["requests"] - s["ok"] for s in summaries)
    return 1 if args.fail_on_errors and failed else 0


def chaos_plan(args) -> tuple[chaos.ChaosPlan, list]:
    """--scenario chaos's plan and prompts from the flags; ValueError names what it cannot run."""
    refused = [flag for flag, given in (("--address", args.address), ("--mode", args.mode), ("--sweep", args.sweep),
                                         ("--unary", not args.stream), ("--plot", args.plot_path)) if given]
    if refused:
        raise ValueError(f"--scenario chaos does not take {', '.join(refused)}: it starts its own stack "
                         "(--stack) and streams every mode")
    if len(args.clients) != 1:
        raise ValueError(f"--scenario chaos runs one --clients level, got {len(args.clients)}")
    prompts = load_prompts(SHORT_PROMPTS if args.prompts == "short" else args.prompts, args.mix)
    extra = {k: v for k, v in (("policy", args.policy), ("draft_length", args.draft_length)) if v is not None}
    default = chaos.ChaosPlan
    plan = chaos.ChaosPlan(
        clients=args.clients[0], requests=args.requests or default.requests, duration_s=args.duration,
        kill_at_s=args.kill_at, restart_at_s=args.restart_at, restart=args.restart, settle_s=args.settle,
        after_s=args.after, drain_s=args.drain, max_new_tokens=args.max_new_tokens,
        temperature=default.temperature if args.temperature is None else args.temperature,
        seed=args.seed or 0, params=extra, warmup=args.warmup, timeout_s=args.timeout,
    )
    return plan, prompts


def run_chaos(args) -> int:
    """--scenario chaos: its own cluster (it kills processes), one --clients level, streamed."""
    try:
        plan, prompts = chaos_plan(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = machine_info()
    worker_args = ["--max-batch", str(args.max_batch)]
    if args.cost_profile:
        worker_args += ["--cost-profile", args.cost_profile]
    try:
        result = chaos.run(plan, prompts, args.stack, worker_args, args.startup_timeout,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
    except Exception as exc:  # a stack that did not start, the overall timeout; KeyboardInterrupt passes
        print(f"error: {exc}", file=sys.stderr)
        return 1
    meta.update(stack=args.stack, cost_profile=args.cost_profile, max_batch=args.max_batch,
                load_average_after=_load_average())
    summary = chaos_report.summarise(result)
    print(chaos_report.markdown_table(summary))
    print(chaos_report.describe(summary))
    if args.markdown_path:
        chaos_report.write_markdown(args.markdown_path, summary, meta)
    if args.json_path:
        chaos_report.write_json(args.json_path, result, summary, meta)
    broken = args.fail_on_lost and (summary["lost"] or summary["greedy_mismatches"] or not summary["complete"])
    return 1 if broken or (args.fail_on_errors and summary["failed"]) else 0


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
