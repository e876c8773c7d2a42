"""Structured output with xgrammar: compile a constraint for a tokenizer (`compiler`),
follow one session's tokens and mask its logits (`guide`).

Why xgrammar (measured by scripts/grammar_mask_cost.py on the real tokenizer, see
BENCHMARKS.md): its per-token mask and outlines-core's both cost microseconds, but
xgrammar compiles a schema ~10x faster, rolls back any number of tokens (the KV cache's
rollback after a rejection), and takes JSON Schema, regex and EBNF grammars alike.
"""

from specdec.grammar.compiler import GrammarCompiler, check_constraint, compiler_for
from specdec.grammar.guide import Guide, guide_for

__all__ = ["GrammarCompiler", "Guide", "check_constraint", "compiler_for", "guide_for"]
