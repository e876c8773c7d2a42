"""The two interfaces the orchestration loop is written against, and their in-process
implementations. The gRPC implementations (coordinator/remote.py) have the same shape,
so one loop serves the embedded engine and the distributed server alike.

Every call carries the whole committed sequence (a list the caller owns); an
implementation decides how much of it to send. Workers hold caches, never truth.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Protocol, Sequence

import torch

from specdec.batching import BatchingRunner
from specdec.cost import ForwardBudget
from specdec.drafting import DEFAULT_PROPOSAL_TOP_N, AcceptanceHead, DraftToken, draft_tokens
from specdec.gsd.drafting import draft_tree
from specdec.gsd.tree import DraftTree, TreeParams
from specdec.gsd.verifying import TreeVerification, verify_draft_tree
from specdec.policies import StopRule
from specdec.sampling import SamplingParams, SparseDist
from specdec.session import ModelSession
from specdec.verifying import Verification, verify_draft


class EndpointUnavailable(RuntimeError):
    """The worker behind an endpoint cannot serve (dead, unreachable, shutting down)."""


class DraftEndpoint(Protocol):
    def draft(
        self, session_id: str, committed: Sequence[int], rule: StopRule, params: SamplingParams, seed: int
    ) -> AsyncIterator[DraftToken]: ...

    async def draft_tree(
        self, session_id: str, committed: Sequence[int], tree: TreeParams, params: SamplingParams, seed: int
    ) -> DraftTree: ...

    async def release(self, session_id: str) -> None: ...


class TargetEndpoint(Protocol):
    async def verify(
        self,
        session_id: str,
        committed: Sequence[int],
        draft: Sequence[int],
        proposals: Sequence[SparseDist] | None,
        params: SamplingParams,
        seed: int,
    ) -> Verification: ...

    async def verify_tree(
        self, session_id: str, committed: Sequence[int], tree: DraftTree, params: SamplingParams, seed: int
    ) -> TreeVerification: ...

    async def release(self, session_id: str) -> None: ...


class SessionStore:
    """Per-session caches with a bound on count (LRU) and an idle TTL."""

    def __init__(
        self, model: torch.nn.Module, budget: ForwardBudget | None, max_sessions: int, ttl_s: float, runner=None
    ):
        self.model, self.budget, self.runner = model, budget, runner
        self.max_sessions, self.ttl_s = max_sessions, ttl_s
        self._sessions: OrderedDict[str, tuple[ModelSession, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0

    def get(self, session_id: str) -> ModelSession:
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            entry = self._sessions.pop(session_id, None)
            if entry:
                session = entry[0]
            else:  # a batching runner owns the budget: one budget per merged forward
                budget = None if self.runner is not None else self.budget
                session = ModelSession(self.model, budget, self.runner)
            self._sessions[session_id] = (session, now)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
                self.evictions += 1
            return session

    def release(self, session_id: str) -> bool:
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._sessions

    def _expire(self, now: float) -> None:
        stale = [sid for sid, (_, used) in self._sessions.items() if now - used > self.ttl_s]
        for sid in stale:
            del self._sessions[sid]
            self.evictions += 1


class _ModelThread:
    """Where calls into one model run, off the event loop (torch releases the GIL, so
    draft and target overlap).

    max_batch == 1: one thread; calls never interleave.
    max_batch > 1: a pool of threads whose forwards a BatchingRunner merges into
    batched forwards; calls on the same session still never interleave (a lock each).
    """

    def __init__(self, name: str, sessions: SessionStore, max_batch: int = 1, batch_wait_s: float = 0.002):
        self.runner = None
        if max_batch > 1:
            self.runner = BatchingRunner(sessions.model, sessions.budget, max_batch, batch_wait_s)
            sessions.runner = self.runner
        self.executor = ThreadPoolExecutor(max_workers=2 * max_batch if max_batch > 1 else 1, thread_name_prefix=name)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _session_lock(self, session_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(session_id, threading.Lock())

    def wrap(self, session_id: str, fn):
        """`fn` as it must run on a pool thread: alone on its session, counted as a job."""
        if self.runner is None:
            return fn

        def guarded(*args):
            with self._session_lock(session_id), self.runner.job():
                return fn(*args)

        return guarded

    def submit(self, session_id: str, fn) -> None:
        self.executor.submit(self.wrap(session_id, fn))

    async def run(self, session_id: str, fn, *args):
        left = threading.Event()  # the caller was cancelled before the call reached a thread

        def unless_left(*a):
            if left.is_set():  # e.g. a deadline: running now could re-create a released session
                return None
            return fn(*a)

        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.executor, self.wrap(session_id, unless_left), *args
            )
        except asyncio.CancelledError:
            left.set()
            raise

    def release(self, sessions: SessionStore, session_id: str) -> None:
        """Drop a session once the calls already queued for it have run (a cancelled call
        may still be queued: releasing first would let it recreate the session)."""

        def drop():
            sessions.release(session_id)
            with self._locks_guard:
                self._locks.pop(session_id, None)

        self.submit(session_id, drop)


_END = object()


class LocalDraft:
    def __init__(
        self,
        model: torch.nn.Module,
        budget: ForwardBudget | None = None,
        top_n: int = DEFAULT_PROPOSAL_TOP_N,
        head: AcceptanceHead | None = None,
        max_sessions: int = 256,
        ttl_s: float = 600.0,
        max_batch: int = 1,
        batch_wait_s: float = 0.002,
    ):
        self.sessions = SessionStore(model, budget, max_sessions, ttl_s)
        self.top_n, self.head = top_n, head
        self._thread = _ModelThread("draft", self.sessions, max_batch, batch_wait_s)

    def draft(self, session_id, committed, rule, params, seed) -> AsyncIterator[DraftToken]:
        return self.draft_from(session_id, 0, committed, rule, params, seed)

    async def draft_from(self, session_id, start, tokens, rule, params, seed) -> AsyncIterator[DraftToken]:
        """Draft after `session.tokens[:start] + tokens` (a worker gets only the tokens it
        lacks); raises SessionStateLost if the session holds fewer than `start` tokens."""
        if rule.needs_acceptance_head and self.head is None:
            raise ValueError("policy specdecpp needs an acceptance head: load one with --acceptance-head")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        tokens = list(tokens)

        def work():
            if stop.is_set():  # the consumer left before this call reached the model thread
                return
            try:
                session = self.sessions.get(session_id)
                for tok in draft_tokens(session, start, tokens, rule, params, seed, self.top_n, self.head):
                    loop.call_soon_threadsafe(queue.put_nowait, tok)
                    if stop.is_set():
                        break
            except BaseException as exc:  # surfaced to the consumer below
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        self._thread.submit(session_id, work)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    async def draft_tree(self, session_id, committed, tree, params, seed) -> DraftTree:
        return await self.draft_tree_from(session_id, 0, committed, tree, params, seed)

    async def draft_tree_from(self, session_id, start, tokens, tree, params, seed) -> DraftTree:
        """A GSD draft tree after `session.tokens[:start] + tokens` (see draft_from)."""
        tree.validate()
        tokens = list(tokens)

        def work():
            return draft_tree(self.sessions.get(session_id), start, tokens, tree, params, seed, self.top_n)

        return await self._thread.run(session_id, work)

    async def release(self, session_id: str) -> None:
        self._thread.release(self.sessions, session_id)


class LocalTarget:
    def __init__(
        self,
        model: torch.nn.Module,
        budget: ForwardBudget | None = None,
        max_sessions: int = 256,
        ttl_s: float = 600.0,
        max_batch: int = 1,
        batch_wait_s: float = 0.002,
    ):
        self.sessions = SessionStore(model, budget, max_sessions, ttl_s)
        self._thread = _ModelThread("target", self.sessions, max_batch, batch_wait_s)

    async def verify(self, session_id, committed, draft, proposals, params, seed) -> Verification:
        return await self.verify_from(session_id, 0, committed, draft, proposals, params, seed)

    async def verify_from(self, session_id, start, tokens, draft, proposals, params, seed) -> Verification:
        """Verify `draft` after `session.tokens[:start] + tokens` (see LocalDraft.draft_from)."""
        tokens, draft = list(tokens), list(draft)

        def work():
            return verify_draft(self.sessions.get(session_id), start, tokens, draft, proposals, params, seed)

        return await self._thread.run(session_id, work)

    async def verify_tree(self, session_id, committed, tree, params, seed) -> TreeVerification:
        return await self.verify_tree_from(session_id, 0, committed, tree, params, seed)

    async def verify_tree_from(self, session_id, start, tokens, tree, params, seed) -> TreeVerification:
        """Verify a GSD draft tree after `session.tokens[:start] + tokens`."""
        tokens = list(tokens)

        def work():
            return verify_draft_tree(self.sessions.get(session_id), start, tokens, tree, params, seed)

        return await self._thread.run(session_id, work)

    async def release(self, session_id: str) -> None:
        self._thread.release(self.sessions, session_id)
