"""Where a worker keeps its sessions and runs its model: per-session KV caches with an
LRU bound and an idle TTL, and the model thread(s) that calls run on, off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import torch

from specdec.runtime.batching import BatchingRunner
from specdec.runtime.cost import ForwardBudget
from specdec.runtime.session import ModelSession


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


class ModelThread:
    """Where calls into one model run, off the event loop (torch releases the GIL, so
    draft and target overlap).

    max_batch == 1: one thread; calls never interleave.
    max_batch > 1: a pool of threads whose forwards a BatchingRunner merges into
    batched forwards; calls on the same session still never interleave (a lock each).
    """

    def __init__(
        self, name: str, sessions: SessionStore, max_batch: int = 1, batch_wait_s: float = 0.002,
        chunk_tokens: int | None = None,
    ):
        self.runner = None
        if max_batch > 1:
            self.runner = BatchingRunner(sessions.model, sessions.budget, max_batch, batch_wait_s, chunk_tokens)
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
