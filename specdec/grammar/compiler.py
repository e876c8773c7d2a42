"""A constraint -> xgrammar's compiled grammar for one tokenizer, cached per worker."""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from specdec.core.constraint import ConstraintKind, OutputConstraint

JSON_OBJECT_SCHEMA = '{"type": "object"}'
CACHE_SIZE = 64  # compiled grammars kept per worker (a schema compiles in ~20 ms; reuse is the common case)


def _grammar(constraint: OutputConstraint):
    """xgrammar's Grammar (tokenizer-free): what checks a schema, pattern or grammar."""
    import xgrammar as xgr

    # compact separators: a model cannot pad the document with whitespace forever
    if constraint.kind is ConstraintKind.JSON_OBJECT:  # OpenAI's json_object: an object (not any JSON value)
        return xgr.Grammar.from_json_schema(JSON_OBJECT_SCHEMA, any_whitespace=False, strict_mode=False)
    if constraint.kind is ConstraintKind.JSON_SCHEMA:
        return xgr.Grammar.from_json_schema(constraint.spec, any_whitespace=False, strict_mode=True)
    if constraint.kind is ConstraintKind.REGEX:
        return xgr.Grammar.from_regex(constraint.spec)
    return xgr.Grammar.from_ebnf(constraint.spec)


def check_constraint(constraint: OutputConstraint | None) -> None:
    """ValueError naming what is wrong when the schema, pattern or grammar does not compile."""
    if constraint is not None:
        _checked_grammar(constraint)


def _checked_grammar(constraint: OutputConstraint):
    """The constraint's Grammar, or a ValueError saying what to fix (not xgrammar's own error)."""
    constraint.validate()
    try:
        return _grammar(constraint)
    except Exception as exc:  # xgrammar raises RuntimeError / its own errors with a message
        what = {"json_schema": "JSON schema", "regex": "regex", "grammar": "EBNF grammar"}.get(constraint.kind.value)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", first)  # xgrammar's "[time] file.cc:line: " prefix
        raise ValueError(f"response_format: invalid {what}: {first[:300]}") from None


@dataclass
class GrammarStats:
    """What masking cost one worker: the bench's per-token grammar cost."""

    rows: int = 0  # logits rows masked
    seconds: float = 0.0  # spent syncing the matcher, filling and applying masks
    compiles: int = 0  # grammars compiled (cache misses)
    compile_seconds: float = 0.0

    def add(self, rows: int, seconds: float) -> None:
        self.rows += rows  # the GIL keeps these adds whole enough for a counter
        self.seconds += seconds


class GrammarCompiler:
    """One tokenizer's vocabulary (prepared lazily: ~0.5 s for 150k tokens) and an LRU of
    compiled grammars. Thread-safe: the model threads of one worker share it."""

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: Sequence[int]):
        self.tokenizer, self.vocab_size, self.stop_token_ids = tokenizer, int(vocab_size), list(stop_token_ids)
        self._compiler = None
        self.stats = GrammarStats()
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, constraint: OutputConstraint):
        key = (constraint.kind, constraint.spec)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            compiler = self._ensure_compiler()
        began = time.perf_counter()
        compiled = compiler.compile_grammar(_checked_grammar(constraint))
        self.stats.compiles += 1
        self.stats.compile_seconds += time.perf_counter() - began
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return compiled

    def warm(self) -> None:
        """Prepare the vocabulary ahead of the first constrained request (best effort: a
        machine without xgrammar serves free text and refuses constraints when asked)."""
        try:
            with self._lock:
                self._ensure_compiler()
        except ImportError:
            pass

    def _ensure_compiler(self):
        if self._compiler is None:
            import xgrammar as xgr

            info = xgr.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=self.stop_token_ids
            )
            self._compiler = xgr.GrammarCompiler(info, max_threads=1)
        return self._compiler


def compiler_for(model, tokenizer) -> GrammarCompiler | None:
    """A worker's compiler: the model's logits width and end tokens; None without a tokenizer."""
    if tokenizer is None:
        return None
    from specdec.models.loading import eos_token_ids_of

    compiler = GrammarCompiler(tokenizer, int(model.config.vocab_size), eos_token_ids_of(model, tokenizer))
    # prepare the vocabulary now, beside the model loading, not in the first constrained request
    # (it would hold the model thread, and every session batched on it, for ~0.5 s)
    threading.Thread(target=compiler.warm, name="grammar-warm-up", daemon=True).start()
    return compiler
