"""Eager against compiled (specdec/runtime/compiled.py), A/B interleaved on one model.

    python scripts/runtime_ab.py [--device cpu] [--models tiny,0.5b] [--dtype float32] [--reps 9] [--json PATH]

For each model (`tiny`: the tiny pair's target; `0.5b` / `7b` / `32b`: random weights of the
Qwen2.5 shape, specdec/models/qwen_sizes.py) and each token count q, one session holds
CONTEXT cached tokens and runs a q-token forward (`ModelSession.forward`, cropped back
after it) alternately eager and compiled, `--reps` times each, so a shared machine's drift
hits both alike; it prints the medians and their ratio, and the compile time (the first
compiled call of each shape). No speed is asserted anywhere; BENCHMARKS.md §13 quotes a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from specdec.models.presets import load_preset  # noqa: E402
from specdec.models.qwen_sizes import qwen_size, random_qwen2  # noqa: E402
from specdec.runtime.compiled import apply_runtime, compile_stats, remove_runtime  # noqa: E402
from specdec.runtime.session import ModelSession  # noqa: E402

CONTEXT = 128
TOKENS = (1, 2, 5, 8, 16)


def load(name: str, device: str, dtype: torch.dtype):
    if name == "tiny":
        return load_preset("tiny", seed=0, device=device, roles=("target",)).target.to(dtype)
    return random_qwen2(qwen_size(name), device, dtype, seed=1)


def forward_s(session: ModelSession, fill: list[int], q: int) -> float:
    session.crop(CONTEXT)
    began = time.perf_counter()
    session.forward(CONTEXT, fill[:q], n_logits=q)
    return time.perf_counter() - began


def ab(model, reps: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, min(int(model.config.vocab_size), 32000), (CONTEXT + max(TOKENS),), generator=gen).tolist()
    session = ModelSession(model)
    session.forward(0, ids[:CONTEXT])
    fill = ids[CONTEXT:]
    out = {}
    with torch.inference_mode():
        for q in TOKENS:
            apply_runtime(model, "compiled")
            graphs = compile_stats()["unique_graphs"]
            first = forward_s(session, fill, q)  # compiles this shape's graphs if new
            compiled_graphs = compile_stats()["unique_graphs"] - graphs
            remove_runtime(model)
            forward_s(session, fill, q)  # eager warm-up of the shape
            times = {"eager": [], "compiled": []}
            for _ in range(reps):
                for runtime in ("eager", "compiled"):
                    apply_runtime(model, runtime)
                    times[runtime].append(forward_s(session, fill, q))
            remove_runtime(model)
            e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
            out[str(q)] = {"eager_ms": e * 1000, "compiled_ms": c * 1000, "ratio": c / e,
                           "first_compiled_s": first, "graphs_compiled": compiled_graphs}
            print(f"  q={q:2d}: eager {e * 1000:8.2f} ms, compiled {c * 1000:8.2f} ms ({c / e:.2f}x); first compiled "
                  f"call {first:.1f} s ({compiled_graphs} new graphs)", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="tiny,0.5b")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"device": args.device, "dtype": args.dtype, "threads": torch.get_num_threads(), "context": CONTEXT,
              "reps": args.reps, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "load_start": Path("/proc/loadavg").read_text().split()[:3], "models": {}}
    for name in args.models.split(","):
        print(f"{name} ({args.dtype}, {args.device}, {torch.get_num_threads()} threads):", flush=True)
        result["models"][name] = ab(load(name, args.device, getattr(torch, args.dtype)), args.reps)
    result["load_end"] = Path("/proc/loadavg").read_text().split()[:3]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"load average {' '.join(result['load_start'])} -> {' '.join(result['load_end'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
