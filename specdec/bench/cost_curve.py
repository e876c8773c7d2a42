"""What one forward costs on this device: against the tokens in the pass and against the
sessions merged into it, written as a cost profile the emulated regime loads.

Both curves run the product's own code paths after `context` cached tokens per session:
- tokens: `ModelSession.forward` of q new tokens (1 = a decode step, k + 1 = a
  verification pass, more = a prefill chunk), cropped back after each;
- batch: `batching.batched_forward` of B sessions' one-token steps (what `--max-batch`
  runs), each session's cache cropped back after each.
Every point is the median of `reps` timed forwards after one untimed one (a new shape:
allocator warm-up, and under the compiled runtime its compilation, timed apart as
`first_call_s`). A forward's time ends when its logits are on the host (a GPU's queue
has drained: specdec/runtime/session.py).

`profile(...)` turns a draft curve and a target curve into the JSON of
specdec/runtime/cost_profiles/ (target_ms / draft_ms at one token, flat up to the
largest measured count within FLAT_TOLERANCE of it, a roofline past it) plus the
measured curves under "measured", which `CostProfile.load` ignores. Load it with
`--cost-profile PATH`, or copy it into specdec/runtime/cost_profiles/ to load it by name.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import torch

from specdec.runtime.batching import BatchItem, batched_forward
from specdec.runtime.session import ModelSession

TOKENS = (1, 2, 4, 8, 16, 32, 64)
BATCHES = (1, 2, 4, 8, 16, 32)
CONTEXT = 128  # cached tokens before each measured forward (a prompt and some decoding)
FLAT_TOLERANCE = 1.25  # "flat": at most this times the one-token forward


def _filler(n: int, vocab: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, min(vocab, 32000), (n,), generator=g).tolist()


def _median_of(run: Callable[[], float], reps: int) -> tuple[float, float]:
    """(first call's seconds, median of the next `reps`)."""
    first = run()
    return first, statistics.median(run() for _ in range(reps))


def tokens_curve(model: torch.nn.Module, tokens: Sequence[int] = TOKENS, context: int = CONTEXT, reps: int = 5,
                 enough_time: Callable[[], bool] = lambda: True) -> dict:
    vocab = int(model.config.vocab_size)
    session = ModelSession(model)
    session.forward(0, _filler(context, vocab, 0))
    fill = _filler(max(tokens), vocab, 1)
    out = {"ms": {}, "first_call_s": {}}
    for q in tokens:
        if not enough_time():
            break

        def one() -> float:
            session.crop(context)
            return session.forward(context, fill[:q], n_logits=q).seconds

        first, median = _median_of(one, reps)
        out["ms"][str(q)], out["first_call_s"][str(q)] = median * 1000, first
    return out


def batch_curve(model: torch.nn.Module, batches: Sequence[int] = BATCHES, context: int = CONTEXT, reps: int = 5,
                enough_time: Callable[[], bool] = lambda: True) -> dict:
    vocab = int(model.config.vocab_size)
    sessions = []
    out = {"ms": {}, "first_call_s": {}}
    for b in batches:
        if not enough_time():
            break
        while len(sessions) < b:
            s = ModelSession(model)
            s.forward(0, _filler(context, vocab, 100 + len(sessions)))
            sessions.append(s)
        group = sessions[:b]
        step = _filler(b, vocab, 2)

        def one() -> float:
            for s in group:
                s.crop(context)
            items = [BatchItem(s, [step[i]], 1, False) for i, s in enumerate(group)]
            began = time.perf_counter()
            batched_forward(model, items) if b > 1 else group[0].forward(context, [step[0]])
            seconds = time.perf_counter() - began
            for s in group:  # batched_forward grew the caches past what the sessions record
                s.cache.crop(context - s.cache.get_seq_length())
            return seconds

        first, median = _median_of(one, reps)
        out["ms"][str(b)], out["first_call_s"][str(b)] = median * 1000, first
    return out


def measure(model: torch.nn.Module, reps: int = 5, context: int = CONTEXT, tokens: Sequence[int] = TOKENS,
            batches: Sequence[int] = BATCHES, enough_time: Callable[[], bool] = lambda: True) -> dict:
    """Both curves of one model on its device, as it is (eager or compiled)."""
    began = time.perf_counter()
    with torch.inference_mode():
        curve = {"tokens": tokens_curve(model, tokens, context, reps, enough_time),
                 "batch": batch_curve(model, batches, context, reps, enough_time)}
    curve.update(context_tokens=context, reps=reps, seconds=time.perf_counter() - began,
                 dtype=str(model.dtype).removeprefix("torch."))
    return curve


def flat_tokens(tokens_ms: dict) -> int:
    """The largest measured token count whose forward stays within FLAT_TOLERANCE of one token's."""
    one = tokens_ms["1"]
    flat = [int(q) for q, ms in tokens_ms.items() if ms <= FLAT_TOLERANCE * one]
    return max(flat) if flat else 1


def profile(name: str, draft: dict, target: dict, description: str, **measured) -> dict:
    """A cost profile (specdec/runtime/cost_profiles/ format) from a draft's and a target's
    `measure` results; the curves are kept under "measured"."""
    return {
        "name": name,
        "description": description,
        "target_ms": round(target["tokens"]["ms"]["1"], 3),
        "draft_ms": round(draft["tokens"]["ms"]["1"], 3),
        "flat_tokens": max(2, flat_tokens(target["tokens"]["ms"])),
        "roofline": True,
        "preset_scale": {"tiny": 1.0, "qwen-coder": 100.0},
        "measured": {**measured, "draft": draft, "target": target,
                     "flat_rule": f"flat_tokens: the largest measured count within {FLAT_TOLERANCE}x of one "
                                  "token's target forward; past it the roofline (linear in tokens) is an "
                                  "extrapolation"},
    }
