"""`scripts/gpu_check.sh`: everything worth knowing from a short loan of one GPU, in one command.

    python -m specdec.bench.gpu_check --out DIR [--device cuda|cpu] [--quick] [--budget-s 450]

Steps, in order of what matters most (each guarded by the time budget: a step that does not
fit in what is left is skipped with a note; results.json and summary.md are rewritten after
every step, so a run killed from outside still leaves what it measured):

1. env: the device, driver, versions, load average.
2. equality-tiny: greedy equality on the device, every mode x policy (specdec/bench/equality.py),
   the tiny pair (float32: exact).
3. bench-tiny: `specdec bench` on the device (sequential, PEARL, auto; fixed:4 and auto;
   Hugging Face assisted generation), the tiny pair, real costs.
4. overhead: the same bench through the gRPC stack whose workers run on the device
   (`--transport both`): Python + gRPC time per round, later put against the real sizes' passes.
5. cost-draft: the cost curves (specdec/bench/cost_curve.py) of a random Qwen2.5-0.5B-shaped draft.
6. per target size (7B, then 32B: one at a time in memory), random Qwen2.5-shaped weights in
   bfloat16 (specdec/models/qwen_sizes.py), the draft's acceptance imposed
   (specdec/bench/imposed_acceptance.py, EMULATED): load, equality (up to bf16 near ties),
   cost curves eager, the bench (same rows as 3), then the compiled runtime's cost curves and
   equality where time is left.
7. equality-tiny-compiled: step 2 under `--runtime compiled`.
8. profiles + summary: the measured cost profiles (JSON, loadable with `--cost-profile PATH`)
   and summary.md with every table.

`--quick` (with `--device cpu`, the default suite's smoke test): the tiny pair, shrunken
stand-ins for the real sizes, fewer prompts and tokens, a 75 s budget.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from specdec.bench import DEFAULT_PROMPTS, cost_curve, gpu_report
from specdec.bench.budget import Budget
from specdec.bench.equality import CASES, TIE_ULPS, Case, run_cases
from specdec.bench.imposed_acceptance import DEFAULT_ACCEPTANCE, ImposedAcceptance
from specdec.bench.report import load_average, machine_info

PROMPTS = ["def fib(n):", "the quick brown fox", "1 + 1 = 2, 2 + 2 ="]
DRAFT_SIZE = "0.5b"
TARGET_SIZES = ("7b", "32b")
# seconds a step needs before it starts: (on a GPU, --quick on a CPU); guesses until a GPU
# run has measured them (its summary lists what each step took)
NEEDS = {
    "bench-tiny": (25, 8), "overhead": (45, 20), "cost-draft": (20, 3),
    "load-7b": (25, 2), "equality-7b": (40, 6), "cost-7b": (15, 3), "bench-7b": (40, 5),
    "compiled-7b": (100, 40),
    "load-32b": (40, 2), "equality-32b": (60, 6), "cost-32b": (20, 3), "bench-32b": (60, 5),
    "compiled-32b": (120, 40),
    "equality-tiny-compiled": (60, 40),
}
LATER_EAGER = {"7b": ("load-32b", "equality-32b", "cost-32b", "bench-32b")}  # kept free while 7b compiles
COMPILED_CASES = (Case("sequential", "fixed", 4), Case("pearl", "fixed", 4), Case("gsd"), Case("auto", "auto", 8))


@dataclass
class CheckSettings:
    out: Path
    device: str = "cuda"
    draft_device: str | None = None
    quick: bool = False
    budget_s: float | None = None  # None: 450 (75 with --quick)
    dtype: str | None = None  # real sizes; None: bfloat16 on cuda, float32 on cpu
    acceptance: float = DEFAULT_ACCEPTANCE
    sizes: tuple[str, ...] = TARGET_SIZES
    tie_ulps: float = TIE_ULPS  # greedy equality: how far from the best logit a divergence may be (equality.py)
    seed: int = 0
    command: str = ""

    @property
    def budget(self) -> float:
        return self.budget_s if self.budget_s is not None else (75.0 if self.quick else 450.0)

    @property
    def real_dtype(self) -> torch.dtype:
        name = self.dtype or ("bfloat16" if self.device.startswith("cuda") else "float32")
        return getattr(torch, name)

    @property
    def max_new_tokens(self) -> int:
        return 12 if self.quick else 32

    @property
    def prompts(self) -> list[str]:
        return PROMPTS[:1] if self.quick else PROMPTS[:2]

    @property
    def curve(self) -> dict:
        """cost_curve.measure's points: the full curves, or a few for the smoke run."""
        if self.quick:
            return {"reps": 3, "context": 32, "tokens": (1, 2, 4, 8), "batches": (1, 2, 4)}
        return {"reps": 5, "context": cost_curve.CONTEXT, "tokens": cost_curve.TOKENS, "batches": cost_curve.BATCHES}

    @property
    def tag(self) -> str:
        return ("quick-" if self.quick else "") + self.device.replace(":", "")


