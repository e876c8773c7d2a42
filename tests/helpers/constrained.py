"""Constrained target-alone decoding written independently of specdec.grammar: the
reference the structured-output tests compare against. Each step runs the target over
the whole sequence (no KV cache), masks its last row with a fresh xgrammar matcher that
only ever moves forward, and takes the argmax; so the guide's sync / rollback / tree
paths and the cache's rollback are all checked against plain forward decoding."""

from __future__ import annotations

import json

import torch
import xgrammar as xgr

from specdec.core.constraint import ConstraintKind, OutputConstraint
from specdec.models.loading import eos_token_ids_of

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "ok": {"type": "boolean"},
        "size": {"enum": ["small", "big"]},
    },
    "required": ["name", "ok", "size"],
    "additionalProperties": False,
}
REGEX = r"[a-f]{2}-[0-9]{3}"
GRAMMAR = 'root ::= "(" item (", " item)* ")"\nitem ::= [a-z] | [0-9]+'
FORMATS = {
    "json_schema": {"type": "json_schema", "json_schema": {"name": "thing", "schema": SCHEMA}},
    "json_object": {"type": "json_object"},
    "regex": {"type": "regex", "regex": REGEX},
    "grammar": {"type": "grammar", "grammar": GRAMMAR},
}


def compiled_for(engine, constraint: OutputConstraint):
    info = xgr.TokenizerInfo.from_huggingface(
        engine.tokenizer, vocab_size=engine.vocab_size, stop_token_ids=eos_token_ids_of(engine.target, engine.tokenizer)
    )
    compiler = xgr.GrammarCompiler(info, max_threads=1)
    if constraint.kind is ConstraintKind.JSON_OBJECT:
        return compiler.compile_json_schema('{"type": "object"}', any_whitespace=False, strict_mode=False)
    if constraint.kind is ConstraintKind.JSON_SCHEMA:
        return compiler.compile_json_schema(constraint.spec, any_whitespace=False, strict_mode=True)
    if constraint.kind is ConstraintKind.REGEX:
        return compiler.compile_regex(constraint.spec)
    return compiler.compile_grammar(constraint.spec)


@torch.inference_mode()
def constrained_target_alone(engine, prompt_ids, constraint: OutputConstraint, max_new_tokens: int) -> list[int]:
    matcher = xgr.GrammarMatcher(compiled_for(engine, constraint))
    bitmask = xgr.allocate_token_bitmask(1, engine.vocab_size)
    ids, out = list(prompt_ids), []
    eos = set(engine.eos_token_ids)
    while len(out) < max_new_tokens:
        logits = engine.target(torch.tensor([ids])).logits[:, -1].float()
        matcher.fill_next_token_bitmask(bitmask)
        xgr.apply_token_bitmask_inplace(logits, bitmask)
        token = int(logits.argmax())
        assert matcher.accept_token(token)
        out.append(token)
        ids.append(token)
        if token in eos:
            break
    return out


def conforms(kind: str, text: str) -> bool:
    """Whether a finished output is what its response_format asked for."""
    import re

    import jsonschema

    if kind == "json_schema":
        jsonschema.validate(json.loads(text), SCHEMA)
        return True
    if kind == "json_object":
        return isinstance(json.loads(text), dict)
    if kind == "regex":
        return re.fullmatch(REGEX, text) is not None
    return re.fullmatch(r"\((?:[a-z]|[0-9]+)(?:, (?:[a-z]|[0-9]+))*\)", text) is not None
