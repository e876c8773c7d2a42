"""Which dtype the workers should load, from a short measurement on this machine.

`specdec up` and `specdec demo` take `--dtype auto` by default. On CUDA the answer is
bfloat16 (every GPU this product targets has bfloat16 tensor cores). On a CPU it depends
on the instruction set: with AVX512-BF16 or AMX a bfloat16 matmul runs faster than a
float32 one, without them it is emulated and slower. So we time the matmul a decode step
is made of (a few rows against a hidden-size square weight) in both dtypes and keep the
faster, unless bfloat16 does not win by a clear margin: float32 is exact, bfloat16 rounds
(greedy output may differ at genuine near-ties, docs/algorithms.md §0). The result is
cached per machine and torch version, so only the first start pays the ~0.5 s.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

HIDDEN = 1536  # the real pair's target hidden size
ROWS = 8  # a decode round's tokens
MARGIN = 0.8  # bfloat16 must take at most 80% of float32's time
CACHE = Path.home() / ".cache" / "specdec" / "hardware.json"


def _best_of(fn, repeats: int = 7) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return best


def measure_cpu() -> dict:
    """Seconds of one decode-shaped matmul (best of 7, 20 each) in float32 and bfloat16."""
    import torch

    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        x = torch.randn(ROWS, HIDDEN, dtype=dtype)
        w = torch.randn(HIDDEN, HIDDEN, dtype=dtype)
        torch.matmul(x, w)  # warm-up

        def twenty():
            for _ in range(20):
                torch.matmul(x, w)

        out[name] = _best_of(twenty) / 20
    return out


def _key() -> str:
    import torch

    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    return f"{platform.machine()}|{platform.processor()}|{capability}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def choose_dtype(device: str = "cpu", cache: Path | None = CACHE) -> tuple[str, str]:
    """(dtype name, why) for workers on `device`."""
    if device.startswith("cuda"):
        return "bfloat16", "CUDA device: bfloat16 tensor cores"
    key = _key()
    cached = {}
    if cache is not None and cache.exists():
        try:
            cached = json.loads(cache.read_text())
        except (OSError, ValueError):
            cached = {}
    times = cached.get(key)
    source = "cached"
    if not isinstance(times, dict) or not {"float32", "bfloat16"} <= set(times):
        times, source = measure_cpu(), "measured"
        if cache is not None:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps({**cached, key: times}, indent=1))
            except OSError:
                pass  # a read-only home: measure again next time
    f32, bf16 = times["float32"], times["bfloat16"]
    chosen = "bfloat16" if bf16 <= MARGIN * f32 else "float32"
    why = (f"a {ROWS}x{HIDDEN} @ {HIDDEN}x{HIDDEN} matmul takes {bf16 * 1e3:.2f} ms in bfloat16 vs "
           f"{f32 * 1e3:.2f} ms in float32 on this CPU ({source}); bfloat16 is used only when it takes "
           f"<= {MARGIN:.0%} of float32's time")
    return chosen, why


def resolve_dtype(dtype: str, device: str = "cpu") -> tuple[str, str | None]:
    """`dtype` unless it is "auto"; then `choose_dtype`'s answer and its reason."""
    if dtype != "auto":
        return dtype, None
    return choose_dtype(device)
