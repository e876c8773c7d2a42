"""The asyncio load generator: one AsyncClient (own channel) per simulated client,
requests drawn in order from the interleaved prompt mix, one record per request.

TTFT and TPOT are measured by the client when streaming (first chunk carrying tokens;
(latency - TTFT) / (tokens - 1)); a unary call has no first chunk, so they come from
the server's stats (`time_to_first_token_s`, `wall_s`) and are labelled so.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from contextlib import aclosing
from dataclasses import asdict, dataclass
from typing import Sequence

from loadtest.scenarios import LoadPlan, Prompt, Scenario, interleave
from specdec.client import AsyncClient, SpecdecError

TIMEOUT = "TIMEOUT"  # cancelled by the runner at the end of the drain
SAFETY_S = 10.0  # the whole level is cut this long after the drain, whatever happens


@dataclass
class RequestRecord:
    client: int
    kind: str  # the prompt's kind
    started_s: float  # since the level started
    in_flight: int  # requests in flight when this one started (itself included)
    latency_s: float  # request sent -> last response received
    code: str  # "OK", a gRPC status name, or TIMEOUT
    message: str = ""
    tokens: int = 0
    ttft_s: float | None = None
    tpot_s: float | None = None
    timing: str = "client"  # where TTFT/TPOT come from: client (streamed) or server (unary)
    stats: dict | None = None  # the server's GenerationStats of the request

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunResult:
    plan: LoadPlan
    wall_s: float  # the level's first request sent -> its last request ended
    records: list[RequestRecord]
    overruns: dict | None = None  # a --stack run under a cost profile: loadtest.budgets.delta


class _Gauge:
    def __init__(self):
        self.value = 0


async def run_plan(address: str, plan: LoadPlan, prompts: Sequence[Prompt]) -> RunResult:
    """Run one load level against the coordinator at `address` (checked by the caller)."""
    order = interleave(prompts)
    clients = [AsyncClient(address, retries=0) for _ in range(plan.clients)]
    try:
        for i in range(plan.warmup):  # not recorded: first-call costs (channels, caches)
            await _request(clients[0], 0, order[i % len(order)], plan, 0.0, time.monotonic() + plan.drain_s + 60, _Gauge())
        return await asyncio.wait_for(_level(clients, plan, order), plan.duration_s + plan.drain_s + SAFETY_S)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def _level(clients: list[AsyncClient], plan: LoadPlan, order: list[Prompt]) -> RunResult:
    began = time.monotonic()
    stop_at, hard_stop = began + plan.duration_s, began + plan.duration_s + plan.drain_s
    tickets = itertools.count()
    records: list[RequestRecord] = []
    gauge = _Gauge()

    def ticket() -> int | None:
        n = next(tickets)
        return n if n < plan.requests and time.monotonic() < stop_at else None

    def request(c: int, n: int):
        return _request(clients[c], c, order[n % len(order)], plan, began, hard_stop, gauge)

    async def closed_loop(c: int) -> None:
        await asyncio.sleep(plan.start_offset(c))
        while (n := ticket()) is not None:
            records.append(await request(c, n))

    if plan.scenario is Scenario.BURST:
        while wave := [request(c, n) for c in range(plan.clients) if (n := ticket()) is not None]:
            records.extend(await asyncio.gather(*wave))
    else:
        await asyncio.gather(*(closed_loop(c) for c in range(plan.clients)))
    ended = max((r.started_s + r.latency_s for r in records), default=0.0)
    return RunResult(plan, ended, sorted(records, key=lambda r: r.started_s))


async def _request(
    client: AsyncClient, c: int, prompt: Prompt, plan: LoadPlan, began: float, hard_stop: float, gauge: _Gauge
) -> RequestRecord:
    gauge.value += 1
    sent = time.monotonic()
    record = RequestRecord(c, prompt.kind, sent - began, gauge.value, 0.0, "OK")
    try:
        call = _stream(client, prompt, plan, record, sent) if plan.stream else _unary(client, prompt, plan, record)
        await asyncio.wait_for(call, max(0.0, hard_stop - sent))
    except SpecdecError as exc:
        record.code, record.message = exc.code, exc.details[:300]
    except asyncio.TimeoutError:
        record.code, record.message = TIMEOUT, "still running at the end of the drain: cancelled by the load runner"
    except Exception as exc:  # a client-side failure is a result too, not a crash of the run
        record.code, record.message = "CLIENT_ERROR", f"{type(exc).__name__}: {exc}"[:300]
    finally:
        gauge.value -= 1
        record.latency_s = time.monotonic() - sent
    return record


async def _stream(client: AsyncClient, prompt: Prompt, plan: LoadPlan, record: RequestRecord, sent: float) -> None:
    async with aclosing(client.generate_stream(prompt.text, **plan.params)) as chunks:
        async for chunk in chunks:
            if chunk.token_ids and record.ttft_s is None:
                record.ttft_s = time.monotonic() - sent
            record.tokens += len(chunk.token_ids)
            if chunk.stats is not None:
                record.stats = chunk.stats.as_dict()
    if record.ttft_s is not None and record.tokens > 1:
        record.tpot_s = (time.monotonic() - sent - record.ttft_s) / (record.tokens - 1)


async def _unary(client: AsyncClient, prompt: Prompt, plan: LoadPlan, record: RequestRecord) -> None:
    result = await client.complete(prompt.text, **plan.params)
    stats = result.stats
    record.timing, record.tokens, record.stats = "server", len(result.token_ids), stats.as_dict()
    if record.tokens:
        record.ttft_s = stats.time_to_first_token_s
    if record.tokens > 1:
        record.tpot_s = (stats.wall_s - stats.time_to_first_token_s) / (record.tokens - 1)
