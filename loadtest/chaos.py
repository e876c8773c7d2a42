"""The chaos scenario: streams of every kind against 2 draft and 2 target replicas while
one replica of each kind is killed and one of them restarted.

    python -m loadtest --stack tiny --scenario chaos --clients 32 --duration 60 \\
        --json bench-results/chaos-tiny.json --markdown bench-results/chaos-tiny.md --fail-on-lost

The cluster: draft workers draft-1, draft-2, target workers target-1, target-2 and a
coordinator given both of each (`--draft d1,d2 --target t1,t2`: static discovery), real
processes on 127.0.0.1 (specdec.launch.stack.Service).

The load: N clients in a closed loop (each sends its next request when the last one
ended); client i always sends the kind STREAMS[i % 6] (sequential, PEARL or GSD; greedy,
or sampled with a seed of its own per request), the prompts in turn, EOS ignored.

The faults, at fixed times after the first request: at `kill_at_s` SIGKILL to target-2
and draft-2 (by PID, as a crash: no drain, no Release); at `restart_at_s` the `restart`
one of them is started again on its port. The run is "settled" `settle_s` after that
process answers its health check SERVING (loadtest/chaos_report.py cuts the phases there).

Outcome of a request: completed (a last chunk with a finish reason), failed (a gRPC
status: which one is kept), or lost (no final answer and no error: the stream ended
without one, or it was still running when the drain ended).

Bounded: no request starts beyond `requests`, nor after `duration_s` unless the "after"
phase has not had `after_s` yet (a restarted worker slow to load); `drain_s` after the last
moment a request could start, whatever still runs is cut; the whole run (reference,
start-up, load) is cut at `timeout_s`. Every process started here is stopped by its PID at
the end, on error too.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import tempfile
import threading
import time
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import grpc

from loadtest.reference import target_alone
from loadtest.scenarios import Prompt
from specdec.client import AsyncClient, SpecdecError
from specdec.launch.stack import SECURITY_ENV, Service, StackError, free_ports
from specdec.pb.v1 import common_pb2, draft_worker_pb2_grpc, target_worker_pb2_grpc
from specdec.rpc.health import is_serving

COMPLETED, FAILED, LOST = "completed", "failed", "lost"
RESTARTABLE = ("target", "draft")
POLL_S = 0.1  # health-check period while a restarted worker loads
SESSIONS_POLL_S = 0.25  # then how often its sessions are counted


@dataclass(frozen=True)
class StreamKind:
    mode: str  # sequential | pearl | gsd
    sampled: bool  # temperature > 0 with a seed, else greedy

    @property
    def name(self) -> str:
        return f"{self.mode} {'sampled' if self.sampled else 'greedy'}"


# Client i sends STREAMS[i % 6]: every mode, greedy and sampled, at any client count >= 6.
STREAMS = tuple(StreamKind(mode, sampled) for sampled in (False, True) for mode in ("sequential", "pearl", "gsd"))


@dataclass(frozen=True)
class ChaosPlan:
    clients: int = 32
    requests: int = 4000  # requests in all, over every client (a bound, not a target)
    duration_s: float = 60.0  # no request starts after this (unless the after phase needs longer: after_s)
    kill_at_s: float | None = None  # SIGKILL to a target and a draft replica; None = duration / 4
    restart_at_s: float | None = None  # the `restart` one started again; None = duration / 2
    settle_s: float = 2.0  # after the restarted worker serves, until the "after" phase begins
    restart: str = "target"  # which of the two killed replicas comes back
    after_s: float = 5.0  # the "after" phase lasts at least this long, past duration_s if need be
    drain_s: float = 30.0  # once no request may start, in-flight ones get this long, then count as lost
    max_new_tokens: int = 32
    temperature: float = 0.8  # of the sampled streams
    seed: int = 0  # sampled request n gets seed * 1_000_003 + n
    warmup: int = 1  # unrecorded rounds of one request per stream kind before the clock starts
    params: dict = field(default_factory=dict)  # more GenerateRequest fields for every request (policy, ...)
    timeout_s: float = 600.0  # the whole run, start-up included

    def __post_init__(self):
        if self.clients < 1:
            raise ValueError(f"--clients must be >= 1, got {self.clients}")
        if self.requests < self.clients:
            raise ValueError(f"--requests must be >= --clients ({self.clients}) in chaos, got {self.requests}")
        if not 0 < self.duration_s <= 3600:
            raise ValueError(f"--duration must be in (0, 3600] seconds, got {self.duration_s}")
        if not 0 < self.kill_s < self.restart_s < self.duration_s:
            raise ValueError(f"need 0 < --kill-at ({self.kill_s:g}) < --restart-at ({self.restart_s:g}) "
                             f"< --duration ({self.duration_s:g}): each phase must have time for requests")
        if self.settle_s < 0 or self.after_s < 0 or self.drain_s < 0:
            raise ValueError("--settle, --after and --drain must be >= 0 seconds")
        if self.restart not in RESTARTABLE:
            raise ValueError(f"--restart must be one of {', '.join(RESTARTABLE)}, got {self.restart!r}")
        if self.max_new_tokens < 1 or self.temperature <= 0:
            raise ValueError("--max-new-tokens must be >= 1 and the sampled streams' --temperature > 0")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        if self.timeout_s <= 0:
            raise ValueError(f"--timeout must be > 0 seconds, got {self.timeout_s}")

    @property
    def kill_s(self) -> float:
        return self.duration_s / 4 if self.kill_at_s is None else self.kill_at_s

    @property
    def restart_s(self) -> float:
        return self.duration_s / 2 if self.restart_at_s is None else self.restart_at_s

    def request_params(self, kind: StreamKind, n: int) -> dict:
        if kind.sampled:
            sampling = dict(temperature=self.temperature, seed=self.seed * 1_000_003 + n)
        else:
            sampling = dict(temperature=0.0)
        return {**self.params, "mode": kind.mode, "max_new_tokens": self.max_new_tokens, "ignore_eos": True,
                **sampling}


@dataclass
class ChaosRecord:
    client: int
    kind: str  # StreamKind.name
    mode: str
    sampled: bool
    prompt: str
    seed: int | None
    started_s: float  # since the first request
    ended_s: float = 0.0
    outcome: str = LOST  # completed | failed | lost
    code: str = ""  # a failed request's gRPC status name
    message: str = ""
    token_ids: list[int] = field(default_factory=list)  # what was streamed, partial when not completed
    finish_reason: str | None = None
    reprefills: int = 0  # from the server's stats (completed requests)
    draft_fallback: bool = False

    @property
    def latency_s(self) -> float:
        return self.ended_s - self.started_s

    def as_dict(self) -> dict:
        return asdict(self) | {"latency_s": self.latency_s}


@dataclass
class Events:
    """When the faults happened, in seconds since the first request (None: not reached)."""

    kill_s: float | None = None
    restart_s: float | None = None
    serving_s: float | None = None  # the restarted worker answered SERVING
    settled_s: float | None = None  # serving_s + settle_s: the "after" phase begins
    rejoined_sessions: int = 0  # the most sessions the restarted worker held once settled
    error: str | None = None  # why the faults did not all happen (a restart that failed)
    killed: dict = field(default_factory=dict)  # role -> {"name", "address", "pid"}
    restarted: dict = field(default_factory=dict)  # {"name", "address", "pid"}


@dataclass
class ChaosResult:
    plan: ChaosPlan
    events: Events
    records: list[ChaosRecord]
    reference: dict[str, tuple[int, ...]]  # prompt -> the target alone's tokens
    wall_s: float  # first request sent -> last one ended
    addresses: dict  # coordinator, drafts, targets


class ChaosCluster:
    """draft-1, draft-2, target-1, target-2 and a coordinator over all four, on loopback.
    Kills and restarts go through the same lock as `stop`, so nothing is started after it."""

    def __init__(self, preset: str, log_dir: Path, worker_args: Sequence[str] = (), seed: int = 0,
                 dtype: str = "float32"):
        ports = free_ports(5)
        env = {k: "" for k in SECURITY_ENV}  # plaintext on loopback, whatever the caller's environment says
        common = ["--preset", preset, "--seed", str(seed), "--dtype", dtype, "--threads", "1", *worker_args]
        self.drafts = [Service(f"draft-{i + 1}", "draft_worker", ports[i], common, log_dir, env=env) for i in range(2)]
        self.targets = [Service(f"target-{i + 1}", "target_worker", ports[2 + i], common, log_dir, env=env)
                        for i in range(2)]
        self.coordinator = Service("coordinator", "coordinator", ports[4], [
            "--preset", preset, "--draft", ",".join(s.address for s in self.drafts),
            "--target", ",".join(s.address for s in self.targets),
        ], log_dir, env=env)
        self.victims = {"target": self.targets[1], "draft": self.drafts[1]}
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def services(self) -> tuple[Service, ...]:
        return (*self.drafts, *self.targets, self.coordinator)

    @property
    def address(self) -> str:
        return self.coordinator.address

    def addresses(self) -> dict:
        return {"coordinator": self.address, "drafts": [s.address for s in self.drafts],
                "targets": [s.address for s in self.targets]}

    def start(self, timeout_s: float) -> None:
        with self._lock:
            if self._stopped:
                raise StackError("the cluster was stopped")
            for service in self.services:  # the coordinator waits for its workers by itself
                service.start()
        deadline = time.monotonic() + timeout_s
        for service in self.services:
            service.wait_serving(max(0.1, deadline - time.monotonic()))

    def kill(self, role: str) -> dict:
        """SIGKILL to the `role` victim's PID (a crash: no drain, no Release); waits for it to die."""
        service = self.victims[role]
        with self._lock:
            pid = service.process.pid
            if service.alive:
                service.process.send_signal(signal.SIGKILL)
        service.process.wait(10.0)
        return {"name": service.name, "address": service.address, "pid": pid}

    def restart(self, role: str) -> dict:
        """Start the `role` victim again on its port (returns at once; see `serving`)."""
        service = self.victims[role]
        with self._lock:
            if self._stopped:
                raise StackError("the cluster was stopped")
            service.start()
            return {"name": service.name, "address": service.address, "pid": service.process.pid}

    def serving(self, role: str) -> bool:
        """Whether the `role` victim answers SERVING; StackError if its process died."""
        service = self.victims[role]
        if not service.alive:
            raise StackError(f"{service.name} exited with code {service.process.returncode}:\n{service.log_tail()}")
        return is_serving(service.address, timeout=0.5)

    def sessions(self, role: str) -> int:
        """Sessions the `role` victim holds now (its GetInfo); 0 when it does not answer."""
        service = self.victims[role]
        stub = draft_worker_pb2_grpc.DraftWorkerStub if role == "draft" else target_worker_pb2_grpc.TargetWorkerStub
        with grpc.insecure_channel(service.address) as channel:
            try:
                return stub(channel).GetInfo(common_pb2.GetInfoRequest(), timeout=1.0).sessions
            except grpc.RpcError:
                return 0

    def stop(self) -> list[str]:
        """The coordinator first (it drains its requests, which still need the workers), then
        the workers; each by its PID (SIGTERM, SIGKILL after 10 s). Returns those killed."""
        with self._lock:
            self._stopped = True
        killed = []
        for group in ((self.coordinator,), (*self.drafts, *self.targets)):
            for service in group:
                service.terminate()
            killed += [s.name for s in group if not s.stop()]
        return killed


