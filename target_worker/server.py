"""Start a target worker: load only the target model, serve TargetWorker until SIGTERM."""

from __future__ import annotations

import asyncio
import socket

from specdec.backend.local import LocalTarget
from specdec.models.placement import Placement, load_worker_model
from specdec.models.presets import set_threads
from specdec.pb.v1 import target_worker_pb2, target_worker_pb2_grpc
from specdec.rpc.convert import worker_info_to_pb
from specdec.rpc.serving import Running, serve_until_signal
from specdec.rpc.telemetry import ServiceTelemetry
from specdec.rpc.worker import start_worker
from specdec.runtime.compiled import apply_runtime
from specdec.runtime.cost import CostProfile
from specdec.telemetry import tracing
from specdec.grammar import compiler_for
from target_worker.config import TargetWorkerConfig
from target_worker.servicer import TargetWorkerServicer

SERVICE_NAME = target_worker_pb2.DESCRIPTOR.services_by_name["TargetWorker"].full_name


def build_servicer(config: TargetWorkerConfig) -> TargetWorkerServicer:
    set_threads(config.threads)
    placement = Placement(config.device, config.device_map, config.tp_plan)
    pair = load_worker_model("target", config.preset, config.model, config.seed, config.dtype, placement)
    apply_runtime(pair.target, config.runtime)
    budget = CostProfile.load(config.cost_profile).budget("target", config.preset) if config.cost_profile else None
    endpoint = LocalTarget(
        pair.target, budget, max_sessions=config.max_sessions, ttl_s=config.session_ttl_s,
        max_batch=config.max_batch, batch_wait_s=config.batch_wait_ms / 1000.0, chunk_tokens=config.chunk_tokens or None,
        grammar=compiler_for(pair.target, pair.tokenizer),
    )

    def describe():
        return worker_info_to_pb(
            "target", pair.target, pair.tokenizer, config.preset,
            sessions=len(endpoint.sessions),
            evictions=endpoint.sessions.evictions,
            max_sessions=config.max_sessions,
            cost_profile=config.cost_profile or "",
            max_batch=config.max_batch,
            device=config.device_map or config.device,
            host=socket.gethostname(),
            budgeted_forwards=budget.forwards if budget is not None else 0,
            overrun_forwards=budget.overruns if budget is not None else 0,
        )

    return TargetWorkerServicer(endpoint, describe)


async def start(config: TargetWorkerConfig, telemetry: ServiceTelemetry | None = None) -> Running:
    """Load the target model and start serving it; every launcher (`specdec serve`, the
    local, in-process and Ray stacks) calls this."""
    servicer = build_servicer(config)
    register = target_worker_pb2_grpc.add_TargetWorkerServicer_to_server
    return await start_worker(config, "target", SERVICE_NAME, register, servicer, tracing.TARGET_WORKER, telemetry)


def run(config: TargetWorkerConfig) -> None:
    """Serve until SIGTERM/SIGINT (`specdec serve target`)."""
    asyncio.run(serve_until_signal(start(config), config.grace_s))
