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
import contextlib
import datetime
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from specdec.bench import DEFAULT_PROMPTS
from specdec.bench.peer import assisted_generate, peer_settings
from specdec.bench.report import load_average, machine_info
from specdec.bench.transport import GRPC_SUFFIX, RemoteRunner, transports_of
from specdec.core.policies import make_policy
from specdec.core.request import Mode, parse_mode, policy_draft_length
from specdec.loop.generate import generate as run_request
from specdec.runtime.cost import CostProfile, ForwardBudget
from specdec.runtime.session import ModelSession

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
    threads: int | None = None  # None: 1 for tiny, torch's choice otherwise
    seed: int = 0  # the tiny pair's seed, and the base of the per-request seeds
    chat: bool | None = None  # None: the preset's default (instruct qwen-coder: on, tiny: off)
    warmup_tokens: int = 16
    transport: str = "inprocess"  # inprocess | grpc (the local stack, via the client) | both (interleaved)
    acceptance_head: str | None = None  # folder of a SpecDec++ head (specdec train-head): policy specdecpp needs one
    tree_nodes: int | None = None  # mode gsd: nodes per verified tree at most (None: TreeParams' default)
    device: str = "cpu"  # cpu | cuda | cuda:N: the target, and the draft unless draft_device says otherwise
    draft_device: str | None = None  # None: the target's device
    runtime: str = "eager"  # eager | compiled (specdec/runtime/compiled.py), both models

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
    policy: str = "fixed"  # the baseline runs with fixed:1, which autoregressive never consults
    draft_length: int = 1
    spec: str = ""  # the --policies item it came from, e.g. "fixed:4", "adaedl" or "specdecpp:8@0.5"
    threshold: float | None = None  # specdecpp's stop threshold (None: the policy's default)

    @property
    def baseline(self) -> bool:
        return self.mode == Mode.AUTOREGRESSIVE.value

    @property
    def peer(self) -> bool:
        return self.mode == PEER_NAME

    @property
    def uses_policy(self) -> bool:
        return not (self.baseline or self.peer or self.mode in POLICY_FREE_MODES)

    @property
    def name(self) -> str:
        return f"{self.mode} {self.spec}" if self.uses_policy else self.mode


# gsd's drafts are shaped by its tree parameters, not by a draft-length policy: one cell
POLICY_FREE_MODES = frozenset({Mode.GSD.value})
PEER_NAME = "hf-assisted"  # Hugging Face assisted generation (peer.py), not one of our modes
BASELINE = Configuration(Mode.AUTOREGRESSIVE.value)
PEER = Configuration(PEER_NAME)


@dataclass(frozen=True)
class Prompt:
    index: int
    kind: str
    text: str


# -- the matrix ---------------------------------------------------------------------


def parse_policies(items: Sequence[str], draft_length: int) -> list[tuple[str, int, float | None, str]]:
    """"fixed:4" -> ("fixed", 4, None, "fixed:4"); "specdecpp:8@0.5" -> ("specdecpp", 8, 0.5, ...);
    a plain name takes its policy's own k_max (auto 8, specdecpp 20), else `draft_length`.
    "adaedl_late" is AdaEDL's earlier one-token-late rule, to run next to "adaedl"."""
    out = []
    for item in items:
        spec = item.strip()
        head, _, threshold = spec.partition("@")
        name, _, k = head.partition(":")
        try:
            k_value = int(k) if k else (policy_draft_length(name) or draft_length)
        except ValueError:
            raise ValueError(f"policy {spec!r}: the part after ':' must be a draft length, e.g. fixed:4") from None
        try:
            threshold_value = float(threshold) if threshold else None
        except ValueError:
            raise ValueError(f"policy {spec!r}: the part after '@' must be a threshold, e.g. specdecpp:8@0.5") from None
        make_policy(name, k_value, threshold=threshold_value)  # raises with the valid choices and ranges
        out.append((name, k_value, threshold_value, spec))
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
        if mode in POLICY_FREE_MODES:
            configs.append(Configuration(mode, spec="tree"))
        elif mode != BASELINE.mode:
            configs += [Configuration(mode, name, k, spec, threshold) for name, k, threshold, spec in policies]
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
    """Times every forward of a model (tokens in, real compute seconds) through module hooks.

    With `budget` set, every forward is also held to that ForwardBudget: this is how
    the Hugging Face peer, whose forwards bypass our sessions, pays the same emulated
    costs. A model is never called from two threads at once, so one slot suffices.
    """

    STEP_TOKENS = 2  # a forward over at most this many new tokens is a decode step (not a prefill)

    def __init__(self, model: torch.nn.Module):
        self.samples: list[tuple[int, float]] = []  # (new tokens, seconds) per forward
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
        logits = getattr(output, "logits", None)
        if logits is not None and logits.is_cuda:  # a GPU forward has only been queued: wait for it
            torch.cuda.synchronize(logits.device)
        self.samples.append((n_tokens, time.perf_counter() - started))
        if self.budget is not None:
            self.budget.settle(n_tokens, started)

    def snapshot(self) -> int:
        return len(self.samples)

    def since(self, snap: int) -> dict:
        """The forwards since `snap` (one run): the first is the prompt's prefill; pass_s is the
        median of the others (verification passes for the target), step_s the median of those
        over at most STEP_TOKENS tokens (decode steps)."""
        new = self.samples[snap:]
        rest = [sec for _, sec in new[1:]]
        steps = [sec for n, sec in new[1:] if n <= self.STEP_TOKENS]
        return {"forwards": len(new), "tokens": sum(n for n, _ in new), "compute_s": sum(sec for _, sec in new),
                "prefill_s": new[0][1] if new else None, "pass_s": statistics.median(rest) if rest else None,
                "step_s": statistics.median(steps) if steps else None}

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

    def __getattr__(self, name):  # verify_tree (mode gsd) and the rest pass through unrecorded
        return getattr(self.inner, name)


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
        for _ in range(reps + 1):  # the first call of a new shape is discarded
            session.crop(base)
            times.append(session.forward(base, filler[:q]).seconds)
        out[str(q)] = statistics.median(times[1:])
    return out


