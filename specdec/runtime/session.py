"""A model plus the KV cache of one request: extend with tokens, crop back on rejection.

The session is told the sequence it should hold (`start` + the tokens after it) and
reuses its cache for the longest common prefix, so rollback after a rejection is
implicit and the prefix is never recomputed. A caller that does not know what the
session holds can always send `start=0` and the whole sequence.

The session also keeps the last logits row its latest forward computed: the target's
distribution for the position right after what it holds. PEARL judges a draft token
against that row without another pass (docs/algorithms.md §4).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from transformers import DynamicCache

from specdec.core.sequences import common_prefix
from specdec.runtime.cost import ForwardBudget


class SessionStateLost(LookupError):
    """The caller assumed cached tokens this session does not hold (restart, eviction)."""


@dataclass
class ForwardResult:
    logits: torch.Tensor  # [n_logits, V], model dtype
    hidden: torch.Tensor | None  # [n_logits, hidden] last hidden state, when asked for
    new_tokens: int  # tokens actually run through the model
    seconds: float  # wall time of the forward, including any cost-profile wait
    batch_tokens: int = 0  # tokens of every session in the forward (merged batches: more than new_tokens)

    def __post_init__(self):
        # the maths after a forward (sampling, acceptance, sparse q, the SpecDec++ head) runs on
        # CPU tensors; a no-op for a model on CPU, one copy of [n_logits, V] for one on a GPU
        # (which also waits for the forward: time it after this, see run_single)
        self.logits = self.logits.cpu()
        if self.hidden is not None:
            self.hidden = self.hidden.cpu()


@dataclass
class Step:
    began: float
    tokens: int = 0  # tokens run through the model in this step
    batch_tokens: int = 0  # tokens of all sessions in the forwards that ran them (merged: more)
    seconds: float = 0.0  # the step's time, including any cost-profile wait (set when it ends)


def model_device(model: torch.nn.Module) -> torch.device:
    """Where inputs go: the input embeddings' device (right under device_map too)."""
    embeddings = getattr(model, "get_input_embeddings", None)
    if embeddings is not None:
        return embeddings().weight.device
    return next(model.parameters(), torch.empty(0)).device


@torch.inference_mode()
def run_single(
    session: "ModelSession",
    fresh: list[int],
    n_logits: int,
    want_hidden: bool,
    positions: Sequence[int] | None = None,
    visible: torch.Tensor | None = None,
) -> ForwardResult:
    """The forward of `fresh` after the session's cached tokens: plain causal, or with the
    rows' own position ids and visibility (`visible`: bool [fresh, cached + fresh], which
    cached and new rows each new row sees; the model gets it as a 4D additive mask)."""
    began = time.perf_counter()
    device = model_device(session.model)
    custom = {}
    if positions is not None:
        custom["position_ids"] = torch.tensor([list(positions)], dtype=torch.long, device=device)
    if visible is not None:
        dtype = session.model.dtype
        mask = torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)
        custom["attention_mask"] = mask[None, None].to(device)
    out = session.model(
        torch.tensor([fresh], dtype=torch.long, device=device),
        cache=session.cache,
        use_cache=True,
        logits_to_keep=n_logits,
        output_hidden_states=want_hidden,
        **custom,
    )
    hidden = out.hidden_states[-1][0, -n_logits:] if want_hidden else None
    result = ForwardResult(out.logits[0], hidden, len(fresh), 0.0, len(fresh))
    result.seconds = time.perf_counter() - began  # after the copy to CPU: a GPU's forward has ended
    return result


def check_rows(
    cached: int, fresh: Sequence[int], positions: Sequence[int] | None, visible: torch.Tensor | None
) -> None:
    """A forward's own position ids and visibility fit its rows; every new row sees itself
    (a row that sees nothing would get NaN out of its softmax)."""
    m = len(fresh)
    if positions is not None and len(positions) != m:
        raise ValueError(f"{len(positions)} position ids for {m} rows")
    if visible is not None:
        if visible.dtype != torch.bool or tuple(visible.shape) != (m, cached + m):
            raise ValueError(f"visibility must be bool [{m}, {cached + m}], got {visible.dtype} {tuple(visible.shape)}")
        if not bool(visible[torch.arange(m), cached + torch.arange(m)].all()):
            raise ValueError("every new row must see itself")


