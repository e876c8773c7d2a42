"""Sessions opened on a draft and a target worker and abandoned (no Release), as a
coordinator that died or a client that disconnected mid-stream leaves them; and what
a process weighs. Shared by tests/services/test_session_footprint.py and
scripts/session_footprint.py."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import grpc

from specdec.pb.v1 import (
    common_pb2,
    draft_worker_pb2,
    draft_worker_pb2_grpc,
    target_worker_pb2,
    target_worker_pb2_grpc,
)
from specdec.rpc.session_binding import SESSION_KEY, SessionKeys

MIB = 2**20
DRAFT_TOKENS = 4  # per draft call (the verify call checks them): a session caches prompt + these
GREEDY = common_pb2.SamplingParams(temperature=0.0, top_k=0, top_p=1.0)


def memory(pid: int | str = "self") -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (its peak) of a process, in bytes (Linux)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def kv_bytes_per_token(config, dtype_bytes: int = 4) -> int:
    """A session's KV cache per cached token: layers x 2 (K, V) x kv_heads x head_dim x bytes."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * dtype_bytes


class Abandoner:
    """Both workers' stubs on plain loopback channels; every call carries the session key
    a coordinator adds (specdec.rpc.session_binding)."""

    def __init__(self, draft_address: str, target_address: str):
        self.channels = [grpc.aio.insecure_channel(a) for a in (draft_address, target_address)]
        self.draft = draft_worker_pb2_grpc.DraftWorkerStub(self.channels[0])
        self.target = target_worker_pb2_grpc.TargetWorkerStub(self.channels[1])
        self.keys = SessionKeys()

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    async def info(self) -> dict[str, common_pb2.WorkerInfo]:
        request = common_pb2.GetInfoRequest()
        return {"draft": await self.draft.GetInfo(request, timeout=10),
                "target": await self.target.GetInfo(request, timeout=10)}

    async def abandon(self, session_id: str, prompt: list[int], via_stream: bool) -> None:
        """One session opened on both workers (a draft round, then its verification) and
        left without Release: over the unary rpcs, or over session streams then cancelled
        (no stop command, no half-close: the caller is simply gone)."""
        metadata = ((SESSION_KEY, self.keys.key(session_id)),)
        rule = common_pb2.StopRule(max_tokens=DRAFT_TOKENS, min_tokens=1)
        draft = draft_worker_pb2.DraftRequest(session_id=session_id, tokens=prompt, rule=rule, sampling=GREEDY)
        if not via_stream:
            drafted = [t.token_id async for t in self.draft.Draft(draft, metadata=metadata, timeout=60)]
            await self.target.Verify(target_worker_pb2.VerifyRequest(
                session_id=session_id, tokens=prompt, draft_tokens=drafted, sampling=GREEDY), metadata=metadata, timeout=60)
            return
        call = self.draft.DraftStream(metadata=metadata, timeout=60)
        await call.write(draft_worker_pb2.DraftCommand(session_id=session_id, round=1, draft=draft))
        drafted = []
        while not (item := await call.read()).end:
            drafted.append(item.token.token_id)
        call.cancel()
        stream = self.target.VerifyStream(metadata=metadata, timeout=60)
        await stream.write(target_worker_pb2.VerifyRequest(
            session_id=session_id, tokens=prompt, draft_tokens=drafted, sampling=GREEDY))
        await stream.read()
        stream.cancel()

    async def abandon_many(self, n: int, prompt_tokens: int, vocab: int, stream_share: float = 0.25,
                           concurrency: int = 8, tag: str = "gone") -> None:
        """`n` sessions, `concurrency` at a time; every round(1 / stream_share)-th over streams."""
        gate = asyncio.Semaphore(concurrency)
        rng = random.Random(tag)
        every = round(1 / stream_share) if stream_share > 0 else 0

        async def one(i: int) -> None:
            prompt = [rng.randrange(3, vocab) for _ in range(prompt_tokens)]  # ids 0-2: the tiny specials
            async with gate:
                await self.abandon(f"{tag}-{i:05d}-{rng.getrandbits(64):016x}", prompt, bool(every) and i % every == 0)

        await asyncio.gather(*(one(i) for i in range(n)))

    async def wait_swept(self, timeout_s: float) -> tuple[float, dict[str, common_pb2.WorkerInfo]]:
        """Poll GetInfo (which opens no session and runs no expiry) until both workers
        hold no session, or `timeout_s`; (seconds waited, the last infos)."""
        began = time.monotonic()
        while True:
            infos = await self.info()
            if all(i.sessions == 0 for i in infos.values()) or time.monotonic() - began > timeout_s:
                return time.monotonic() - began, infos
            await asyncio.sleep(0.05)