# -- the run --------------------------------------------------------------------------


class Bench:
    """Holds the engine and the instruments for one invocation."""

    def __init__(self, settings: BenchSettings, progress: Progress, engine=None):
        """`engine`: models built by the caller (scripts/gpu_check.sh's random real-size pair)
        instead of `settings.preset`'s; it must have no cost profile unless settings name one."""
        from specdec import Engine

        self.settings, self.progress = settings, progress
        self.transports = transports_of(settings.transport)
        self.remote: RemoteRunner | None = None
        self.profile = CostProfile.load(settings.cost) if settings.emulated else None
        self.configs = build_matrix(settings)
        self.prompts = load_prompts(settings.prompts_path, settings.kinds, settings.limit)
        began = time.perf_counter()
        if settings.acceptance_head is None and any(c.policy == "specdecpp" for c in self.configs if c.uses_policy):
            raise ValueError("policy specdecpp needs an acceptance head: pass --acceptance-head DIR "
                             "(train one with `specdec train-head`)")
        self.engine = engine if engine is not None else Engine.from_preset(
            settings.preset, cost=self.profile, dtype=settings.dtype, seed=settings.seed,
            acceptance_head=settings.acceptance_head, device=settings.device, draft_device=settings.draft_device,
            runtime=settings.runtime,
        )
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
            mode=cfg.mode, policy=cfg.policy, draft_length=cfg.draft_length, threshold=cfg.threshold, ignore_eos=True,
            tree_nodes=s.tree_nodes,
        )
        self.target.verdicts = []
        meters = {r: m.snapshot() for r, m in self.meters.items()}
        budgets = _budget_start(self.budgets)
        began = time.perf_counter()
        result = asyncio.run(run_request(  # the engine's measured costs: PEARL's default window, policy auto
            request, self.engine.draft_endpoint, self.target, self.engine.eos_token_ids, self.engine.context_length,
            speed=self.engine.speed,
        ))
        wall = time.perf_counter() - began
        return {
            "token_ids": result.token_ids, "wall_s": wall, "finish_reason": result.finish_reason.value,
            "stats": result.stats.as_dict(), "verdicts": list(self.target.verdicts),
            "forwards": {r: self.meters[r].since(meters[r]) for r in ROLES},
            "budget": _budget_since(self.budgets, budgets) if self.budgets else None,
        }

    def run_peer(self, prompt_ids: Sequence[int], max_new_tokens: int, seed: int) -> dict:
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

    def run_cell(self, cfg: Configuration, prompt: int, max_new_tokens: int, seed: int,
                 transport: str = "inprocess") -> dict:
        ids = self.encoded[prompt]
        if cfg.peer:
            return self.run_peer(ids, max_new_tokens, seed)
        if transport == "grpc":
            return self.remote.run(cfg, ids, max_new_tokens, seed)
        return self.run_ours(cfg, ids, max_new_tokens, seed)

    def cells(self) -> list[tuple[Configuration, str]]:
        """(configuration, transport) in run order: each configuration on every transport in turn
        (in-process then grpc, so the pair sees the same moment of the machine), the peer last
        (in-process: it is Hugging Face's loop on the same models)."""
        cells = [(cfg, t) for cfg in self.configs for t in self.transports]
        return cells + ([(PEER, "inprocess")] if self.settings.peer else [])

    @staticmethod
    def cell_name(cfg: Configuration, transport: str) -> str:
        return cfg.name + (GRPC_SUFFIX if transport == "grpc" else "")

    def warm_up(self) -> list[dict]:
        """One short untimed run per configuration on the first prompt; overruns kept apart."""
        tokens = min(self.settings.warmup_tokens, self.settings.max_new_tokens)
        out = []
        for cfg, transport in self.cells():
            began = time.perf_counter()
            try:
                rec = self.run_cell(cfg, 0, tokens, self.seed_for(0, 0), transport)
            except ValueError as exc:
                raise ValueError(f"configuration {cfg.name!r} cannot run: {exc}") from None
            out.append({"config": self.cell_name(cfg, transport), "transport": transport,
                        "tokens": len(rec["token_ids"]), "wall_s": time.perf_counter() - began,
                        "budget": rec["budget"]})
        return out

    def run_matrix(self) -> list[dict]:
        """For each repeat and prompt, every configuration in turn: baseline first, peer last. Every
        run is checked against the greedy in-process baseline of its prompt (grpc only: the grpc one)."""
        s, cells = self.settings, self.cells()
        total, runs = s.repeats * len(self.prompts) * len(cells), []
        for repeat in range(s.repeats):
            for p in self.prompts:
                seed, baseline_ids = self.seed_for(p.index, repeat), None
                for cfg, transport in cells:
                    rec = self.run_cell(cfg, p.index, s.max_new_tokens, seed, transport)
                    ids = rec.pop("token_ids")
                    if cfg.baseline and baseline_ids is None:  # the first transport's: in-process if run
                        baseline_ids = ids
                        self.baseline_ids.setdefault(p.index, ids)
                    identical = ids == baseline_ids if s.temperature == 0.0 else None
                    rec.update(config=self.cell_name(cfg, transport), transport=transport, mode=cfg.mode, policy=cfg.policy if cfg.uses_policy else None,
                               draft_length=cfg.draft_length if cfg.uses_policy else None, prompt=p.index,
                               kind=p.kind, repeat=repeat, seed=seed, tokens=len(ids), identical=identical,
                               tokens_per_s=len(ids) / rec["wall_s"])
                    runs.append(rec)
                    self.progress(_progress_line(len(runs), total, rec))
                    if identical is False:
                        rec["token_ids"] = ids  # kept for diagnosis
                        self.progress(f"!!! WARNING: {rec['config']} on prompt {p.index} differs from the greedy baseline "
                                      f"at token {_first_difference(ids, baseline_ids)}: NOT lossless !!!")
        return runs

    def run(self) -> dict:
        """Calibrate, warm up, run the matrix; torch's thread count is restored afterwards."""
        threads = torch.get_num_threads()
        if self.settings.threads or self.settings.preset == "tiny":
            # tiny's 64-wide models gain nothing from a second thread, and two per model stall
            # each other (PEARL runs both models at once) on a busy 2-core machine
            torch.set_num_threads(self.settings.threads or 1)
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> dict:
        s = self.settings
        started = datetime.datetime.now(datetime.timezone.utc)
        load_start = load_average()
        qs = sorted({1, 2, s.draft_length + 1})
        self.progress(f"calibrating single forwards (q = {qs}) on prompt 0 ...")
        calibration = {r: calibrate(getattr(self.engine, r), self.encoded[0], qs) for r in ROLES}
        self.baseline_ids: dict[int, list[int]] = {}
        stack_s = None
        with contextlib.ExitStack() as scope:
            if "grpc" in self.transports:
                self.progress("starting the local stack (draft worker, target worker, coordinator) ...")
                self.remote = scope.enter_context(RemoteRunner(s))
                stack_s = self.remote.startup_s
            scope.enter_context(self)
            self.progress(f"warming up {len(self.cells())} configurations ...")
            warmup = self.warm_up()
            runs = self.run_matrix()
        self.remote = None
        finished = datetime.datetime.now(datetime.timezone.utc)
        return {
            "settings": asdict(s),
            "regime": "emulated" if self.profile else "real",
            "profile": asdict(self.profile) if self.profile else None,
            "transports": list(self.transports),
            "configs": [asdict(c) | {"name": self.cell_name(c, t), "transport": t}
                        for c in self.configs for t in self.transports],
            "stack_startup_s": stack_s,
            "peer": peer_settings(self.engine) if s.peer else None,
            "calibration": {"forward_s": calibration, "reps": 5,
                            "note": "median real seconds of one forward over q new tokens after prompt 0's cache"},
            "prompts": [{"index": p.index, "kind": p.kind, "prompt": p.text, "prompt_tokens": len(self.encoded[p.index]),
                         "baseline_token_ids": self.baseline_ids.get(p.index)} for p in self.prompts],
            "warmup": warmup,
            "runs": runs,
            "machine": machine_info(),
            "load_average": {"start": load_start, "end": load_average()},
            "model_load_s": self.load_s,
            "started_at": started.isoformat(timespec="seconds"),
            "duration_s": (finished - started).total_seconds(),
        }


def run_bench(settings: BenchSettings, progress: Progress | None = None, engine=None) -> dict:
    """Run the whole matrix and return the raw results (see report.summarise); `engine`: see Bench."""
    return Bench(settings, progress or (lambda line: print(line, file=sys.stderr, flush=True)), engine).run()


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
