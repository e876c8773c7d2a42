"""Sessions abandoned without Release (a client gone mid-stream, a coordinator that died)
leave nothing behind on the workers once the TTL has passed (issue 16, item 4): no
session, no per-session lock, no stream task, no live cache, and the process's RSS back
within a bound of where it started, far below what the abandoned caches weigh.

The workers run in this process (real gRPC on 127.0.0.1, TTL 1 s; the draft with one model
thread, the target with --max-batch 4: both ways calls reach a model) so their bookkeeping
can be read; no call reaches them after the sessions are abandoned, so only
the workers' own TTL sweep can drop them. scripts/session_footprint.py measures the same
with the workers as processes and 1,000 sessions (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from draft_worker import server as draft_server
from draft_worker.config import DraftWorkerConfig
from specdec.backend.sessions import trim_heap
from specdec.models.tiny import tiny_config, tiny_tokenizer
from specdec.rpc.telemetry import ServiceTelemetry
from specdec.runtime.session import ModelSession
from target_worker import server as target_server
from target_worker.config import TargetWorkerConfig
from tests.helpers.abandon import DRAFT_TOKENS, MIB, Abandoner, kv_bytes_per_token, memory

SESSIONS = 200
WARMUP = 50  # opened and swept before the baseline: first-use allocations are not a leak
PROMPT_TOKENS = 256  # heavier caches than the script's 64 tokens: a leak stands far above the noise
TTL_S = 1.0
SETTLE_S = 0.6  # after the sweep: two more sweep intervals (TTL / 4), the heap trimmed
# Both workers' caches of SESSIONS sessions: 200 x 260 tokens x 512 B x 2 workers = 50.8 MiB.
LEAK_BYTES = SESSIONS * (PROMPT_TOKENS + DRAFT_TOKENS) * kv_bytes_per_token(tiny_config(len(tiny_tokenizer()))) * 2
# What may stay after the sweep and the trim (both workers and the client are this process):
# Python's object pools, grown tables, gRPC's buffers; measured -1.0 to +5.1 MiB over 8 runs
# (+1.8 to +3.3 MiB per worker after 1,000 sessions, scripts/session_footprint.py).
# 10 MiB: a fifth of what the caches weigh. Measured failing: without the sweep (the
# warm-up is never swept), without the trim (+13.9 MiB), caches kept alive (+57 MiB).
BOUND_BYTES = 10 * MIB


def _live_sessions(models) -> int:
    """ModelSessions of these models still alive, without collecting first: a cache that
    only a reference cycle keeps would stay resident until the next full collection."""
    return sum(1 for o in gc.get_objects() if type(o) is ModelSession and any(o.model is m for m in models))


def test_abandoned_sessions_leave_no_state_and_memory_within_a_bound_after_the_ttl():
    config = dict(host="127.0.0.1", port=0, preset="tiny", seed=0, session_ttl_s=TTL_S, max_sessions=1024)

    async def scenario() -> dict:
        # untraced: spans of these calls would pile up in a test collector and count as RSS
        draft = await draft_server.start(DraftWorkerConfig(**config, max_batch=1), ServiceTelemetry(tracing=False))
        target = await target_server.start(TargetWorkerConfig(**config, max_batch=4), ServiceTelemetry(tracing=False))
        endpoints = [draft.servicer.endpoint, target.servicer.endpoint]
        workers = Abandoner(f"127.0.0.1:{draft.port}", f"127.0.0.1:{target.port}")
        try:
            vocab = (await workers.info())["target"].vocab_size
            await workers.abandon_many(WARMUP, PROMPT_TOKENS, vocab, tag="warm")
            waited, infos = await workers.wait_swept(10.0)
            assert [i.sessions for i in infos.values()] == [0, 0], "the warm-up was not swept"
            await asyncio.sleep(SETTLE_S)
            tasks = len(asyncio.all_tasks())
            base = memory()["VmRSS"]

            began = time.monotonic()
            await workers.abandon_many(SESSIONS, PROMPT_TOKENS, vocab, tag="gone")
            opened_s = time.monotonic() - began
            peak = memory()["VmRSS"]
            waited, infos = await workers.wait_swept(TTL_S + 10.0)
            await asyncio.sleep(SETTLE_S)
            return dict(
                opened_s=opened_s, swept_s=waited, grown_open=peak - base, grown=memory()["VmRSS"] - base,
                sessions={role: i.sessions for role, i in infos.items()},
                evictions={role: i.evictions for role, i in infos.items()},
                held=[len(e.sessions) for e in endpoints],
                locks=[len(e._thread._locks) for e in endpoints],
                pending=[(len(e._thread.runner._pending), e._thread.runner._active) for e in endpoints
                         if e._thread.runner is not None],
                live=_live_sessions([e.sessions.model for e in endpoints]),
                tasks=len(asyncio.all_tasks()) - tasks,
            )
        finally:
            await workers.close()
            await target.stop(0)
            await draft.stop(0)

    r = asyncio.run(scenario())
    print(f"\nopened {SESSIONS} in {r['opened_s']:.1f}s, swept {r['swept_s']:.1f}s later; RSS "
          f"{r['grown_open'] / MIB:+.1f} MiB open, {r['grown'] / MIB:+.1f} MiB after the TTL "
          f"(bound {BOUND_BYTES / MIB:.0f} MiB, the caches weigh {LEAK_BYTES / MIB:.1f} MiB)")
    assert r["sessions"] == {"draft": 0, "target": 0}, "the TTL sweep did not drop the abandoned sessions"
    assert r["evictions"]["draft"] >= WARMUP + SESSIONS and r["evictions"]["target"] >= WARMUP + SESSIONS
    assert r["held"] == [0, 0]
    assert r["locks"] == [0, 0], "per-session locks outlived their sessions"
    assert r["pending"] == [(0, 0)], "the target's batching runner still holds calls"
    assert r["live"] == 0, f"{r['live']} sessions' caches are still alive after the TTL"
    assert r["tasks"] <= 0, f"{r['tasks']} more asyncio tasks than before (cancelled streams' rounds?)"
    if not trim_heap():
        pytest.skip("no malloc_trim here (not glibc): freed caches may stay resident, RSS not judged")
    assert r["grown"] < BOUND_BYTES, (
        f"RSS {r['grown'] / MIB:+.1f} MiB after the TTL: more than {BOUND_BYTES / MIB:.0f} MiB "
        f"(the abandoned caches weigh {LEAK_BYTES / MIB:.1f} MiB)")
