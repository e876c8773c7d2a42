"""Greedy equality on a device: every mode and policy against the target alone.

The property the whole project rests on (README: "lossless by construction and by test"),
checked where the product runs: for each case, the engine's greedy output must equal the
target alone's token for token, up to near ties, with the rule of tests/helpers/reference.py
(BF16_TIE_ULPS): the same logits computed along two paths (one token at a time, k + 1 at
once, a tree mask) round differently, so where the target's two best logits (nearly) tie,
speculation may emit the other one. A divergence counts as rounding when both tokens lie
within `ulps` steps of the best logit of ONE target forward at that position, and as a
logic error when either lies further. A step is the dtype's rounding step at the best
logit's magnitude: 2**-7 of it in bfloat16, 2**-10 in float16; in float32 2**-13, not the
format's 2**-23, because on a GPU each shape runs another kernel (another summation order,
through every layer); the CPU tests keep float32 exact. Every row says whether it was
exact, so a near tie never hides.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

TIE_ULPS = 4.0  # as tests/helpers/reference.py BF16_TIE_ULPS
MANTISSA_BITS = {torch.bfloat16: 7, torch.float16: 10, torch.float32: 13}  # a "step" per dtype (see above)


@dataclass(frozen=True)
class Case:
    mode: str
    policy: str | None = None  # None: the mode takes no policy (autoregressive, gsd)
    k: int | None = None

    @property
    def name(self) -> str:
        return f"{self.mode} {self.policy}:{self.k}" if self.policy else self.mode


REFERENCE = Case("autoregressive")
POLICIES = (("fixed", 4), ("heuristic", 4), ("adaedl", 6), ("specdecpp", 6), ("auto", 8))
CASES = (
    *(Case(mode, policy, k) for mode in ("sequential", "pearl") for policy, k in POLICIES),
    Case("gsd"),
    Case("auto", "auto", 8),
)


def near_tie(target: torch.nn.Module, prompt_ids: Sequence[int], reference: Sequence[int],
             output: Sequence[int], ulps: float = TIE_ULPS) -> tuple[bool, str]:
    """(equal up to a near tie, what was found). Equal: (True, "equal"). Else at the first
    differing position i, one forward of the target over prompt + reference[:i]."""
    reference, output = list(reference), list(output)
    if output == reference:
        return True, "equal"
    i = next((j for j, (a, b) in enumerate(zip(reference, output)) if a != b), None)
    if i is None:
        return False, f"one output is a prefix of the other ({len(output)} vs {len(reference)} tokens)"
    bits = MANTISSA_BITS.get(target.dtype)
    if bits is None:
        return False, f"position {i}: target alone {reference[i]}, this run {output[i]} ({target.dtype}: no tie rule)"
    device = target.get_input_embeddings().weight.device
    with torch.inference_mode():
        row = target(torch.tensor([list(prompt_ids) + reference[:i]], device=device),
                     logits_to_keep=1).logits[0, -1].float().cpu()
    best = float(row.max())
    ulp = 2.0**-bits * max(abs(best), 1.0)
    behind = max((best - float(row[t])) / ulp for t in (reference[i], output[i]))
    tie = behind <= ulps
    return tie, (f"position {i}: target alone {reference[i]}, this run {output[i]}, {behind:.2f} steps of "
                 f"{target.dtype} below the best logit ({'a near tie' if tie else 'NOT a near tie'}, within {ulps})")


def run_cases(engine, prompts: Sequence[str], max_new_tokens: int, cases: Sequence[Case] = CASES,
              enough_time: Callable[[], bool] = lambda: True, on_reference=None, label: str = "",
              ulps: float = TIE_ULPS) -> dict:
    """Every case on every prompt against the target alone (run first, per prompt). Stops
    starting cases when `enough_time()` turns False (what ran is reported). `on_reference(ids,
    reference)` is called with each prompt's target-alone output (the imposed draft's script)."""
    rows, references, skipped = [], {}, []
    for prompt in prompts:
        ids = engine.encode(prompt)
        began = time.perf_counter()
        out = engine.generate(prompt, mode=REFERENCE.mode, max_new_tokens=max_new_tokens, ignore_eos=True)
        references[prompt] = (ids, out.token_ids, time.perf_counter() - began)
        if on_reference is not None:
            on_reference(ids, out.token_ids)
    for case in cases:
        if not enough_time():
            skipped.append(case.name)
            continue
        for prompt in prompts:
            ids, reference, _ = references[prompt]
            began = time.perf_counter()
            out = engine.generate(prompt, mode=case.mode, policy=case.policy, draft_length=case.k,
                                  max_new_tokens=max_new_tokens, ignore_eos=True)
            wall = time.perf_counter() - began
            ok, note = near_tie(engine.target, ids, reference, out.token_ids, ulps)
            st = out.stats
            rows.append({"case": case.name, "prompt": prompts.index(prompt), "tokens": len(out.token_ids),
                         "equal": out.token_ids == reference, "ok": ok, "note": note, "wall_s": wall,
                         "rounds": st.rounds, "acceptance_rate": st.acceptance_rate,
                         "tau": st.mean_acceptance_length, "mode_run": st.mode_run})
    return {
        "label": label, "dtype": str(engine.target.dtype).removeprefix("torch."), "max_new_tokens": max_new_tokens,
        "prompts": len(prompts), "tie_ulps": ulps, "reference_wall_s": [r[2] for r in references.values()],
        "rows": rows, "skipped": skipped,
        "all_ok": all(r["ok"] for r in rows) and bool(rows),
        "exact": sum(r["equal"] for r in rows), "near_ties": sum(r["ok"] and not r["equal"] for r in rows),
        "failures": [f"{r['case']} prompt {r['prompt']}: {r['note']}" for r in rows if not r["ok"]],
    }
