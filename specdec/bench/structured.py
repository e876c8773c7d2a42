"""`specdec bench-structured`: speculative decoding with a JSON schema, against the
constrained target alone, and what the grammar costs per token.

For each prompt, each configuration runs twice, greedy: with the schema (response_format;
generation ends when the document does) and without it (free text, EOS ignored, as many
tokens as the constrained run made), each against the target alone under the same
setting. Every constrained output must equal the constrained target alone and validate
against the schema; the grammar's time (matcher sync, mask fill, mask apply, draft and
target together) is reported per generated token and as a share of the run's wall time.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "language": {"enum": ["python", "javascript", "c", "rust", "go"]},
        "parameters": {
            "type": "array",
            "maxItems": 6,
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 24}, "type": {"type": "string", "maxLength": 24}},
                "required": ["name", "type"],
                "additionalProperties": False,
            },
        },
        "returns": {"type": "string", "maxLength": 40},
        "complexity": {"enum": ["O(1)", "O(log n)", "O(n)", "O(n log n)", "O(n^2)"]},
    },
    "required": ["name", "language", "parameters", "returns", "complexity"],
    "additionalProperties": False,
}
PROMPTS = [
    "Describe this function as JSON.\n\ndef binary_search(items, target):\n    lo, hi = 0, len(items) - 1\n"
    "    while lo <= hi:\n        mid = (lo + hi) // 2\n        if items[mid] == target:\n            return mid\n"
    "        if items[mid] < target:\n            lo = mid + 1\n        else:\n            hi = mid - 1\n    return -1",
    "Describe this function as JSON.\n\nfunction sumSquares(values) {\n  let total = 0;\n"
    "  for (const v of values) total += v * v;\n  return total;\n}",
    "Describe this function as JSON.\n\ndef merge_sorted(a: list[int], b: list[int]) -> list[int]:\n"
    "    out, i, j = [], 0, 0\n    while i < len(a) and j < len(b):\n        if a[i] <= b[j]:\n"
    "            out.append(a[i]); i += 1\n        else:\n            out.append(b[j]); j += 1\n"
    "    return out + a[i:] + b[j:]",
]
CONFIGS = ["sequential:adaedl", "sequential:fixed:4", "pearl:fixed:4", "gsd:-", "auto:auto"]


@dataclass
class StructuredSettings:
    preset: str = "qwen-coder"
    cost: str | None = "gpu-like"  # a cost profile name or path; None: this machine's real costs
    dtype: str = "float32"
    configs: Sequence[str] = tuple(CONFIGS)
    max_new_tokens: int = 128
    limit: int | None = None
    seed: int = 0
    prompts: list[str] = field(default_factory=lambda: list(PROMPTS))


def _grammar_totals(engine) -> tuple[int, float]:
    rows, seconds = 0, 0.0
    for endpoint in (engine.target_endpoint, engine.draft_endpoint):
        stats = getattr(getattr(endpoint, "grammar", None), "stats", None)
        if stats is not None:
            rows, seconds = rows + stats.rows, seconds + stats.seconds
    return rows, seconds


def _run(engine, messages, **kwargs) -> dict:
    rows0, sec0 = _grammar_totals(engine)
    budget = engine.target_endpoint.sessions.budget
    overruns0 = budget.overruns if budget is not None else 0
    forwards0 = budget.forwards if budget is not None else 0
    began = time.perf_counter()
    out = engine.generate(messages, **kwargs)
    wall = time.perf_counter() - began
    rows1, sec1 = _grammar_totals(engine)
    return {
        "token_ids": out.token_ids, "text": out.text, "finish_reason": out.finish_reason.value, "wall_s": wall,
        "tokens": len(out.token_ids), "tau": out.stats.mean_acceptance_length, "rounds": out.stats.rounds,
        "grammar_rows": rows1 - rows0, "grammar_s": sec1 - sec0,
        "overruns": (budget.overruns - overruns0) if budget is not None else 0,
        "forwards": (budget.forwards - forwards0) if budget is not None else 0,  # the target's
    }


def run_structured(settings: StructuredSettings, progress=print) -> dict:
    import jsonschema

    from specdec import Engine

    engine = Engine.from_preset(settings.preset, cost=settings.cost, dtype=settings.dtype, seed=settings.seed)
    fmt = {"type": "json_schema", "json_schema": {"name": "function", "schema": SCHEMA}}
    prompts = settings.prompts[: settings.limit] if settings.limit else settings.prompts
    # warm-up: compile the grammar (and the tokenizer's vocabulary) once, outside the timings
    engine.generate([{"role": "user", "content": "{}"}], max_new_tokens=4, mode="sequential", response_format=fmt)
    records = []
    for i, prompt in enumerate(prompts):
        messages = [{"role": "user", "content": prompt}]
        base = _run(engine, messages, mode="autoregressive", max_new_tokens=settings.max_new_tokens, response_format=fmt)
        n = base["tokens"]
        free_base = _run(engine, messages, mode="autoregressive", max_new_tokens=n, ignore_eos=True)
        records.append({"prompt": i, "config": "target-alone", "schema": base, "free": free_base})
        progress(f"prompt {i}: target alone {n} tokens in {base['wall_s']:.2f}s (free text {free_base['wall_s']:.2f}s)")
        for name in settings.configs:
            mode, _, policy = name.partition(":")
            policy, _, k = policy.partition(":")
            extra = {"policy": policy} if policy and policy != "-" else {}
            if k:
                extra["draft_length"] = int(k)
            with_schema = _run(engine, messages, mode=mode, max_new_tokens=settings.max_new_tokens,
                               response_format=fmt, **extra)
            free = _run(engine, messages, mode=mode, max_new_tokens=n, ignore_eos=True, **extra)
            valid = None  # a document cut by max_new_tokens is unfinished, not invalid
            if with_schema["finish_reason"] == "stop":
                try:
                    jsonschema.validate(json.loads(with_schema["text"]), SCHEMA)
                    valid = True
                except (ValueError, jsonschema.ValidationError):
                    valid = False
            with_schema["identical"] = with_schema["token_ids"] == base["token_ids"]
            with_schema["valid"] = valid
            free["identical"] = free["token_ids"] == free_base["token_ids"]
            records.append({"prompt": i, "config": name, "schema": with_schema, "free": free})
            progress(f"  {name}: {base['wall_s'] / with_schema['wall_s']:.2f}x with the schema "
                     f"(identical {with_schema['identical']}, valid {valid}), "
                     f"{free_base['wall_s'] / free['wall_s']:.2f}x free")
    return {"settings": settings.__dict__ | {"prompts": len(prompts)}, "records": records,
            "summary": summarise(records), "machine": platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def summarise(records: list[dict]) -> list[dict]:
    by_prompt = {r["prompt"]: r for r in records if r["config"] == "target-alone"}
    rows = []
    for name in dict.fromkeys(r["config"] for r in records):
        mine = [r for r in records if r["config"] == name]
        base = [by_prompt[r["prompt"]] for r in mine]
        schema_wall = sum(r["schema"]["wall_s"] for r in mine)
        tokens = sum(r["schema"]["tokens"] for r in mine)
        grammar_s = sum(r["schema"]["grammar_s"] for r in mine)
        rows.append({
            "config": name,
            "speedup_schema": sum(b["schema"]["wall_s"] for b in base) / schema_wall,
            "speedup_free": sum(b["free"]["wall_s"] for b in base) / sum(r["free"]["wall_s"] for r in mine),
            "tau_schema": statistics.mean(r["schema"]["tau"] for r in mine),
            "tau_free": statistics.mean(r["free"]["tau"] for r in mine),
            "tokens": tokens,
            "grammar_ms_per_token": 1000 * grammar_s / max(tokens, 1),
            "grammar_share": grammar_s / schema_wall,
            "identical": all(r["schema"].get("identical", True) for r in mine),
            "valid": all(r["schema"].get("valid") is not False for r in mine),
            "finished": sum(r["schema"]["finish_reason"] == "stop" for r in mine),
            "runs": len(mine),
            "overruns": sum(r["schema"]["overruns"] + r["free"]["overruns"] for r in mine),
            "forwards": sum(r["schema"]["forwards"] + r["free"]["forwards"] for r in mine),
        })
    return rows


def markdown(result: dict) -> str:
    lines = [
        "| configuration | speed-up with the schema | speed-up, free text | tau schema / free | grammar ms per token "
        "| grammar share of wall | identical | finished documents valid |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["summary"]:
        lines.append(
            f"| {row['config']} | {row['speedup_schema']:.2f}x | {row['speedup_free']:.2f}x | "
            f"{row['tau_schema']:.2f} / {row['tau_free']:.2f} | {row['grammar_ms_per_token']:.3f} | "
            f"{100 * row['grammar_share']:.2f}% | {row['identical']} | {row['valid']} ({row['finished']}/{row['runs']}) |"
        )
    overruns = sum(row["overruns"] for row in result["summary"])
    forwards = sum(row["forwards"] for row in result["summary"])
    lines.append("")
    lines.append(f"{result['settings']['prompts']} prompts; target forwards over the cost profile's budget: "
                 f"{overruns} of {forwards}" + (" (INVALID as an emulation)" if overruns else " (valid)"))
    return "\n".join(lines)


def write(result: dict, json_path: Path) -> Path:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1, default=str))
    table = json_path.with_suffix(".md")
    table.write_text(markdown(result) + "\n")
    return table
