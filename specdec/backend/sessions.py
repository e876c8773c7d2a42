"""Where a worker keeps its sessions and runs its model: per-session KV caches with an
LRU bound and an idle TTL, and the model thread(s) that calls run on, off the event loop.

Footprint. A session a caller abandons (a client that disconnected, a coordinator that
died: no Release) is dropped `ttl_s` after its last call by `sweep_sessions` (the workers
run it, every `sweep_interval(ttl_s)`), or earlier by the LRU bound; once dropped nothing
else refers to its cache (the per-session locks are weak, the batching runner lets go of a
session when its forward ends), and the sweep hands the freed heap back to the OS
(`trim_heap`). Measured by
scripts/session_footprint.py; tested by tests/services/test_session_footprint.py.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import torch

from specdec.runtime.batching import BatchingRunner
from specdec.runtime.cost import ForwardBudget
from specdec.runtime.session import ModelSession

SWEEP_MAX_S = 5.0  # the sweep runs every ttl / 4, at most this far apart (ttl 600 s: every 5 s)
SWEEP_MIN_S = 0.05


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

    def sweep(self) -> int:
        """Drop the sessions idle for more than the TTL now; how many were dropped.
        `get` expires them too, but only when a call arrives: without a sweep, a worker
        whose traffic stopped would hold its abandoned sessions' caches (up to
        max_sessions of them) until its next call."""
        with self._lock:
            return self._expire(time.monotonic())

    def _expire(self, now: float) -> int:
        stale = [sid for sid, (_, used) in self._sessions.items() if now - used > self.ttl_s]
        for sid in stale:
            del self._sessions[sid]
            self.evictions += 1
        return len(stale)


def sweep_interval(ttl_s: float) -> float:
    """How often a worker sweeps: an abandoned session is gone ttl_s to ttl_s + this after
    its last call."""
    return min(max(ttl_s / 4, SWEEP_MIN_S), SWEEP_MAX_S)


async def sweep_sessions(stores, interval_s: float) -> None:
    """Run until cancelled: every `interval_s`, drop the sessions idle past their TTL in
    each SessionStore of `stores`, and when any went, trim the heap."""
    while True:
        await asyncio.sleep(interval_s)
        dropped = sum(store.sweep() for store in stores)
        if dropped:
            await asyncio.to_thread(trim_heap)


TRIM_ENV = "SPECDEC_MALLOC_TRIM"  # "0": never trim (to measure what trimming is worth)


def _malloc_trim():
    if not sys.platform.startswith("linux") or os.environ.get(TRIM_ENV, "1") == "0":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _malloc_trim()


def trim_heap() -> bool:
    """Give the heap's free pages back to the OS (glibc's malloc_trim(0)); False where
    there is no such call.

    Why: a tiny session's cache is many small tensors (8 KiB each for 64 tokens of the
    tiny pair), below glibc's mmap threshold, so they live in the malloc arenas of the
    model threads. Freed, they stay resident: glibc returns only the top of an arena on
    its own, and the caches of sessions opened one after another are interleaved with
    what is still live. malloc_trim(0) releases every free page of every arena
    (madvise). Measured (scripts/session_footprint.py, 1,000 abandoned sessions of 68
    tokens): after the TTL a worker's RSS stayed +42 to +62 MiB above its start without
    it (the peak: reused by later sessions, not grown), +1.8 to +2.5 MiB with it. Runs
    after a sweep that dropped something, off the event loop; it takes each arena's lock
    in turn (~9 ms to hand back 160 MiB here)."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


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
        # Weak values: a session's lock lives while a call holds or waits on it, and not a
        # moment longer. With a plain dict (popped only by `release`) every abandoned
        # session (no Release: a client or coordinator gone) left its id and lock here for
        # the life of the process, however long ago the TTL dropped its cache. Two calls on
        # one session at once still share one lock: the first holds it while the second
        # looks it up.
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
        self._locks_guard = threading.Lock()

    def _session_lock(self, session_id: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(session_id)
            if lock is None:
                lock = self._locks[session_id] = threading.Lock()
            return lock

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

        def drop():  # its lock goes by itself once no call holds it (weak values)
            sessions.release(session_id)

        self.submit(session_id, drop)