@dataclass
class Check:
    settings: CheckSettings
    budget: Budget
    results: dict = field(default_factory=dict)

    def needs(self, step: str) -> float:
        return NEEDS.get(step, (0.0, 0.0))[1 if self.settings.quick else 0]

    def log(self, line: str) -> None:
        print(f"[gpu_check {self.budget.left():5.0f} s left] {line}", file=sys.stderr, flush=True)

    def step(self, name: str, fn, needs: float | None = None, always: bool = False):
        self.log(f"{name} ...")
        record = self.budget.run(name, self.needs(name) if needs is None else needs, fn, always)
        first = record.note.splitlines()[0] if record.note else ""
        self.log(f"{name}: {record.status} in {record.seconds:.1f} s {first}")
        self.save()
        return record

    def save(self) -> None:
        out = self.settings.out
        self.results["steps"] = [asdict(s) for s in self.budget.steps]
        self.results["elapsed_s"] = self.settings.budget - self.budget.left()
        (out / "results.json").write_text(json.dumps(self.results, indent=1, default=str) + "\n")
        (out / "summary.md").write_text(gpu_report.markdown(self.results))

    def enough_for(self, reserve: float):
        return lambda: self.budget.enough(reserve)


# -- models -------------------------------------------------------------------------


def random_head(draft: torch.nn.Module):
    """An untrained, seeded SpecDec++ head for `draft` (as the tests' tiny head): policy
    specdecpp's plumbing on the device (the hidden state goes to the host), not its quality."""
    from specdec.specdecpp.head import AcceptanceHead, head_meta

    with torch.random.fork_rng():
        torch.manual_seed(0)
        head = AcceptanceHead(draft.config.hidden_size)
    head.meta = head_meta(draft)
    return head.eval()


def tiny_engine(s: CheckSettings):
    from specdec import Engine
    from specdec.models.presets import load_preset

    pair = load_preset("tiny", seed=s.seed, device=s.device)
    if s.draft_device and s.draft_device != s.device:
        pair.draft.to(s.draft_device)
    return Engine(pair.draft, pair.target, pair.tokenizer, preset="tiny", acceptance_head=random_head(pair.draft))


