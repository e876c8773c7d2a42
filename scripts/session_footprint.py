"""Worker memory after abandoned sessions (issue 16, item 4): a footprint bound.

Starts a real draft worker and target worker as processes on 127.0.0.1 (tiny preset,
`--max-batch 4`, a `--session-ttl` of `--ttl`) and drives them over gRPC as a coordinator
would: each session gets a prompt of `--prompt-tokens`, one draft call (4 tokens) and one
verify call, and is abandoned: never Released, as when a client disconnects mid-stream
or the coordinator dies. A share of them (`--stream-share`) is opened on the session
streams (DraftStream, VerifyStream), which are then cancelled; the rest on the unary
rpcs (Draft, Verify). Each worker's RSS (/proc/PID/status VmRSS) and its own session
count (GetInfo, which opens none) are read

  start                 after `--warmup` sessions were opened and swept by the TTL
  round r: opened       after `--sessions` abandoned sessions
  round r: after TTL    once both workers report 0 sessions with no call in between
                        (the workers' TTL sweep), plus `--settle` seconds

`--rounds` times: a leak grows round after round, what the allocator keeps does not.

The bound. A session's KV cache weighs layers x 2 (K, V) x kv_heads x head_dim x 4 bytes
per cached token (the tiny pair: 512 B; 68 tokens: 34 KiB). After the TTL a worker holds
no session and RSS(after TTL) <= RSS(start) + X, X = max(SLACK_MIB, RETAIN_SHARE x the
caches it held at its peak, min(N, max_sessions) x KV per session). X is not zero: once
the sweep drops the caches and trims the heap (malloc_trim), what stays is Python's
object pools and grown tables, a few KiB per session held at the peak (measured: +0.3
MiB after 200, +1.8 to +3.3 MiB after 1,000; BENCHMARKS.md), bounded by max_sessions and
reused by the next sessions, not grown by them (round 2 ends where round 1 did). Without
the trim RSS stays at its peak, +42 to +62 MiB (`--no-trim`); without the sweep the
caches stayed until the next call.

    .venv/bin/python scripts/session_footprint.py --sessions 1000 --json bench-results/session-footprint.json

Loopback only; the workers stop when the script ends (and with it, if it is killed).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the driver lives with the test that uses it too

from specdec.backend.sessions import TRIM_ENV, sweep_interval  # noqa: E402
from specdec.launch.stack import Service, free_ports  # noqa: E402
from tests.helpers.abandon import DRAFT_TOKENS, MIB, Abandoner, kv_bytes_per_token, memory  # noqa: E402

SLACK_MIB = 8.0  # what a worker may keep after the TTL however few sessions came (see the docstring)
RETAIN_SHARE = 0.25  # ... or this share of the caches it held at its peak, if more


def bound_bytes(peak_sessions: int, kv_per_session: int) -> float:
    return max(SLACK_MIB * MIB, RETAIN_SHARE * peak_sessions * kv_per_session)


def snapshot(phase: str, services: dict[str, Service], infos: dict, seconds: float | None = None) -> dict:
    row = {"phase": phase, "seconds": seconds}
    for role, service in services.items():
        mem = memory(service.process.pid)
        row[role] = {"rss": mem["VmRSS"], "hwm": mem["VmHWM"], "sessions": infos[role].sessions,
                     "evictions": infos[role].evictions}
    return row


async def measure(args, services: dict[str, Service]) -> dict:
    workers = Abandoner(services["draft"].address, services["target"].address)
    try:
        vocab = (await workers.info())["target"].vocab_size
        sweep_timeout = args.ttl + sweep_interval(args.ttl) + 30.0
        phases = []
        await workers.abandon_many(args.warmup, args.prompt_tokens, vocab, args.stream_share, args.concurrency, "warm")
        waited, infos = await workers.wait_swept(sweep_timeout)
        await asyncio.sleep(args.settle)
        phases.append(snapshot("start (warm-up swept)", services, infos, waited))
        for r in range(1, args.rounds + 1):
            began = time.monotonic()
            await workers.abandon_many(
                args.sessions, args.prompt_tokens, vocab, args.stream_share, args.concurrency, f"gone{r}")
            opened = snapshot(f"round {r}: {args.sessions} opened, abandoned", services, await workers.info(),
                              time.monotonic() - began)
            phases.append(opened)
            waited, infos = await workers.wait_swept(sweep_timeout)
            await asyncio.sleep(args.settle)
            phases.append(snapshot(f"round {r}: after TTL + sweep", services, infos, waited))
        return {"phases": phases, "vocab": vocab}
    finally:
        await workers.close()


def verdicts(args, result: dict) -> dict:
    from specdec.models.tiny import tiny_config, tiny_tokenizer

    per_token = kv_bytes_per_token(tiny_config(len(tiny_tokenizer())))  # the tiny draft has the target's shape
    per_session = (args.prompt_tokens + DRAFT_TOKENS) * per_token  # what a worker caches per session, at most
    start, rounds = result["phases"][0], result["phases"][1:]
    out = {}
    for role in ("draft", "target"):
        peak = min(args.sessions, args.max_sessions)
        bound = bound_bytes(peak, per_session)
        after = [p[role] for p in rounds[1::2]]
        grown = [a["rss"] - start[role]["rss"] for a in after]
        out[role] = {
            "kv_bytes_per_session": per_session,
            "leak_if_kept_bytes": args.sessions * per_session,
            "bound_bytes": bound,
            "grown_while_open_bytes": [p[role]["rss"] - start[role]["rss"] for p in rounds[0::2]],
            "grown_after_ttl_bytes": grown,
            "sessions_after_ttl": [a["sessions"] for a in after],
            "within": all(g <= bound for g in grown) and all(a["sessions"] == 0 for a in after),
        }
    return out


def markdown(result: dict, judged: dict) -> str:
    lines = [
        "| phase | draft RSS MiB | target RSS MiB | draft sessions | target sessions | evictions (d / t) | s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in result["phases"]:
        d, t = p["draft"], p["target"]
        seconds = f"{p['seconds']:.1f}" if p["seconds"] is not None else ""
        lines.append(f"| {p['phase']} | {d['rss'] / MIB:.1f} | {t['rss'] / MIB:.1f} | {d['sessions']} | {t['sessions']} "
                     f"| {d['evictions']} / {t['evictions']} | {seconds} |")
    lines += ["", "| worker | KV per session | N caches weigh | RSS grew while open | RSS grew after TTL | bound | within |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for role, v in judged.items():
        def mib(values):
            return " / ".join(f"{b / MIB:+.1f}" for b in values) + " MiB"

        lines.append(
            f"| {role} | {v['kv_bytes_per_session'] / 1024:.1f} KiB | {v['leak_if_kept_bytes'] / MIB:.1f} MiB "
            f"| {mib(v['grown_while_open_bytes'])} | {mib(v['grown_after_ttl_bytes'])} "
            f"| {v['bound_bytes'] / MIB:.1f} MiB | {'yes' if v['within'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000, help="abandoned sessions to open (default 1000)")
    parser.add_argument("--warmup", type=int, default=64, help="sessions opened and swept before the baseline")
    parser.add_argument("--prompt-tokens", type=int, default=64, help="prompt length of each session")
    parser.add_argument("--ttl", type=float, default=20.0,
                        help="the workers' --session-ttl, s (default: longer than opening 1,000 takes here, so all "
                             "are held at once; with 2 s the TTL drops them while the rest are being opened)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="open N and wait for the sweep this many times: a leak grows each round, retention not")
    parser.add_argument("--max-sessions", type=int, default=2048,
                        help="the workers' --max-sessions (default above --sessions: the TTL, not the LRU, drops them)")
    parser.add_argument("--max-batch", type=int, default=4, help="the workers' --max-batch (>1: the batching path)")
    parser.add_argument("--stream-share", type=float, default=0.25,
                        help="share of sessions opened on cancelled session streams (the rest: unary rpcs)")
    parser.add_argument("--concurrency", type=int, default=8, help="sessions being opened at once")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after the sweep before reading RSS")
    parser.add_argument("--preset", default="tiny", choices=["tiny"])
    parser.add_argument("--no-trim", action="store_true",
                        help="workers never malloc_trim after a sweep (SPECDEC_MALLOC_TRIM=0): what trimming is worth")
    parser.add_argument("--extra-worker-args", default="", help="more worker flags, space-separated")
    parser.add_argument("--json", type=Path, help="write the result here (its folder is created)")
    args = parser.parse_args(argv)
    if not 0 <= args.stream_share <= 1:
        parser.error("--stream-share must be in 0..1")
    if args.rounds < 1 or args.sessions < 1:
        parser.error("--rounds and --sessions must be >= 1")

    log_dir = Path(tempfile.mkdtemp(prefix="specdec-footprint-"))
    flags = ["--preset", args.preset, "--seed", "0", "--threads", "1", "--session-ttl", str(args.ttl),
             "--max-sessions", str(args.max_sessions), "--max-batch", str(args.max_batch),
             *args.extra_worker_args.split()]
    draft_port, target_port = free_ports(2)
    env = {TRIM_ENV: "0" if args.no_trim else "1"}
    services = {"draft": Service("draft", "draft_worker", draft_port, flags, log_dir, env=env),
                "target": Service("target", "target_worker", target_port, flags, log_dir, env=env)}
    try:
        for service in services.values():
            service.start()
        for service in services.values():
            service.wait_serving(180.0)
        result = asyncio.run(measure(args, services))
    finally:
        for service in services.values():
            service.terminate()
        for service in services.values():
            service.stop()
        shutil.rmtree(log_dir, ignore_errors=True)

    judged = verdicts(args, result)
    table = markdown(result, judged)
    print(table)
    print(f"\nbound: after the TTL, 0 sessions and RSS <= RSS at start + max({SLACK_MIB:.0f} MiB, "
          f"{RETAIN_SHARE:.0%} of the KV caches held at the peak, min(N, max_sessions) x KV per session)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "loadavg": os.getloadavg(), "command": " ".join(sys.argv), "args": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "slack_mib": SLACK_MIB, "retain_share": RETAIN_SHARE, **result, "verdicts": judged, "markdown": table,
        }, indent=2))
    return 0 if all(v["within"] for v in judged.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