def run(plan: ChaosPlan, prompts: Sequence[Prompt], preset: str, worker_args: Sequence[str] = (),
        startup_timeout_s: float = 120.0, log=print) -> ChaosResult:
    """The whole scenario: the reference, the cluster, the load with its faults, the stop.
    Raises TimeoutError past `plan.timeout_s` (the processes are stopped all the same)."""
    deadline = time.monotonic() + plan.timeout_s

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"the chaos run took longer than --timeout {plan.timeout_s:g}s")
        return remaining

    # Before the cluster starts, so the reference does not compete with it for the CPUs.
    log(f"the target alone on {len(prompts)} prompts x {plan.max_new_tokens} tokens (the greedy reference) ...")
    reference = target_alone(preset, [p.text for p in prompts], plan.max_new_tokens)
    left()
    with tempfile.TemporaryDirectory(prefix="specdec-chaos-") as log_dir:
        cluster = ChaosCluster(preset, Path(log_dir), worker_args)
        try:
            log("starting 2 draft + 2 target workers and a coordinator on 127.0.0.1 ...")
            cluster.start(min(startup_timeout_s, left()))
            log(f"chaos: {plan.clients} streams, <= {plan.requests} requests, <= {plan.duration_s:g}s; kill "
                f"{cluster.victims['target'].name} and {cluster.victims['draft'].name} at {plan.kill_s:g}s, "
                f"restart {cluster.victims[plan.restart].name} at {plan.restart_s:g}s ...")
            try:
                records, events, wall = asyncio.run(asyncio.wait_for(_load(cluster, plan, prompts), left()))
            except asyncio.TimeoutError:
                raise TimeoutError(f"the chaos run took longer than --timeout {plan.timeout_s:g}s") from None
            if any(r.outcome != COMPLETED for r in records):
                log(f"coordinator log (tail):\n{cluster.coordinator.log_tail(40)}")
            return ChaosResult(plan, events, records, reference, wall, cluster.addresses())
        finally:
            killed = cluster.stop()
            if killed:
                log(f"had to SIGKILL at the end (did not stop within 10 s of SIGTERM): {', '.join(killed)}")