def release() -> None:
    """Hand the memory of models dropped by the caller back (the next size must fit)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- steps --------------------------------------------------------------------------


def env(check: Check) -> str:
    s = check.settings
    info = {"machine": machine_info(), "load_average": load_average(),
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": s.device, "draft_device": s.draft_device or s.device, "cuda_available": torch.cuda.is_available(),
            "torch_cuda": torch.version.cuda}
    if s.device.startswith("cuda"):
        index = torch.device(s.device).index or 0
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        info.update(gpu=props.name, gpu_memory_gib=round(total / 2**30, 1), gpu_free_gib=round(free / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", gpus=torch.cuda.device_count())
    check.results["env"] = info
    return info.get("gpu", "")


def equality(check: Check, label: str, engine, cases=CASES, on_reference=None, prompts=None) -> str:
    s = check.settings
    result = run_cases(engine, prompts or s.prompts, s.max_new_tokens, cases, check.enough_for(5),
                       on_reference, label, s.tie_ulps)
    check.results.setdefault("equality", {})[label] = result
    if result["failures"]:
        raise AssertionError(f"greedy output differs from the target alone: {result['failures'][0]}")
    cut = f"cut: {len(result['skipped'])} cases left out by the budget; " if result["skipped"] else ""
    return f"{cut}{result['exact']} exact, {result['near_ties']} near ties, {len(result['rows'])} runs"


def bench(check: Check, label: str, engine=None, transport: str = "inprocess", modes=("sequential", "pearl", "auto"),
          policies=("fixed:4", "auto"), peer: bool = True, preset: str = "tiny", dtype: str = "float32") -> str:
    from specdec.bench import report
    from specdec.bench.runner import BenchSettings, run_bench

    s = check.settings
    settings = BenchSettings(
        preset=preset, cost="real", modes=modes, policies=policies, max_new_tokens=s.max_new_tokens,
        prompts_path=str(DEFAULT_PROMPTS), limit=len(s.prompts), repeats=1, dtype=dtype, peer=peer, chat=False,
        warmup_tokens=min(8, s.max_new_tokens), transport=transport, seed=s.seed, device=s.device,
        draft_device=s.draft_device,
    )
    raw = run_bench(settings, progress=check.log, engine=engine)
    summary = report.summarise(raw)
    text = report.markdown(raw, summary)
    path = s.out / "bench" / f"{label}.json"
    report.write_json(path, raw, summary)
    path.with_suffix(".md").write_text(text)
    report.write_plot(path.with_suffix(".png"), raw, summary)
    check.results.setdefault("bench", {})[label] = {
        "json": str(path.relative_to(s.out)), "markdown": text, "not_identical": summary["not_identical"],
        "overhead": per_round_overhead(raw),
    }
    if summary["not_identical"]:
        raise AssertionError("bench greedy output differs from the baseline: " + ", ".join(summary["not_identical"]))
    return f"{len(raw['runs'])} runs"


def per_round_overhead(raw: dict) -> dict:
    """Per transport: median over our speculative runs of (wall - model compute) / rounds, and
    of the gRPC network time per round: what the orchestration costs a round."""
    out = {}
    for transport in raw["transports"]:
        runs = [r for r in raw["runs"] if r["transport"] == transport and r.get("stats") and r["stats"]["rounds"]
                and r["mode"] != "autoregressive"]
        if not runs:
            continue
        per_round = [(r["wall_s"] - r["stats"]["critical_compute_s"]) / r["stats"]["rounds"] for r in runs]
        network = [r["stats"]["network_s"] / r["stats"]["rounds"] for r in runs]
        out[transport] = {"runs": len(runs), "overhead_ms": statistics.median(per_round) * 1000,
                          "network_ms": statistics.median(network) * 1000,
                          "rounds": statistics.median(r["stats"]["rounds"] for r in runs)}
    return out


def measure_curve(check: Check, key: str, model, runtime: str) -> str:
    from specdec.runtime.compiled import apply_runtime, compile_stats, remove_runtime

    apply_runtime(model, runtime)
    graphs = compile_stats()["unique_graphs"]
    try:
        curve = cost_curve.measure(model, enough_time=check.enough_for(5), **check.settings.curve)
    finally:
        remove_runtime(model)
    curve["graphs_compiled"] = compile_stats()["unique_graphs"] - graphs
    curve["runtime"] = runtime
    check.results.setdefault("cost", {}).setdefault(key, {})[runtime] = curve
    tokens, batch = curve["tokens"]["ms"], curve["batch"]["ms"]
    points = check.settings.curve
    cut = "cut: " if len(tokens) < len(points["tokens"]) or len(batch) < len(points["batches"]) else ""
    one = f"1 token {tokens['1']:.2f} ms, " if "1" in tokens else ""
    return f"{cut}{one}{len(tokens)} + {len(batch)} points"


def write_profiles(check: Check) -> str:
    s, cost = check.settings, check.results.get("cost", {})
    draft = cost.get(f"draft-{DRAFT_SIZE}", {})
    written = []
    for size in s.sizes:
        target = cost.get(f"target-{size}", {})
        for runtime in ("eager", "compiled"):
            d, t = draft.get(runtime), target.get(runtime)
            if not (d and t and "1" in d["tokens"]["ms"] and "1" in t["tokens"]["ms"]):
                continue
            kind = "stand-ins (--quick) for" if s.quick else "random-initialised"
            gpu = check.results.get("env", {}).get("gpu") or s.device
            name = f"measured-{s.tag}-qwen2.5-{DRAFT_SIZE}-{size}-{runtime}"
            data = cost_curve.profile(
                name, d, t,
                f"MEASURED on {gpu} ({s.device}), {datetime.date.today().isoformat()}: one forward of {kind} "
                f"Qwen2.5-{size} (target) and Qwen2.5-{DRAFT_SIZE} (draft) shapes, {t['dtype']}, runtime {runtime}, "
                f"after {t['context_tokens']} cached tokens; target_ms / draft_ms at one new token, flat up to "
                f"flat_tokens, a roofline past it. Curves under 'measured'. Written by scripts/gpu_check.sh.",
                device=s.device, gpu=gpu, runtime=runtime, quick=s.quick,
            )
            path = s.out / "profiles" / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=1) + "\n")
            written.append({"path": str(path.relative_to(s.out)), "name": name, "target_ms": data["target_ms"],
                            "draft_ms": data["draft_ms"], "flat_tokens": data["flat_tokens"]})
    from specdec.runtime.cost import CostProfile

    for w in written:  # each must load as the emulated regime loads it
        CostProfile.load(str(s.out / w["path"]))
    check.results["profiles"] = written
    return f"{len(written)} profiles"


def pass_shares(check: Check) -> str:
    """The gRPC / Python overhead per round against one verification pass (k + 1 = 5 tokens)
    of each measured target size, eager."""
    overhead = check.results.get("bench", {}).get("overhead", {}).get("overhead", {})
    cost, rows = check.results.get("cost", {}), []
    for transport, o in overhead.items():
        row = {"transport": transport, "overhead_ms": o["overhead_ms"], "network_ms": o["network_ms"], "shares": {}}
        for size in check.settings.sizes:
            ms = cost.get(f"target-{size}", {}).get("eager", {}).get("tokens", {}).get("ms", {})
            if "4" in ms and "8" in ms:
                pass_ms = ms["4"] + (ms["8"] - ms["4"]) / 4  # 5 tokens, interpolated
                row["shares"][size] = {"pass_ms": pass_ms, "share": o["overhead_ms"] / pass_ms}
        rows.append(row)
    check.results["overhead_shares"] = rows
    return f"{len(rows)} transports"


# -- the run ------------------------------------------------------------------------


def run(s: CheckSettings) -> dict:
    from specdec.models.qwen_sizes import qwen_size, random_qwen2

    s.out.mkdir(parents=True, exist_ok=True)
    check = Check(s, Budget(s.budget))
    check.results["settings"] = {**asdict(s), "out": str(s.out), "budget_s": s.budget,
                                 "real_dtype": str(s.real_dtype).removeprefix("torch."),
                                 "max_new_tokens": s.max_new_tokens, "prompts": s.prompts}
    check.step("env", lambda: env(check), always=True)

    engine = tiny_engine(s)
    check.step("equality-tiny", lambda: equality(check, "tiny", engine), always=True)
    check.step("bench-tiny", lambda: bench(check, "tiny"))
    check.step("overhead", lambda: bench(check, "overhead", transport="both", modes=("sequential",),
                                         policies=("fixed:4",), peer=False))

    models: dict = {}

    def load_draft() -> str:
        models["draft"] = random_qwen2(qwen_size(DRAFT_SIZE, s.quick), s.draft_device or s.device, s.real_dtype,
                                       seed=s.seed + 1)
        return measure_curve(check, f"draft-{DRAFT_SIZE}", models["draft"], "eager")

    check.step("cost-draft", load_draft)
    for size in s.sizes if "draft" in models else ():
        if not target_size(check, size, models["draft"]):
            break
        release()  # this size's target is gone before the next one is built (a 32B needs the room)
    models.clear()
    release()
    check.step("equality-tiny-compiled", lambda: tiny_compiled(check, engine))
    check.step("profiles", lambda: write_profiles(check), always=True)
    check.step("overhead-shares", lambda: pass_shares(check), always=True)
    check.results["finished_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    check.results["load_average_end"] = load_average()
    check.save()
    return check.results


def target_size(check: Check, size: str, draft) -> bool:
    """Every step of one real target size, with `draft` (its acceptance imposed meanwhile);
    the target and the engine live in this frame only. False when the target could not be loaded."""
    from specdec import Engine
    from specdec.models.qwen_sizes import qwen_size, random_qwen2
    from specdec.models.tiny import tiny_tokenizer

    s = check.settings
    imposed = ImposedAcceptance(s.acceptance, s.seed)
    label = f"qwen2.5-{DRAFT_SIZE}-{size}"
    held: dict = {}

    def load() -> str:
        began = time.perf_counter()
        held["target"] = random_qwen2(qwen_size(size, s.quick), s.device, s.real_dtype, seed=s.seed + 2)
        if held["target"].device.type == "cuda":
            torch.cuda.synchronize(held["target"].device)
        imposed.install(draft)
        held["engine"] = Engine(draft, held["target"], tiny_tokenizer(), acceptance_head=random_head(draft))
        return f"{qwen_size(size, s.quick).parameters() / 1e6:,.0f}M parameters in {time.perf_counter() - began:.1f} s"

    try:
        if check.step(f"load-{size}", load).status != "ok":
            return False
        engine, target = held["engine"], held["target"]
        check.step(f"equality-{size}", lambda: equality(check, label, engine, on_reference=imposed.add_script))
        check.step(f"cost-{size}", lambda: measure_curve(check, f"target-{size}", target, "eager"))

        def bench_real() -> str:
            for ids, continuation in _bench_scripts(engine, s):
                imposed.add_script(ids, continuation)
            note = bench(check, f"{label}-imposed", engine=engine,
                         preset=f"random {label} (acceptance imposed: {s.acceptance}, EMULATED)",
                         dtype=str(s.real_dtype).removeprefix("torch."))
            check.results["bench"][f"{label}-imposed"]["imposed"] = imposed.stats()
            return note

        check.step(f"bench-{size}", bench_real)
        later = LATER_EAGER.get(size, ()) if size != s.sizes[-1] else ()
        reserve = sum(check.needs(n) for n in later)
        check.step(f"compiled-{size}", lambda: compiled_size(check, size, label, engine, imposed),
                   needs=check.needs(f"compiled-{size}") + reserve)
        return True
    finally:
        imposed.remove()
        held.clear()


def compiled_size(check: Check, size: str, label: str, engine, imposed: ImposedAcceptance) -> str:
    """The draft's (once) and this target's cost curves under the compiled runtime, and greedy
    equality with both models compiled."""
    from specdec.runtime.compiled import apply_runtime, remove_runtime

    notes = []
    if "compiled" not in check.results.get("cost", {}).get(f"draft-{DRAFT_SIZE}", {}):
        notes.append("draft " + measure_curve(check, f"draft-{DRAFT_SIZE}", engine.draft, "compiled"))
    notes.append("target " + measure_curve(check, f"target-{size}", engine.target, "compiled"))
    for m in (engine.draft, engine.target):
        apply_runtime(m, "compiled")
    try:
        notes.append("equality " + equality(check, f"{label}-compiled", engine, COMPILED_CASES,
                                            on_reference=imposed.add_script))
    finally:
        for m in (engine.draft, engine.target):
            remove_runtime(m)
        import torch._dynamo

        torch._dynamo.reset()  # its compiled frames may hold this target: let it go with the size
    return "; ".join(notes)


def tiny_compiled(check: Check, engine) -> str:
    from specdec.runtime.compiled import apply_runtime, remove_runtime

    for m in (engine.draft, engine.target):
        apply_runtime(m, "compiled")
    try:
        return equality(check, "tiny-compiled", engine)
    finally:
        for m in (engine.draft, engine.target):
            remove_runtime(m)


def _bench_scripts(engine, s: CheckSettings):
    """(prompt ids, the target alone's greedy continuation) of the bench's prompts: the
    imposed draft's script (the bench's own baseline recomputes the same tokens)."""
    from specdec.bench.runner import load_prompts

    for p in load_prompts(DEFAULT_PROMPTS, limit=len(s.prompts)):
        ids = engine.encode(p.text)
        out = engine.generate(ids, mode="autoregressive", max_new_tokens=s.max_new_tokens, ignore_eos=True)
        yield ids, out.token_ids


def failed(results: dict) -> list[str]:
    """Steps that failed: a failed equality or bench means NOT LOSSLESS or broken on the device."""
    steps = results.get("steps", [])
    return [f"{st['name']}: {st['note'].splitlines()[0]}" for st in steps if st["status"] == "failed"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for every result (created)")
    parser.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (default cuda)")
    parser.add_argument("--draft-device", default=None, help="the draft's device if not --device's")
    parser.add_argument("--quick", action="store_true", help="tiny stand-ins, fewer tokens: the CPU smoke run")
    parser.add_argument("--budget-s", type=float, default=None, help="wall-clock budget (default 450, quick 75)")
    parser.add_argument("--dtype", default=None, help="real sizes' dtype (default bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--acceptance", type=float, default=DEFAULT_ACCEPTANCE,
                        help=f"imposed per-token acceptance of the real-size draft (default {DEFAULT_ACCEPTANCE})")
    parser.add_argument("--sizes", default=",".join(TARGET_SIZES), help="target sizes, from 7b,32b")
    parser.add_argument("--tie-ulps", type=float, default=TIE_ULPS,
                        help=f"greedy equality: a divergence within this many rounding steps of the best logit is a "
                             f"near tie (default {TIE_ULPS}, as the tests' bf16 rule)")
    args = parser.parse_args(argv)
    from specdec.models.placement import DEVICE

    for value in (args.device, args.draft_device):
        if value is not None and not DEVICE.match(value):
            parser.error(f"devices are cpu, cuda or cuda:N, got {value!r}")
    if "cuda" in args.device + (args.draft_device or "") and not torch.cuda.is_available():
        parser.error("a cuda device was asked for, but torch sees none (torch.cuda.is_available() is False)")
    sizes = tuple(x.strip() for x in args.sizes.split(",") if x.strip())
    if not set(sizes) <= set(TARGET_SIZES):
        parser.error(f"--sizes must be taken from {','.join(TARGET_SIZES)}")
    settings = CheckSettings(out=args.out, device=args.device, draft_device=args.draft_device, quick=args.quick,
                             budget_s=args.budget_s, dtype=args.dtype, acceptance=args.acceptance, sizes=sizes,
                             tie_ulps=args.tie_ulps,
                             command="scripts/gpu_check.sh " + " ".join(sys.argv[1:] if argv is None else argv))
    results = run(settings)
    bad = failed(results)
    print(f"wrote {args.out / 'summary.md'} and {args.out / 'results.json'}", file=sys.stderr)
    for line in bad:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
