"""Structured output: what the generated text must match. Torch-free (the SDK and the
HTTP gateway parse OpenAI's `response_format` with it).

A constraint masks the model's logits before temperature, top-k and top-p, for the
draft and the target alike; the target's constrained distribution is then the one that
verification is exact against (docs/algorithms.md §7). The grammar itself is compiled
and followed by `specdec.grammar` (xgrammar).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Mapping


class ConstraintKind(str, Enum):
    JSON_OBJECT = "json_object"  # any JSON object
    JSON_SCHEMA = "json_schema"  # JSON valid under a JSON Schema (spec: the schema as JSON text)
    REGEX = "regex"  # the whole output matches a regular expression (spec: the pattern)
    GRAMMAR = "grammar"  # an EBNF grammar, root rule `root` (spec: the grammar)


MAX_SPEC_CHARS = 64 * 1024


@dataclass(frozen=True)
class OutputConstraint:
    kind: ConstraintKind
    spec: str = ""
    start: int = 0  # absolute index of the first constrained token: the prompt's length

    def at(self, start: int) -> "OutputConstraint":
        return replace(self, start=start)

    def validate(self) -> None:
        """The shape only; whether the schema or pattern compiles is specdec.grammar's check."""
        if not isinstance(self.kind, ConstraintKind):
            raise ValueError(f"response_format type must be one of {', '.join(k.value for k in ConstraintKind)}")
        if self.kind is not ConstraintKind.JSON_OBJECT and not self.spec.strip():
            raise ValueError(f"response_format {self.kind.value} needs its {_SPEC_FIELD[self.kind]}")
        if len(self.spec) > MAX_SPEC_CHARS:
            raise ValueError(f"response_format's {_SPEC_FIELD[self.kind]} is over {MAX_SPEC_CHARS} characters")


_SPEC_FIELD = {
    ConstraintKind.JSON_OBJECT: "schema",
    ConstraintKind.JSON_SCHEMA: "schema",
    ConstraintKind.REGEX: "regex",
    ConstraintKind.GRAMMAR: "grammar",
}


def parse_response_format(value: Any) -> OutputConstraint | None:
    """OpenAI's `response_format` (and ours) -> a constraint; None for free text.

    {"type": "text"} | {"type": "json_object"} |
    {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": ...}} |
    {"type": "regex", "regex": "..."} | {"type": "grammar", "grammar": "<EBNF>"}.
    An OutputConstraint passes through. ValueError says what to fix."""
    if value is None or isinstance(value, OutputConstraint):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"response_format must be an object with a 'type', got {type(value).__name__}")
    kind = value.get("type")
    if kind in (None, "text"):
        return None
    try:
        kind = ConstraintKind(kind)
    except ValueError:
        choices = ", ".join(["text", *(k.value for k in ConstraintKind)])
        raise ValueError(f"response_format type must be one of {choices}; got {kind!r}") from None
    if kind is ConstraintKind.JSON_OBJECT:
        return OutputConstraint(kind)
    if kind is ConstraintKind.JSON_SCHEMA:
        body = value.get("json_schema")
        if not isinstance(body, Mapping) or "schema" not in body:
            raise ValueError('response_format json_schema needs "json_schema": {"name": ..., "schema": {...}}')
        schema = body["schema"]
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as exc:
                raise ValueError(f"response_format json_schema.schema is not valid JSON: {exc}") from None
        if not isinstance(schema, Mapping):
            raise ValueError("response_format json_schema.schema must be a JSON object (a JSON Schema)")
        constraint = OutputConstraint(kind, json.dumps(schema))  # property order kept: the output follows it
    else:
        spec = value.get(kind.value)
        if not isinstance(spec, str):
            raise ValueError(f'response_format {kind.value} needs "{kind.value}": "<{_SPEC_FIELD[kind]}>" as a string')
        constraint = OutputConstraint(kind, spec)
    constraint.validate()
    return constraint


def constraint_to_response_format(constraint: OutputConstraint | None) -> dict | None:
    """The inverse of parse_response_format (reports, the gateway)."""
    if constraint is None:
        return None
    if constraint.kind is ConstraintKind.JSON_OBJECT:
        return {"type": "json_object"}
    if constraint.kind is ConstraintKind.JSON_SCHEMA:
        return {"type": "json_schema", "json_schema": {"name": "schema", "schema": json.loads(constraint.spec)}}
    return {"type": constraint.kind.value, constraint.kind.value: constraint.spec}
