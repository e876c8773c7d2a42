"""Run the bench matrix: every configuration on every prompt, interleaved with the baseline.

For each repeat and prompt, each configuration runs in turn, the baseline (mode
autoregressive, the target alone through the same code path) first and the Hugging
Face peer last, so the slow drifts of a shared machine hit all of them alike. One
warm-up per configuration comes before any timed run. Every run is one request with
`ignore_eos`, so it emits exactly max_new_tokens and tokens/s compare fairly.

What a run records beyond RequestStats: the (drafted, accepted) verdict of every
round (for the per-position acceptance of the analytic bound), the forwards and the
real compute of each model (module hooks: the cost profile's wait is not in them),
and, in the emulated regime, the ForwardBudget overruns of both endpoints.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from specdec.bench import DEFAULT_PROMPTS
from specdec.cost import CostProfile, ForwardBudget
from specdec.orchestration import generate as run_request
from specdec.policies import make_policy
from specdec.request import Mode, parse_mode
from specdec.session import ModelSession

Progress = Callable[[str], None]
ROLES = ("draft", "target")


@dataclass(frozen=True)
class BenchSettings:
    """Everything a bench run depends on; built from the CLI flags, saved in the JSON."""

    preset: str = "tiny"
    cost: str = "gpu-like"  # "real", or a cost profile name or path (the emulated regime)
    modes: tuple[str, ...] = ("autoregressive", "sequential", "pearl")
    policies: tuple[str, ...] = ("fixed:2", "fixed:4", "fixed:8", "heuristic", "adaedl")
    draft_length: int = 4  # k for plain policy names (fixed, heuristic start, adaedl k_max)
    max_new_tokens: int = 64
    prompts_path: str = str(DEFAULT_PROMPTS)
    kinds: tuple[str, ...] = ()  # empty: every kind in the file
    limit: int | None = None
    repeats: int = 1
    temperature: float = 0.0
    dtype: str = "float32"
    peer: bool = True
    threads: int | None = None
    seed: int = 0  # the tiny pair's seed, and the base of the per-request seeds
    chat: bool | None = None  # None: the preset's default (instruct qwen-coder: on, tiny: off)
    warmup_tokens: int = 16

    @property
    def emulated(self) -> bool:
        return self.cost != "real"

    @property
    def use_chat(self) -> bool:
        return self.chat if self.chat is not None else self.preset != "tiny"


@dataclass(frozen=True)
class Configuration:
    """One cell of the matrix: a mode and a draft-length policy."""

    mode: str
    policy: str = "fixed"
    draft_length: int = 1
    spec: str = ""  # the --policies item it came from, e.g. "fixed:4" or "adaedl"

    @property
    def baseline(self) -> bool:
        return self.mode == Mode.AUTOREGRESSIVE.value

    @property
    def name(self) -> str:
        return self.mode if self.baseline else f"{self.mode} {self.spec}"


BASELINE = Configuration(Mode.AUTOREGRESSIVE.value)
PEER_NAME = "hf-assisted"


@dataclass(frozen=True)
class Prompt:
    index: int
    kind: str
    text: str


# -- the matrix ---------------------------------------------------------------------


def parse_policies(items: Sequence[str], draft_length: int) -> list[tuple[str, int, str]]:
    """"fixed:4" -> ("fixed", 4, "fixed:4"); a plain name takes `draft_length`."""
    out = []
    for item in items:
        spec = item.strip()
        name, _, k = spec.partition(":")
        try:
            k_value = int(k) if k else draft_length
        except ValueError:
            raise ValueError(f"policy {spec!r}: the part after ':' must be a draft length, e.g. fixed:4") from None
        make_policy(name, k_value)  # raises with the valid choices
        out.append((name, k_value, spec))
    return out


def build_matrix(settings: BenchSettings) -> list[Configuration]:
    """The baseline first (always, listed or not), then each other mode x each policy."""
    modes = []
    for m in settings.modes:
        mode = parse_mode(m.strip()).value
        if mode not in modes:
            modes.append(mode)
    policies = parse_policies(settings.policies, settings.draft_length)
    configs = [BASELINE]
    for mode in modes:
        if mode != BASELINE.mode:
            configs += [Configuration(mode, name, k, spec) for name, k, spec in policies]
    return configs


def load_prompts(path: str | Path, kinds: Sequence[str] = (), limit: int | None = None) -> list[Prompt]:
    """Read a jsonl of {"kind", "prompt"}; keep `kinds` (all if empty), then the first `limit`."""
    prompts = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            prompts.append(Prompt(len(prompts), str(item["kind"]), str(item["prompt"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: each line must be a JSON object with 'kind' and 'prompt' ({exc})") from None
    if kinds:
        present = sorted({p.kind for p in prompts})
        unknown = [k for k in kinds if k not in present]
        if unknown:
            raise ValueError(f"no prompts of kind {', '.join(unknown)} in {path}; kinds there: {', '.join(present)}")
        prompts = [p for p in prompts if p.kind in kinds]
    if limit is not None:
        prompts = prompts[:limit]
    if not prompts:
        raise ValueError(f"no prompts left from {path} (kinds {list(kinds) or 'all'}, limit {limit})")
    return prompts


# -- instruments --------------------------------------------------------------------


class ForwardMeter:
    """Counts a model's forwards, tokens and real compute seconds through module hooks.

    With `budget` set, every forward is also held to that ForwardBudget: this is how
    the Hugging Face peer, whose forwards bypass our sessions, pays the same emulated
    costs. A model is never called from two threads at once, so one slot suffices.
    """

    def __init__(self, model: torch.nn.Module):
        self.forwards, self.tokens, self.compute_s = 0, 0, 0.0
        self.budget: ForwardBudget | None = None
        self._pending: tuple[float, int] | None = None
        self._handles = [
            model.register_forward_pre_hook(self._before, with_kwargs=True),
            model.register_forward_hook(self._after, with_kwargs=True),
        ]

    def _before(self, module, args, kwargs):
        ids = args[0] if args else kwargs.get("input_ids")
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        self._pending = (time.perf_counter(), int(ids.shape[1]) if ids is not None else 1)

    def _after(self, module, args, kwargs, output):
        started, n_tokens = self._pending
        self.forwards += 1
        self.tokens += n_tokens
        self.compute_s += time.perf_counter() - started
        if self.budget is not None:
            self.budget.settle(n_tokens, started)

    def snapshot(self) -> tuple[int, int, float]:
        return self.forwards, self.tokens, self.compute_s

    def since(self, snap: tuple[int, int, float]) -> dict:
        return {"forwards": self.forwards - snap[0], "tokens": self.tokens - snap[1], "compute_s": self.compute_s - snap[2]}

    def close(self) -> None:
        for h in self._handles:
            h.remove()


class VerdictLog:
    """The target endpoint, recording (drafted, accepted) for every round it verifies."""

    def __init__(self, inner):
        self.inner = inner
        self.verdicts: list[tuple[int, int]] = []

    async def verify(self, *args, **kwargs):
        v = await self.inner.verify(*args, **kwargs)
        self.verdicts.append((v.verdict.drafted, v.verdict.accepted))
        return v

    async def release(self, session_id: str) -> None:
        await self.inner.release(session_id)


def _budget_start(budgets: dict) -> dict:
    for b in budgets.values():
        b.worst_overrun_s = 0.0  # per-run worst; the counters are diffed instead
    return {role: (b.forwards, b.overruns) for role, b in budgets.items()}


def _budget_since(budgets: dict, start: dict) -> dict:
    return {
        role: {"forwards": b.forwards - start[role][0], "overruns": b.overruns - start[role][1],
               "worst_overrun_s": b.worst_overrun_s}
        for role, b in budgets.items()
    }


def calibrate(model: torch.nn.Module, prompt_ids: Sequence[int], qs: Sequence[int], reps: int = 5) -> dict:
    """Median real seconds of one forward over q new tokens after the prompt's cache, per q."""
    session = ModelSession(model)  # no budget: pure compute
    base = len(prompt_ids)
    session.forward(0, list(prompt_ids))  # prefill; also warms the model up
    filler = (list(prompt_ids) * max(qs))[: max(qs)]
    out = {}
    for q in qs:
        times = []
        for _ in range(reps):
            session.crop(base)
            times.append(session.forward(base, filler[:q]).seconds)
        out[str(q)] = statistics.median(times)
    return out


