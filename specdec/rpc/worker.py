"""What the draft and target workers share: their configuration and how they serve.

Each worker package keeps only what is its own (its servicer, its model role, its
extra flags); the common fields, checks and the serve loop live here once.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import grpc

from specdec.backend.sessions import sweep_interval, sweep_sessions
from specdec.rpc import serving
from specdec.rpc.security import ServerSecurity, ServerTLS
from specdec.rpc.telemetry import ServiceTelemetry, worker_interceptors
from specdec.runtime.compiled import parse_runtime
from specdec.runtime.session import SessionStateLost
from specdec.telemetry.config import TelemetryConfig

# How core exceptions reach a worker's callers: a lost session is re-prefilled by the
# coordinator; a bad value is the caller's to fix.
ERRORS = {SessionStateLost: grpc.StatusCode.FAILED_PRECONDITION, ValueError: grpc.StatusCode.INVALID_ARGUMENT}


@dataclass(frozen=True)
class WorkerConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (each worker overrides the default)
    preset: str = "qwen-coder"  # tiny | qwen-coder
    model: str | None = None  # a Hugging Face folder or .gguf to serve instead of the preset's model
    device: str = "cpu"  # cpu | cuda | cuda:N (specdec/models/placement.py)
    device_map: str | None = None  # transformers device_map: auto | balanced | ... (layers over GPUs)
    tp_plan: str | None = None  # transformers tp_plan: auto (torchrun; see placement.py)
    seed: int = 0  # builds the tiny models; unused by real weights
    dtype: str = "float32"
    runtime: str = "eager"  # eager | compiled: each decoder layer under torch.compile (specdec/runtime/compiled.py)
    threads: int | None = None  # torch.set_num_threads; None = torch's default
    cost_profile: str | None = None  # e.g. gpu-like: hold each forward to a device's latency
    max_sessions: int = 256  # KV caches held at once (LRU beyond)
    session_ttl_s: float = 600.0  # idle sessions are dropped after this
    max_batch: int = 1  # >1: merge concurrent sessions' forwards into one batched forward
    batch_wait_ms: float = 2.0  # how long a forward waits for others while calls are in flight
    chunk_tokens: int = 0  # tokens per merged forward, a long prompt's prefill in chunks (0: the device's flat budget or 256)
    grace_s: float = 5.0  # drain time on SIGTERM
    telemetry: TelemetryConfig = TelemetryConfig()  # OTLP endpoint, /metrics port
    tls: ServerTLS = ServerTLS()  # --tls-cert/--tls-key (TLS), --tls-ca (clients need certificates)

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        parse_runtime(self.runtime)  # ValueError naming the choices
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {self.max_sessions}")
        if not 1 <= self.max_batch <= 256:
            raise ValueError(f"max_batch must be in 1..256, got {self.max_batch}")
        if self.chunk_tokens != 0 and self.chunk_tokens < 2:
            raise ValueError(f"chunk_tokens must be 0 (the default) or >= 2, got {self.chunk_tokens}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms}")
        if self.session_ttl_s <= 0:
            raise ValueError(f"session_ttl must be > 0 seconds, got {self.session_ttl_s}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


async def start_worker(
    config: WorkerConfig, role: str, service_name: str, register, servicer, trace_name: str,
    telemetry: ServiceTelemetry | None = None,
) -> serving.Running:
    """Start one worker's server: telemetry (its own unless the launcher passes one, which
    the launcher then closes), session-binding security, health and reflection, and the
    sweep that drops sessions idle past the TTL (specdec.backend.sessions.sweep_sessions)."""
    owned = telemetry is None
    if owned:
        telemetry = ServiceTelemetry.start(trace_name, config.telemetry, config.host)
    interceptors = worker_interceptors(telemetry, role, servicer.endpoint.sessions)
    security = ServerSecurity(tls=config.tls, bind_sessions=True)  # sessions belong to their creator
    try:
        running = await serving.start(
            config.address, [(service_name, lambda server: register(servicer, server))], ERRORS,
            interceptors=interceptors, security=security, servicer=servicer,
        )
    except BaseException:
        if owned:
            telemetry.close()
        raise
    if owned:
        running.closers.append(telemetry.close)
    # Without a sweep, expiry ran only inside the next call: sessions abandoned without a
    # Release (client or coordinator gone) kept their KV caches while the worker was idle.
    sessions = servicer.endpoint.sessions
    sweeper = asyncio.create_task(sweep_sessions([sessions], sweep_interval(sessions.ttl_s)), name="session-sweep")

    async def stop_sweeping() -> None:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper

    running.closers.append(stop_sweeping)
    return running
