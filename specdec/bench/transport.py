"""How a bench run reaches the models: in-process (specdec.Engine's loop, runner.Bench.run_ours)
or over gRPC through the local stack (`--transport grpc|both`).

`RemoteRunner` brings up `specdec.launch.stack.LocalStack` (same preset, seed and dtype as
the in-process engine, the same cost profile given to the workers, so the costs are
shaped in the worker processes) and runs one request per call through
`specdec.client.Client.complete`, the prompt sent as the engine's token ids so both
transports see identical prompts. It returns the same record as `Bench.run_ours`,
built from the response's stats (the coordinator's time split, network_s included).
What the coordinator does not report stays empty: the per-round verdicts (so no `a`
and no bounds for grpc rows) and the module-hook forward timings. Under a cost profile the
workers' overrun counters (GetInfo) are read before and after each request, so gRPC rows
are checked too (without the worst overrun, which workers do not report).
"""

from __future__ import annotations

import time
from typing import Sequence

from specdec.client import workers

TRANSPORTS = ("inprocess", "grpc", "both")
GRPC_SUFFIX = " [grpc]"
_NO_FORWARDS = {"forwards": None, "tokens": None, "compute_s": None, "prefill_s": None, "pass_s": None,
                "step_s": None}


def transports_of(choice: str) -> tuple[str, ...]:
    """"both" -> ("inprocess", "grpc"); raises ValueError on anything else but the two."""
    if choice not in TRANSPORTS:
        raise ValueError(f"--transport must be one of {', '.join(TRANSPORTS)}, got {choice!r}")
    return ("inprocess", "grpc") if choice == "both" else (choice,)


def stats_dict(stats) -> dict:
    """The client's Stats as the in-process RequestStats.as_dict() keys (overhead_share added)."""
    d = stats.as_dict()
    d["overhead_share"] = max(0.0, d["wall_s"] - d["critical_compute_s"]) / d["wall_s"] if d["wall_s"] else 0.0
    return d


def worker_args(settings) -> tuple[str, ...]:
    """The flags both workers get from the bench's settings (each its own --device)."""
    args = ["--runtime", settings.runtime]
    if settings.acceptance_head:
        args += ["--acceptance-head", settings.acceptance_head]
    return tuple(args)


class RemoteRunner:
    """The local stack and a client; a context manager. `run(cfg, ids, ...)` -> a run record."""

    def __init__(self, settings, startup_timeout_s: float = 180.0):
        from specdec.launch.stack import LocalStack

        self.settings = settings
        self.stack = LocalStack(
            preset=settings.preset, seed=settings.seed, dtype=settings.dtype,
            cost_profile=settings.cost if settings.emulated else None, startup_timeout_s=startup_timeout_s,
            worker_args=worker_args(settings),
            draft_args=("--device", settings.draft_device or settings.device),
            target_args=("--device", settings.device),
        )
        self.client = None
        self.startup_s = None

    def __enter__(self) -> "RemoteRunner":
        from specdec.client import Client

        began = time.perf_counter()
        self.stack.start()
        self.startup_s = time.perf_counter() - began
        self.addresses = {"draft": self.stack.draft.address, "target": self.stack.target.address}
        self.client = Client(self.stack.address, retries=0)
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        self.stack.stop()

    def run(self, cfg, prompt_ids: Sequence[int], max_new_tokens: int, seed: int) -> dict:
        s = self.settings
        before = workers.budget_counts(self.addresses) if s.emulated else None
        began = time.perf_counter()
        out = self.client.complete(
            list(prompt_ids), max_new_tokens=max_new_tokens, temperature=s.temperature, seed=seed, mode=cfg.mode,
            policy=cfg.policy, draft_length=cfg.draft_length, threshold=cfg.threshold, ignore_eos=True,
            tree_nodes=s.tree_nodes,
        )
        wall = time.perf_counter() - began
        budget = None
        if before is not None:
            got = workers.delta(before, workers.budget_counts(self.addresses))
            budget = {role: {"forwards": got[f"{role}_forwards"], "overruns": got[role], "worst_overrun_s": 0.0}
                      for role in self.addresses}
        return {
            "token_ids": list(out.token_ids), "wall_s": wall, "finish_reason": out.finish_reason,
            "stats": stats_dict(out.stats), "verdicts": [],
            "forwards": {"draft": dict(_NO_FORWARDS), "target": dict(_NO_FORWARDS)},
            "budget": budget,
        }
