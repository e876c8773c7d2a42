"""Compare draft-length policies on one pair, in process: tau, acceptance rate, mean draft
length per round and wall time, with SpecDec++'s trained head among them.

    nice -n 19 python scripts/compare_policies.py --head ~/.cache/specdec/heads/qwen-coder \
        --limit 3 --max-new-tokens 48 --policies fixed:4,adaedl:8,specdecpp:8@0.3,specdecpp:8@0.5,specdecpp:8@0.7

A policy is NAME[:K][@THRESHOLD] (K = k for fixed, k_max for adaedl/specdecpp). Greedy
runs are compared token for token with the target alone (exact in fp32; in bf16 a near-tie
can flip, and the table says where). `specdec bench` is the full
benchmark; this script exists because it has no acceptance-head option yet.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from specdec import Engine
from specdec.bench import DEFAULT_PROMPTS


def parse_policy(spec: str) -> dict:
    name, _, threshold = spec.partition("@")
    name, _, k = name.partition(":")
    return dict(policy=name, draft_length=int(k) if k else 4, threshold=float(threshold) if threshold else None)


def run_policy(engine: Engine, prompts: list[str], spec: dict, args, reference: list[list[int]] | None) -> dict:
    totals = dict(tokens=0, rounds=0, draft_tokens=0, accepted_tokens=0, emitted_tokens=0, wall_s=0.0, differs=[])
    for i, prompt in enumerate(prompts):
        began = time.perf_counter()
        out = engine.generate(prompt, max_new_tokens=args.max_new_tokens, mode=args.mode, temperature=args.temperature,
                              seed=i, ignore_eos=True, chat=True, **spec)
        totals["wall_s"] += time.perf_counter() - began
        totals["tokens"] += len(out.token_ids)
        for key in ("rounds", "draft_tokens", "accepted_tokens", "emitted_tokens"):
            totals[key] += getattr(out.stats, key)
        if reference is not None and args.temperature == 0 and out.token_ids != reference[i]:
            # bf16: a batched verify forward rounds differently from one-token decoding, so a
            # near-tie argmax can flip; fp32 is the dtype in which greedy equality is exact
            first = next(j for j, (a, b) in enumerate(zip(out.token_ids, reference[i])) if a != b)
            totals["differs"].append(f"prompt {i} from token {first}")
    rounds, drafted = max(totals["rounds"], 1), max(totals["draft_tokens"], 1)
    return dict(totals, tau=totals["emitted_tokens"] / rounds, acceptance_rate=totals["accepted_tokens"] / drafted,
                mean_draft_length=totals["draft_tokens"] / rounds, tokens_per_s=totals["tokens"] / totals["wall_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="qwen-coder")
    parser.add_argument("--head", type=Path, help="folder of a trained acceptance head (needed for specdecpp)")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--mode", default="sequential")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--policies", default="fixed:4,adaedl:8,specdecpp:8@0.3,specdecpp:8@0.5,specdecpp:8@0.7")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    engine = Engine.from_preset(args.preset, dtype=args.dtype, acceptance_head=args.head)
    prompts = [json.loads(line)["prompt"] for line in args.prompts.read_text().splitlines() if line.strip()]
    prompts = prompts[: args.limit]
    engine.generate(prompts[0], max_new_tokens=4, chat=True)  # warm-up: first-call costs stay out of the table

    began = time.perf_counter()
    reference = [engine.generate(p, max_new_tokens=args.max_new_tokens, mode="autoregressive", ignore_eos=True,
                                 chat=True).token_ids for p in prompts]
    baseline_s = time.perf_counter() - began
    rows = [dict(config="autoregressive", tokens=sum(map(len, reference)), wall_s=baseline_s,
                 tokens_per_s=sum(map(len, reference)) / baseline_s)]
    for spec in args.policies.split(","):
        row = run_policy(engine, prompts, parse_policy(spec), args, reference)
        rows.append(dict(config=f"{args.mode} {spec}", **row))
        print(f"{rows[-1]['config']}: tau {row['tau']:.2f}, wall {row['wall_s']:.1f}s", flush=True)

    print(f"\n{args.preset} ({args.dtype}), {len(prompts)} prompts x {args.max_new_tokens} tokens, "
          f"temperature {args.temperature}, head {args.head}")
    print("| config | tau | acceptance rate | mean draft length / round | rounds | wall s | tok/s | speedup "
          "| same tokens as target alone |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if "tau" in r:
            print(f"| {r['config']} | {r['tau']:.2f} | {r['acceptance_rate']:.1%} | {r['mean_draft_length']:.2f} "
                  f"| {r['rounds']} | {r['wall_s']:.1f} | {r['tokens_per_s']:.2f} | {baseline_s / r['wall_s']:.2f}x "
                  f"| {'; '.join(r['differs']) or 'yes'} |")
        else:
            print(f"| {r['config']} | - | - | - | {r['tokens']} | {r['wall_s']:.1f} | {r['tokens_per_s']:.2f} | 1.00x "
                  "| (reference) |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
