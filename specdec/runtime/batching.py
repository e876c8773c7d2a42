"""Batched forwards across sessions: concurrent calls on one model share one forward.

Sessions of different lengths are merged into one padded batch: each row's cached
K/V and new tokens are right-aligned, an explicit 4D mask lets every row see only its
own cache and its own earlier new tokens, and explicit position ids keep each row's
positions. After the forward the merged cache is split back into the sessions, pads
dropped. Masked entries add exactly zero attention weight, so a row computes what it
would alone, up to float summation order.

`BatchingRunner` sits behind `ModelSession.forward`: the calls of many request threads
(drafting, verifying) arrive concurrently and are merged. A forward waits for the
sessions that are coming back: the calls in progress (`job()`) and the sessions that ran
in the last few forwards (a decoding session returns one round trip after its forward
ended: its coordinator commits, then sends the next round). It waits at most
max(wait_s, PATIENCE x the last forward's time), so a lone request pays no delay, a
session that finished costs one short wait, and sessions that fell out of step merge
again: without that, two halves of the load alternate, each paying a whole forward for
half the rows (measured, gpu-batch, 4 sessions over gRPC: 1.3x a single session's rate).

A call may bring its own layout instead of plain causal (GSD's tree forwards,
`ModelSession.run_rows`): its rows' position ids and which of its cached and new rows
each new row sees. It is right-aligned into the merged mask like a causal one, so it
merges with any other call and computes what it would alone; it is never split into
prefill chunks.

Chunked prefill. A forward holds at most `chunk_tokens` tokens (the cost profile's flat
budget, else CHUNK_TOKENS) of decoding rows plus one chunk of a long prompt: the decoding
sessions' rows go first, whole; a prompt's prefill fills the rest, at least MIN_CHUNK_SHARE
of the budget, and its next chunk goes into the next forward. Without it one session's
prompt of a few hundred tokens makes every other session's decoding step cost that whole
prefill (on a roofline device: many budgets); with it the decoding steps stay near their
own cost and the prompt rides along in the room they leave (as Sarathi-Serve's
stall-free batching, and vLLM's chunked prefill). A prefill alone is chunked too, so a
session that arrives meanwhile waits one chunk, not the whole prompt.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from specdec.runtime.cost import ForwardBudget
from specdec.runtime.session import (
    ForwardResult,
    ModelSession,
    model_device,
    run_single,
)


PATIENCE = 0.15  # a forward waits up to this share of the last one for sessions coming back
MAX_WAIT_S = 0.02
HORIZON = 3.0  # sessions that submitted within this many forwards' time are coming back
CHUNK_TOKENS = 256  # tokens per forward when no cost profile says the device's flat budget
MIN_CHUNK_SHARE = 0.5  # a waiting prefill's chunk gets at least this share of the budget per forward
MIN_SPLIT = 8  # a call is prefilled in chunks only if at least this many of its rows' logits are not wanted


@dataclass
class BatchItem:
    session: ModelSession
    fresh: list[int]  # tokens to run after the session's cached ones (of a chunked prefill: those left)
    n_logits: int
    want_hidden: bool
    future: Future = field(default_factory=Future)
    chunk_of: "BatchItem | None" = None  # a leading chunk of this call's tokens (its result is not the call's)
    seconds: float = 0.0  # the forwards of its earlier chunks
    batch_tokens: int = 0  # ... their tokens of all sessions
    tokens_run: int = 0  # ... and its own tokens in them
    # A call with its own layout (GSD's tree rows): the position id of each of `fresh`, and
    # which cached and new rows each new row sees (bool [fresh, cached + fresh]); None: plain
    # causal after its cache. Such a call is run whole, never split into chunks.
    positions: list[int] | None = None
    visible: torch.Tensor | None = None

    def split(self, n: int) -> "BatchItem":
        """The first `n` of its tokens as a chunk to run now; the rest stay with this call."""
        return BatchItem(self.session, self.fresh[:n], 1, False, chunk_of=self)


def _splittable(item: BatchItem) -> bool:
    custom = item.positions is not None or item.visible is not None
    return not custom and len(item.fresh) - item.n_logits >= MIN_SPLIT


@torch.inference_mode()
def batched_forward(model: torch.nn.Module, items: list[BatchItem]) -> list[ForwardResult]:
    """One forward over several sessions; updates each session's cache in place."""
    began = time.perf_counter()
    device = model_device(model)
    B = len(items)
    cached = [item.session.cache.get_seq_length() for item in items]
    fresh = [len(item.fresh) for item in items]
    L, F = max(cached), max(fresh)

    input_ids = torch.zeros(B, F, dtype=torch.long)
    positions = torch.zeros(B, F, dtype=torch.long)
    allowed = torch.zeros(B, F, L + F, dtype=torch.bool)
    causal = torch.tril(torch.ones(F, F, dtype=torch.bool))
    for b, item in enumerate(items):
        pad = F - fresh[b]
        input_ids[b, pad:] = torch.tensor(item.fresh)
        if item.positions is not None:
            positions[b, pad:] = torch.tensor(item.positions)
        else:
            positions[b, pad:] = torch.arange(cached[b], cached[b] + fresh[b])
        if item.visible is not None:  # its own layout (checked by run_rows), right-aligned like the causal one
            allowed[b, pad:, L - cached[b] : L] = item.visible[:, : cached[b]]
            allowed[b, pad:, L + pad :] = item.visible[:, cached[b] :]
        else:
            allowed[b, pad:, L - cached[b] : L] = True  # its own cache
            allowed[b, pad:, L + pad :] = causal[pad:, pad:]  # its own new tokens, causally
        allowed[b, :pad, L : L + pad] = torch.eye(pad, dtype=torch.bool)  # pads see themselves (no NaN)
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(B, 1, F, L + F, dtype=dtype).masked_fill(~allowed[:, None], torch.finfo(dtype).min)

    merged = DynamicCache()
    if L > 0:
        layers = next(item.session.cache.layers for item in items if item.session.cache.get_seq_length())
        for i, layer in enumerate(layers):
            shape = (B, *layer.keys.shape[1:2], L, layer.keys.shape[-1])
            keys, values = layer.keys.new_zeros(shape), layer.values.new_zeros(shape)
            for b, item in enumerate(items):
                if cached[b]:
                    own = item.session.cache.layers[i]
                    keys[b, :, L - cached[b] :] = own.keys[0]
                    values[b, :, L - cached[b] :] = own.values[0]
            merged.update(keys, values, i)

    out = model(
        input_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        cache=merged,
        use_cache=True,
        logits_to_keep=max(item.n_logits for item in items),
        output_hidden_states=any(item.want_hidden for item in items),
    )
    for b, item in enumerate(items):
        own = DynamicCache()
        for i, layer in enumerate(merged.layers):
            rows = torch.cat([torch.arange(L - cached[b], L), torch.arange(L + F - fresh[b], L + F)]).to(device)
            own.update(layer.keys[b : b + 1, :, rows], layer.values[b : b + 1, :, rows], i)
        item.session.cache = own
    results = []
    for b, item in enumerate(items):
        n = item.n_logits
        hidden = out.hidden_states[-1][b, -n:] if item.want_hidden else None
        results.append(ForwardResult(out.logits[b, -n:], hidden, fresh[b], 0.0, sum(fresh)))
    seconds = time.perf_counter() - began  # after the copies to CPU: a GPU's forward has ended
    for result in results:
        result.seconds = seconds
    return results


