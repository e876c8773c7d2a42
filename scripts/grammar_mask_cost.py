"""Which grammar library: the per-token mask cost of xgrammar and outlines-core on the
real target's tokenizer (151,936 logits), for one JSON schema, on this machine.

    .venv/bin/python scripts/grammar_mask_cost.py [--tokenizer DIR] [--json FILE]

Walks both libraries through the same token sequence (a valid JSON document encoded with
the tokenizer) and times, per token: computing the allowed-token mask and advancing the
state; plus the one-off cost of preparing the vocabulary and compiling the schema.
outlines-core gets its vocabulary from the tokenizer's own token strings (no download),
special tokens left out; that is how it would be fed offline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "active"],
    "additionalProperties": False,
}
DOCUMENT = '{"name": "Ada Lovelace", "age": 36, "tags": ["maths", "engines", "poetry"], "active": true}'
VOCAB = 151936  # the Qwen2.5 models' logits width


def _median_ms(samples: list[float]) -> float:
    return round(1000 * statistics.median(samples), 4)


def time_xgrammar(tokenizer, ids: list[int]) -> dict:
    import xgrammar as xgr

    t0 = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=VOCAB)
    compiler = xgr.GrammarCompiler(info, max_threads=1)
    t1 = time.perf_counter()
    compiled = compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=False, strict_mode=True)
    t2 = time.perf_counter()
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, VOCAB)
    logits = torch.zeros(1, VOCAB)
    mask_s, apply_s, advance_s = [], [], []
    for token in ids:
        a = time.perf_counter()
        matcher.fill_next_token_bitmask(bitmask)
        b = time.perf_counter()
        xgr.apply_token_bitmask_inplace(logits, bitmask)
        c = time.perf_counter()
        assert matcher.accept_token(token), f"xgrammar refused token {token}"
        advance_s.append(time.perf_counter() - c)
        mask_s.append(b - a)
        apply_s.append(c - b)
    return {
        "library": "xgrammar",
        "vocabulary_s": round(t1 - t0, 3),
        "compile_s": round(t2 - t1, 3),
        "mask_ms_median": _median_ms(mask_s),
        "mask_ms_max": round(1000 * max(mask_s), 3),
        "apply_ms_median": _median_ms(apply_s),
        "advance_ms_median": _median_ms(advance_s),
    }


def time_outlines(tokenizer, ids: list[int]) -> dict:
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    t0 = time.perf_counter()
    specials = set(tokenizer.all_special_ids)
    mapping: dict[str, list[int]] = {}
    for token, idx in tokenizer.get_vocab().items():
        if idx in specials:
            continue
        mapping.setdefault(tokenizer.convert_tokens_to_string([token]), []).append(idx)
    vocabulary = Vocabulary(tokenizer.eos_token_id, mapping)
    t1 = time.perf_counter()
    index = Index(build_regex_from_schema(json.dumps(SCHEMA), r"[ ]?"), vocabulary)
    t2 = time.perf_counter()
    guide = Guide(index)
    mask = torch.zeros((VOCAB + 31) // 32, dtype=torch.int32)
    mask_s, advance_s = [], []
    for token in ids:
        a = time.perf_counter()
        guide.write_mask_into(mask.data_ptr(), mask.numel(), mask.element_size())
        b = time.perf_counter()
        guide.advance(token)
        advance_s.append(time.perf_counter() - b)
        mask_s.append(b - a)
    return {
        "library": "outlines-core",
        "vocabulary_s": round(t1 - t0, 3),
        "compile_s": round(t2 - t1, 3),
        "mask_ms_median": _median_ms(mask_s),
        "mask_ms_max": round(1000 * max(mask_s), 3),
        "apply_ms_median": None,
        "advance_ms_median": _median_ms(advance_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", default=str(Path.home() / ".cache/specdec/hf/qwen2.5-coder-1.5b-instruct"))
    parser.add_argument("--json", default=None, help="also save the rows here")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    ids = tokenizer(DOCUMENT)["input_ids"]
    rows = []
    for measure in (time_xgrammar, time_outlines):
        try:
            rows.append(measure(tokenizer, ids))
        except Exception as exc:  # a library that cannot do it here is a result too
            rows.append({"library": measure.__name__.removeprefix("time_"), "error": repr(exc)[:200]})
    print(f"{len(ids)} tokens of one JSON document, vocabulary {VOCAB}; per token:")
    for row in rows:
        print(json.dumps(row))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"tokens": len(ids), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