# -- the run --------------------------------------------------------------------------


class Bench:
    """Holds the engine and the instruments for one invocation."""

    def __init__(self, settings: BenchSettings, progress: Progress):
        from specdec import Engine

        self.settings, self.progress = settings, progress
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.profile = CostProfile.load(settings.cost) if settings.emulated else None
        self.configs = build_matrix(settings)
        self.prompts = load_prompts(settings.prompts_path, settings.kinds, settings.limit)
        began = time.perf_counter()
        self.engine = Engine.from_preset(settings.preset, cost=self.profile, dtype=settings.dtype, seed=settings.seed)
        self.load_s = time.perf_counter() - began
        self.encoded = [self.engine.encode(p.text, chat=settings.use_chat) for p in self.prompts]
        self.target = VerdictLog(self.engine.target_endpoint)
        self.budgets = {}
        if self.profile is not None:
            self.budgets = {"draft": self.engine.draft_endpoint.sessions.budget,
                            "target": self.engine.target_endpoint.sessions.budget}
        self.meters: dict[str, ForwardMeter] = {}

    def __enter__(self):
        self.meters = {"draft": ForwardMeter(self.engine.draft), "target": ForwardMeter(self.engine.target)}
        return self

    def __exit__(self, *exc):
        for m in self.meters.values():
            m.close()

    def seed_for(self, prompt: int, repeat: int) -> int:
        return self.settings.seed * 1_000_003 + repeat * 1009 + prompt

    def run_ours(self, cfg: Configuration, prompt_ids: Sequence[int], max_new_tokens: int, seed: int) -> dict:
        s = self.settings
        request = self.engine.make_request(
            list(prompt_ids), max_new_tokens=max_new_tokens, temperature=s.temperature, seed=seed,
            mode=cfg.mode, policy=cfg.policy, draft_length=cfg.draft_length, ignore_eos=True,
        )
        self.target.verdicts = []
        meters = {r: m.snapshot() for r, m in self.meters.items()}
        budgets = _budget_start(self.budgets)
        began = time.perf_counter()
        result = asyncio.run(run_request(
            request, self.engine.draft_endpoint, self.target, self.engine.eos_token_ids, self.engine.context_length
        ))
        wall = time.perf_counter() - began
        return {
            "token_ids": result.token_ids, "wall_s": wall, "finish_reason": result.finish_reason.value,
            "stats": result.stats.as_dict(), "verdicts": list(self.target.verdicts),
            "forwards": {r: self.meters[r].since(meters[r]) for r in ROLES},
            "budget": _budget_since(self.budgets, budgets) if self.budgets else None,
        }

    def run_peer(self, prompt_ids: Sequence[int], max_new_tokens: int, seed: int) -> dict:
        from specdec.bench.peer import assisted_generate

        meters = {r: m.snapshot() for r, m in self.meters.items()}
        budgets = {}
        if self.profile is not None:  # the peer pays the same emulated cost per forward
            budgets = {r: self.profile.budget(r, self.settings.preset) for r in ROLES}
            for r in ROLES:
                self.meters[r].budget = budgets[r]
        try:
            began = time.perf_counter()
            ids = assisted_generate(self.engine, prompt_ids, max_new_tokens, self.settings.temperature, seed)
            wall = time.perf_counter() - began
        finally:
            for m in self.meters.values():
                m.budget = None
        return {
            "token_ids": ids, "wall_s": wall, "finish_reason": "length" if len(ids) >= max_new_tokens else "stop",
            "forwards": {r: self.meters[r].since(meters[r]) for r in ROLES},
            "budget": _budget_since(budgets, {r: (0, 0) for r in budgets}) if budgets else None,
        }

    def run_cell(self, cfg: Configuration | None, prompt: int, max_new_tokens: int, seed: int) -> dict:
        """One run; cfg None is the peer."""
        ids = self.encoded[prompt]
        if cfg is None:
            return self.run_peer(ids, max_new_tokens, seed)
        return self.run_ours(cfg, ids, max_new_tokens, seed)

    def warm_up(self) -> list[dict]:
        """One short untimed run per configuration on the first prompt; overruns kept apart."""
        tokens = min(self.settings.warmup_tokens, self.settings.max_new_tokens)
        out = []
        for cfg in self.cells():
            began = time.perf_counter()
            try:
                rec = self.run_cell(cfg, 0, tokens, self.seed_for(0, 0))
            except ValueError as exc:
                name = cfg.name if cfg else PEER_NAME
                raise ValueError(f"configuration {name!r} cannot run: {exc}") from None
            out.append({"config": cfg.name if cfg else PEER_NAME, "tokens": len(rec["token_ids"]),
                        "wall_s": time.perf_counter() - began, "budget": rec["budget"]})
        return out

    def cells(self) -> list[Configuration | None]:
        return list(self.configs) + ([None] if self.settings.peer else [])

    def run_matrix(self) -> list[dict]:
        s = self.settings
        cells = self.cells()
        total, n = s.repeats * len(self.prompts) * len(cells), 0
        runs = []
        for repeat in range(s.repeats):
            for p in self.prompts:
                seed = self.seed_for(p.index, repeat)
                baseline_ids = None
                for cfg in cells:
                    rec = self.run_cell(cfg, p.index, s.max_new_tokens, seed)
                    name = cfg.name if cfg else PEER_NAME
                    if cfg is not None and cfg.baseline:
                        baseline_ids = rec["token_ids"]
                    identical = None
                    if s.temperature == 0.0 and baseline_ids is not None:
                        identical = rec["token_ids"] == baseline_ids
                    rec.update(
                        config=name, mode=cfg.mode if cfg else PEER_NAME, policy=cfg.policy if cfg else None,
                        draft_length=cfg.draft_length if cfg else None, prompt=p.index, kind=p.kind,
                        repeat=repeat, seed=seed, tokens=len(rec["token_ids"]), identical=identical,
                    )
                    rec["tokens_per_s"] = rec["tokens"] / rec["wall_s"] if rec["wall_s"] > 0 else 0.0
                    n += 1
                    self.progress(_progress_line(n, total, rec))
                    if identical is False:
                        where = _first_difference(rec["token_ids"], baseline_ids)
                        self.progress(f"!!! WARNING: {name} on prompt {p.index} differs from the greedy baseline "
                                      f"at token {where}: the output is NOT lossless !!!")
                    if cfg is not None and cfg.baseline and repeat == 0:
                        self.baseline_ids[p.index] = rec["token_ids"]
                    if identical is not False:
                        rec.pop("token_ids")  # kept only where it differs, for diagnosis
                    runs.append(rec)
        return runs

    def run(self) -> dict:
        s = self.settings
        started = datetime.datetime.now(datetime.timezone.utc)
        load_start = _loadavg()
        qs = sorted({1, 2, s.draft_length + 1})
        self.progress(f"calibrating single forwards (q = {qs}) on prompt 0 ...")
        calibration = {r: calibrate(getattr(self.engine, r), self.encoded[0], qs) for r in ROLES}
        self.baseline_ids: dict[int, list[int]] = {}
        with self:
            self.progress(f"warming up {len(self.cells())} configurations ...")
            warmup = self.warm_up()
            runs = self.run_matrix()
        finished = datetime.datetime.now(datetime.timezone.utc)
        return {
            "settings": asdict(s),
            "regime": "emulated" if self.profile else "real",
            "profile": asdict(self.profile) if self.profile else None,
            "configs": [asdict(c) | {"name": c.name} for c in self.configs],
            "peer": s.peer,
            "calibration": {"forward_s": calibration, "reps": 5,
                            "note": "median real seconds of one forward over q new tokens after prompt 0's cache"},
            "prompts": [{"index": p.index, "kind": p.kind, "prompt": p.text, "prompt_tokens": len(self.encoded[p.index]),
                         "baseline_token_ids": self.baseline_ids.get(p.index)} for p in self.prompts],
            "warmup": warmup,
            "runs": runs,
            "machine": machine_info(),
            "load_average": {"start": load_start, "end": _loadavg()},
            "model_load_s": self.load_s,
            "started_at": started.isoformat(timespec="seconds"),
            "duration_s": (finished - started).total_seconds(),
        }


def run_bench(settings: BenchSettings, progress: Progress | None = None) -> dict:
    """Run the whole matrix and return the raw results (see report.summarise)."""
    return Bench(settings, progress or (lambda line: print(line, file=sys.stderr, flush=True))).run()


def _progress_line(n: int, total: int, rec: dict) -> str:
    st = rec.get("stats")
    tau = f" tau {st['mean_acceptance_length']:.2f}" if st and st["rounds"] else ""
    same = {True: "", False: " NOT IDENTICAL", None: ""}[rec["identical"]]
    return (f"[{n}/{total}] repeat {rec['repeat']} prompt {rec['prompt']} ({rec['kind']}) {rec['config']}: "
            f"{rec['tokens']} tokens {rec['wall_s']:.2f}s {rec['tokens_per_s']:.1f} tok/s{tau}{same}")


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
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
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "HEAD") or None,
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "command": " ".join(shlex.quote(a) for a in argv),
    }