class BatchingRunner:
    """Merges the forwards of concurrent calls on one model (see the module docstring)."""

    def __init__(
        self, model: torch.nn.Module, budget: ForwardBudget | None, max_batch: int, wait_s: float,
        chunk_tokens: int | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model, self.budget = model, budget
        self.max_batch, self.wait_s = max_batch, wait_s
        self.chunk_tokens = chunk_tokens or (budget.flat_tokens if budget is not None else CHUNK_TOKENS)
        if self.chunk_tokens < 2:
            raise ValueError(f"chunk_tokens must be >= 2, got {self.chunk_tokens}")
        self.chunks = 0  # prefill chunks run (a chunked call counts each but its last)
        self._pending: list[BatchItem] = []
        self._active = 0  # calls in progress that will submit forwards
        self._cv = threading.Condition()
        self._seen: dict[int, float] = {}  # id(session) -> when it last submitted a forward
        self._last_forward_s = 0.0
        self.forwards = 0  # batched forwards run
        self.rows = 0  # session forwards merged into them
        threading.Thread(target=self._loop, name="batching-runner", daemon=True).start()

    @contextlib.contextmanager
    def job(self):
        """Wrap one call (a whole draft or verification) that will submit forwards."""
        with self._cv:
            self._active += 1
        try:
            yield
        finally:
            with self._cv:
                self._active -= 1
                self._cv.notify_all()

    def run(
        self, session: ModelSession, fresh: list[int], n_logits: int, want_hidden: bool,
        positions: list[int] | None = None, visible: torch.Tensor | None = None,
    ) -> ForwardResult:
        item = BatchItem(session, fresh, n_logits, want_hidden, positions=positions, visible=visible)
        with self._cv:
            self._pending.append(item)
            self._cv.notify_all()
        return item.future.result()

    def expected(self, now: float) -> int:
        """Sessions a forward should wait for: the calls in progress, and those that ran in
        the last HORIZON forwards (they are coming back)."""
        horizon = HORIZON * max(self._last_forward_s, self.wait_s)
        for key in [k for k, t in self._seen.items() if now - t > horizon]:
            del self._seen[key]
        return max(self._active, len(self._seen), 1)

    def _take_batch(self) -> list[BatchItem]:
        with self._cv:
            while not self._pending:
                self._cv.wait()
            now = time.monotonic()
            deadline = now + min(MAX_WAIT_S, max(self.wait_s, PATIENCE * self._last_forward_s))
            while len(self._pending) < min(self.max_batch, self.expected(now)):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            batch = self._compose()
            now = time.monotonic()
            for item in batch:
                self._seen[id(item.session)] = now
            return batch

    def _compose(self) -> list[BatchItem]:
        """Take the next forward's items out of `_pending` (under the lock), at most max_batch:
        the calls whose every row is wanted (decoding steps, verifications) whole, oldest
        first, keeping one seat when a prefill waits; then prefills (calls with MIN_SPLIT or more rows nobody reads), oldest first,
        whole while they fit in the token budget, the next one as a chunk of what is left
        (at least MIN_CHUNK_SHARE of the budget)."""
        waiting = any(_splittable(i) for i in self._pending)  # a prompt keeps a seat: it must not starve
        short = [i for i in self._pending if not _splittable(i)][: self.max_batch - (waiting and self.max_batch > 1)]
        batch, tokens = list(short), sum(len(i.fresh) for i in short)
        for item in (i for i in self._pending if _splittable(i)):
            if len(batch) >= self.max_batch:
                break
            room = max(self.chunk_tokens - tokens, int(MIN_CHUNK_SHARE * self.chunk_tokens))
            if len(item.fresh) <= room:
                batch.append(item)
                tokens += len(item.fresh)
                continue
            batch.append(item.split(min(room, len(item.fresh) - item.n_logits)))
            self.chunks += 1
            break
        taken = {id(i.chunk_of or i) for i in batch}
        self._pending = [i for i in self._pending if id(i) not in taken]
        return batch

    def _deliver(self, item: BatchItem, result: ForwardResult) -> None:
        """A call's result to its caller; a chunk's goes back to its call, which waits for its next chunk."""
        call = item.chunk_of
        if call is None:
            if item.tokens_run:  # the last chunk of a chunked call: the call's compute is all of them
                result.seconds += item.seconds
                result.batch_tokens += item.batch_tokens
                result.new_tokens += item.tokens_run
            item.future.set_result(result)
            return
        call.seconds += result.seconds
        call.batch_tokens += result.batch_tokens
        call.tokens_run += len(item.fresh)
        call.fresh = call.fresh[len(item.fresh):]
        with self._cv:
            self._pending.insert(0, call)
            self._cv.notify_all()

    def _loop(self) -> None:
        while True:
            # One forward per call of _run: its locals (the batch, its items, their sessions)
            # go when it returns. Kept in this loop's frame, the last forward's sessions
            # stayed referenced while the runner waited for the next one, however long:
            # up to max_batch KV caches of sessions already released or dropped by the TTL.
            self._run(self._take_batch())

    def _run(self, batch: list[BatchItem]) -> None:
        began = time.perf_counter()
        try:
            if len(batch) == 1:
                item = batch[0]
                results = [run_single(
                    item.session, item.fresh, item.n_logits, item.want_hidden, item.positions, item.visible
                )]
            else:
                results = batched_forward(self.model, batch)
            if self.budget is not None:
                self.budget.settle(sum(len(item.fresh) for item in batch), began)
                for result in results:
                    result.seconds = time.perf_counter() - began
        except BaseException as exc:  # every waiting call learns of it
            for item in batch:
                (item.chunk_of or item).future.set_exception(exc)
            return
        self._last_forward_s = time.perf_counter() - began
        self.forwards += 1
        self.rows += len(batch)
        for item, result in zip(batch, results):
            self._deliver(item, result)