async def _load(cluster: ChaosCluster, plan: ChaosPlan, prompts: Sequence[Prompt]):
    clients = [AsyncClient(cluster.address, retries=0) for _ in range(plan.clients)]  # no retries: see every error
    events = Events()
    faults = None
    try:
        await _warm_up(clients, plan, prompts)
        began = time.monotonic()
        faults = asyncio.create_task(_faults(cluster, plan, began, events))
        records = await _streams(clients, plan, prompts, began, _Window(plan, began, events, faults))
    finally:
        # A load that ended before the faults did (its request cap) leaves them unfinished:
        # the report says which events never happened.
        if faults is not None and not faults.done():
            faults.cancel()
        if faults is not None:
            await asyncio.gather(faults, return_exceptions=True)
            if not faults.cancelled() and faults.exception() is not None:
                events.error = f"{type(faults.exception()).__name__}: {faults.exception()}"[:2000]
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    wall = max((r.ended_s for r in records), default=0.0)
    return sorted(records, key=lambda r: r.started_s), events, wall


async def _warm_up(clients: list[AsyncClient], plan: ChaosPlan, prompts: Sequence[Prompt]) -> None:
    """`plan.warmup` rounds of one request per stream kind, at once (so they spread over the
    replicas), not recorded: the first calls' costs (channels, first forwards) stay out of
    the "before" phase. A failure here is a broken stack, not chaos: it ends the run."""
    kinds = STREAMS[: len(clients)]
    for _ in range(plan.warmup):  # seeds past `requests`: none of a recorded request's
        await asyncio.gather(*(
            clients[i].complete(prompts[i % len(prompts)].text, **plan.request_params(kind, plan.requests + i))
            for i, kind in enumerate(kinds)
        ))


