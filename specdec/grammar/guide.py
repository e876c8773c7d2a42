"""One session's grammar state: follows the session's tokens, masks its logits.

The guide holds an xgrammar matcher over the generated part of the sequence (from the
constraint's `start`, the prompt's length). Each call names the sequence the logits
were computed after; the guide syncs to it by longest common prefix (roll back what
differs, accept the rest), so the grammar rolls back exactly as the KV cache does after
a rejection, and PEARL's speculative drafts and GSD's branches need no bookkeeping of
their own. Masking happens before temperature / top-k / top-p, for draft and target
alike, so speculative decoding stays exact against the constrained target.

A row whose path breaks the grammar (a GSD draft child proposed from a merged node's
context can be one) is left unmasked: the target masks that token out at its parent, so
the path is never accepted and the row is never used.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch

from specdec.core.constraint import OutputConstraint
from specdec.core.sequences import common_prefix


class Guide:
    def __init__(self, compiled, constraint: OutputConstraint, vocab_size: int, stats=None):
        import xgrammar as xgr

        self._xgr = xgr
        self.constraint = constraint
        self.start = constraint.start
        self.vocab_size = vocab_size
        self.matcher = xgr.GrammarMatcher(compiled)  # max_rollback_tokens=-1: any depth
        self.accepted: list[int] = []  # what the matcher holds: sequence[start:]
        self.stats = stats  # the worker's GrammarStats, when counted
        # tokens after the document's end (a draft may run past EOS; the loop cuts there): held
        # in `accepted` but not in the matcher, which refuses anything after its stop token
        self.past_end = 0

    # -- following the sequence -----------------------------------------------------

    def sync(self, sequence: Sequence[int]) -> None:
        """Hold exactly sequence[start:]. A committed or drafted token always fits the
        grammar (each was drawn under its mask), so one that does not is a bug: raise."""
        generated = sequence[self.start :]
        keep = common_prefix(self.accepted, generated)
        self._rollback(len(self.accepted) - keep)
        del self.accepted[keep:]
        for token in generated[keep:]:
            if not self._accept(int(token)):
                raise RuntimeError(
                    f"token {int(token)} at position {self.start + len(self.accepted)} breaks the output constraint"
                )
            self.accepted.append(int(token))

    def _accept(self, token: int) -> bool:
        if self.matcher.is_terminated():
            self.past_end += 1
            return True
        return self.matcher.accept_token(token)

    def _rollback(self, n: int) -> None:
        """Undo the matcher's last n accepts (past-the-end ones first); `accepted` is the caller's."""
        beyond = min(n, self.past_end)
        self.past_end -= beyond
        if n > beyond:
            self.matcher.rollback(n - beyond)

    def _advance(self, tokens: Sequence[int]) -> int:
        """Accept tokens on top of the synced state; returns how many fitted (stops at the first that does not)."""
        for i, token in enumerate(tokens):
            if not self._accept(int(token)):
                return i
        return len(tokens)

    def _fill(self, bitmask: torch.Tensor, row: int) -> None:
        if self.matcher.is_terminated():  # the document is complete: only its end may follow
            bitmask[row] = 0
            for token in self.matcher.stop_token_ids:
                bitmask[row, token // 32] |= 1 << (token % 32)
        else:
            self.matcher.fill_next_token_bitmask(bitmask, row)

    # -- masking ----------------------------------------------------------------------

    def mask_chain(self, logits: torch.Tensor, sequence: Sequence[int], upcoming: Sequence[int] = ()) -> torch.Tensor:
        """Mask `logits` [n, V] in place: row j is the distribution after
        sequence + upcoming[:j] (n <= len(upcoming) + 1). Returns `logits`."""
        began = time.perf_counter()
        self.sync(sequence)
        n = logits.shape[0]
        bitmask = self._xgr.allocate_token_bitmask(n, self.vocab_size)  # all allowed
        fitted = self._advance_rows(bitmask, upcoming[: n - 1])
        self._rollback(fitted)
        self._apply(logits, bitmask)
        self._count(n, began)
        return logits

    def _advance_rows(self, bitmask: torch.Tensor, upcoming: Sequence[int]) -> int:
        self._fill(bitmask, 0)
        for j, token in enumerate(upcoming):
            if not self._accept(int(token)):
                return j  # rows after a token that breaks the grammar stay unmasked (never used)
            self._fill(bitmask, j + 1)
        return len(upcoming)

    def mask_paths(self, logits: torch.Tensor, sequence: Sequence[int], paths: Sequence[Sequence[int]]) -> torch.Tensor:
        """Mask `logits` [n, V] in place: row i is the distribution after sequence + paths[i]
        (GSD's tree rows: each node's path from the root). Returns `logits`."""
        began = time.perf_counter()
        self.sync(sequence)
        bitmask = self._xgr.allocate_token_bitmask(len(paths), self.vocab_size)
        for row, path in enumerate(paths):
            fitted = self._advance(path)
            if fitted == len(path):
                self._fill(bitmask, row)
            self._rollback(fitted)
        self._apply(logits, bitmask)
        self._count(len(paths), began)
        return logits

    def _count(self, rows: int, began: float) -> None:
        if self.stats is not None:
            self.stats.add(rows, time.perf_counter() - began)

    def _apply(self, logits: torch.Tensor, bitmask: torch.Tensor) -> None:
        self._xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=min(self.vocab_size, logits.shape[-1]))


def guide_for(current: Guide | None, compiler, constraint: OutputConstraint | None) -> Guide | None:
    """The session's guide for this request's constraint: the one it has when it matches,
    else a new one (a new request on a reused session id); None without a constraint."""
    if constraint is None:
        return None
    if current is not None and current.constraint == constraint:
        return current
    if compiler is None:
        raise ValueError("structured output needs the worker's tokenizer: this worker was started without one")
    return Guide(compiler.compile(constraint), constraint, compiler.vocab_size, compiler.stats)