class ModelSession:
    """`runner`, when given, executes the forwards (specdec.runtime.batching merges concurrent
    sessions' forwards into one); it then owns the cost budget too."""

    def __init__(self, model: torch.nn.Module, budget: ForwardBudget | None = None, runner=None):
        self.model = model
        self.budget = budget
        self.runner = runner
        self.tokens: list[int] = []  # the tokens whose K/V are in `cache`, in order
        self.cache = DynamicCache()
        self._row: torch.Tensor | None = None  # logits [V] for position len(self.tokens), while valid
        self._step: Step | None = None  # the step in progress (forwards then settle with it)
        self.guide = None  # structured output: the request's grammar state (specdec.grammar.Guide), if any

    def kept_row(self, start: int, tokens: Sequence[int]) -> torch.Tensor | None:
        """The logits row for the position after `self.tokens[:start] + tokens` when the
        session holds exactly that sequence and its last forward ended there; else None."""
        if self._row is None or start > len(self.tokens) or self.tokens[start:] != list(tokens):
            return None
        return self._row

    @contextlib.contextmanager
    def step(self) -> Iterator["Step"]:
        """One model step: the forwards inside the block and the maths on their logits
        (sampling, the accept/reject tests) share one cost-profile budget, settled when the
        block ends, as a GPU step includes its sampling kernels. `Step.seconds` is its time."""
        step = Step(time.perf_counter())
        self._step = step
        try:
            yield step
        finally:
            self._step = None
            if self.budget is not None and self.runner is None and step.tokens:
                self.budget.settle(step.tokens, step.began)
            step.seconds = time.perf_counter() - step.began

    def forget_row(self) -> None:
        """Called by any code that changes `tokens` outside `forward` (GSD's tree rows)."""
        self._row = None

    def __len__(self) -> int:
        return len(self.tokens)

    def crop(self, length: int) -> None:
        """Forget everything after the first `length` tokens."""
        if length < len(self.tokens):
            self.cache.crop(length - self.cache.get_seq_length())
            del self.tokens[length:]
            self._row = None

    def forward(
        self,
        start: int,
        tokens: Sequence[int],
        n_logits: int = 1,
        want_hidden: bool = False,
    ) -> ForwardResult:
        """Make the session hold `self.tokens[:start] + tokens` and return the logits of
        its last `n_logits` positions (position i predicts token i + 1)."""
        if start > len(self.tokens):
            raise SessionStateLost(f"session holds {len(self.tokens)} tokens, caller assumed {start}")
        total = start + len(tokens)
        if not 1 <= n_logits <= total:
            raise ValueError(f"n_logits must be in 1..{total}, got {n_logits}")
        reuse = start + common_prefix(self.tokens[start:], tokens)
        reuse = min(reuse, total - n_logits)  # the last n_logits positions must be run
        sequence = self.tokens[:start] + list(tokens)
        self.crop(reuse)
        fresh = sequence[reuse:]
        out = self._run(fresh, n_logits, want_hidden)
        self.tokens = sequence
        self._row = out.logits[-1]
        return out

    def run_rows(
        self, fresh: Sequence[int], n_logits: int, positions: Sequence[int], visible: torch.Tensor
    ) -> ForwardResult:
        """Append `fresh` to the cache with their own position ids and visibility (bool
        [fresh, cached + fresh]: which cached and new rows each new row sees; each sees
        itself), through the runner like `forward` (merged with other sessions' forwards,
        never split into prefill chunks). The caller records the rows in `tokens` (GSD's
        tree rows); the kept row is forgotten."""
        fresh = list(fresh)
        check_rows(len(self.tokens), fresh, positions, visible)
        if not 1 <= n_logits <= len(fresh):
            raise ValueError(f"n_logits must be in 1..{len(fresh)}, got {n_logits}")
        out = self._run(fresh, n_logits, False, list(positions), visible)
        self._row = None
        return out

    def _run(
        self, fresh: list[int], n_logits: int, want_hidden: bool,
        positions: list[int] | None = None, visible: torch.Tensor | None = None,
    ) -> ForwardResult:
        """One forward of `fresh` after the cached rows: on the runner when there is one (it
        owns the budget), else alone, its budget settled by the step in progress or now."""
        if self.runner is not None:
            out = self.runner.run(self, fresh, n_logits, want_hidden, positions, visible)
            if self._step is not None:
                self._step.tokens += len(fresh)
                self._step.batch_tokens += out.batch_tokens
        elif self._step is not None:  # the step settles the budget when it ends
            out = run_single(self, fresh, n_logits, want_hidden, positions, visible)
            self._step.tokens += len(fresh)
            self._step.batch_tokens += len(fresh)
        else:
            began = time.perf_counter()
            out = run_single(self, fresh, n_logits, want_hidden, positions, visible)
            if self.budget is not None:
                self.budget.settle(len(fresh), began)
                out.seconds = time.perf_counter() - began
        return out

    def append(self, tokens: Sequence[int], n_logits: int = 1, want_hidden: bool = False) -> ForwardResult:
        return self.forward(len(self.tokens), tokens, n_logits, want_hidden)