async def _faults(cluster: ChaosCluster, plan: ChaosPlan, began: float, events: Events) -> None:
    def now() -> float:
        return time.monotonic() - began

    await asyncio.sleep(max(0.0, plan.kill_s - now()))
    events.kill_s = now()
    for role in ("target", "draft"):
        events.killed[role] = await asyncio.to_thread(cluster.kill, role)
    await asyncio.sleep(max(0.0, plan.restart_s - now()))
    events.restart_s = now()
    events.restarted = cluster.restart(plan.restart)
    while not await asyncio.to_thread(cluster.serving, plan.restart):
        await asyncio.sleep(POLL_S)
    events.serving_s = now()
    events.settled_s = events.serving_s + plan.settle_s
    # Until the load ends (this task is cancelled then): does the restarted replica get
    # sessions again, or does the coordinator keep routing around it?
    while True:
        held = await asyncio.to_thread(cluster.sessions, plan.restart)
        events.rejoined_sessions = max(events.rejoined_sessions, held)
        await asyncio.sleep(SESSIONS_POLL_S)


class _Window:
    """Whether a request may start now: until `duration_s`, and past it for as long as the
    "after" phase has not had `after_s` yet (a restarted worker slow to load on a busy
    machine); never once the faults failed. The whole run is still cut at `timeout_s`."""

    def __init__(self, plan: ChaosPlan, began: float, events: Events, faults: asyncio.Task):
        self.plan, self.began, self.events, self.faults = plan, began, events, faults

    def open(self) -> bool:
        t = time.monotonic() - self.began
        if t < self.plan.duration_s:
            return True
        settled = self.events.settled_s
        if settled is None:  # restarting: the after phase is still to come, unless the faults failed
            return not self.faults.done()
        return t < settled + self.plan.after_s


async def _streams(clients: list[AsyncClient], plan: ChaosPlan, prompts: Sequence[Prompt], began: float,
                   window: _Window) -> list[ChaosRecord]:
    tickets = itertools.count()
    records: list[ChaosRecord] = []
    cut = asyncio.Event()  # set drain_s after the window closed: what still runs is cut (lost)

    async def closed_loop(c: int) -> None:
        kind = STREAMS[c % len(STREAMS)]
        while window.open() and (n := next(tickets)) < plan.requests:
            prompt = prompts[n % len(prompts)].text
            records.append(await _request(clients[c], c, kind, prompt, plan.request_params(kind, n), began, cut))

    loops = asyncio.ensure_future(asyncio.gather(*(closed_loop(c) for c in range(plan.clients))))
    try:
        while not loops.done() and window.open():
            await asyncio.wait({loops}, timeout=POLL_S)
        try:
            await asyncio.wait_for(asyncio.shield(loops), plan.drain_s)
        except asyncio.TimeoutError:
            cut.set()
            await loops
    finally:
        loops.cancel()  # only when cancelled from outside (the overall timeout)
    return records


async def _request(client: AsyncClient, c: int, kind: StreamKind, prompt: str, params: dict, began: float,
                   cut: asyncio.Event) -> ChaosRecord:
    sent = time.monotonic()
    record = ChaosRecord(c, kind.name, kind.mode, kind.sampled, prompt, params.get("seed"), sent - began)
    stream = asyncio.ensure_future(_stream(client, prompt, params, record))
    cutting = asyncio.ensure_future(cut.wait())
    try:
        await asyncio.wait({stream, cutting}, return_when=asyncio.FIRST_COMPLETED)
        if not stream.done():
            stream.cancel()
            await asyncio.gather(stream, return_exceptions=True)
            record.outcome, record.message = LOST, "no final answer by the end of the drain: cut by the load runner"
        else:
            stream.result()
    except SpecdecError as exc:
        record.outcome, record.code, record.message = FAILED, exc.code, exc.details[:300]
    except Exception as exc:  # a client-side failure is a result too, not a crash of the run
        record.outcome, record.code, record.message = FAILED, "CLIENT_ERROR", f"{type(exc).__name__}: {exc}"[:300]
    finally:
        for task in (stream, cutting):
            task.cancel()
        record.ended_s = time.monotonic() - began
    return record


async def _stream(client: AsyncClient, prompt: str, params: dict, record: ChaosRecord) -> None:
    async with aclosing(client.generate_stream(prompt, **params)) as chunks:
        async for chunk in chunks:
            record.token_ids += chunk.token_ids
            if chunk.finish_reason is not None:
                record.finish_reason = chunk.finish_reason
            if chunk.stats is not None:
                record.reprefills, record.draft_fallback = chunk.stats.reprefills, chunk.stats.draft_fallback
    if record.finish_reason in ("length", "stop"):
        record.outcome = COMPLETED
    else:  # the server closed the stream with OK but without a last chunk, or cancelled it
        record.outcome = LOST
        record.message = f"the stream ended without a final answer (finish reason {record.finish_reason})"
