"""Start a target worker: load only the target model, serve TargetWorker until SIGTERM."""

from __future__ import annotations

import asyncio

import grpc

from specdec.cost import CostProfile
from specdec.endpoints import LocalTarget
from specdec.models.placement import Placement, load_worker_model
from specdec.models.presets import set_threads
from specdec.pb import serving
from specdec.pb.security import ServerSecurity
from specdec.pb.convert import worker_info_to_pb
from specdec.pb.telemetry import ServiceTelemetry, worker_interceptors
from specdec.pb.v1 import target_worker_pb2, target_worker_pb2_grpc
from specdec.session import SessionStateLost
from specdec.telemetry import tracing
from target_worker.config import TargetWorkerConfig
from target_worker.servicer import TargetWorkerServicer

SERVICE_NAME = target_worker_pb2.DESCRIPTOR.services_by_name["TargetWorker"].full_name
ERRORS = {SessionStateLost: grpc.StatusCode.FAILED_PRECONDITION, ValueError: grpc.StatusCode.INVALID_ARGUMENT}


def build_servicer(config: TargetWorkerConfig) -> TargetWorkerServicer:
    set_threads(config.threads)
    placement = Placement(config.device, config.device_map, config.tp_plan)
    pair = load_worker_model("target", config.preset, config.model, config.seed, config.dtype, placement)
    budget = CostProfile.load(config.cost_profile).budget("target", config.preset) if config.cost_profile else None
    endpoint = LocalTarget(
        pair.target, budget, max_sessions=config.max_sessions, ttl_s=config.session_ttl_s,
        max_batch=config.max_batch, batch_wait_s=config.batch_wait_ms / 1000.0,
    )

    def describe():
        return worker_info_to_pb(
            "target", pair.target, pair.tokenizer, config.preset,
            sessions=len(endpoint.sessions),
            evictions=endpoint.sessions.evictions,
            max_sessions=config.max_sessions,
            cost_profile=config.cost_profile or "",
        )

    return TargetWorkerServicer(endpoint, describe)


async def serve(config: TargetWorkerConfig) -> None:
    servicer = build_servicer(config)
    registration = (SERVICE_NAME, lambda server: target_worker_pb2_grpc.add_TargetWorkerServicer_to_server(servicer, server))
    telemetry = ServiceTelemetry.start(tracing.TARGET_WORKER, config.telemetry, config.host)
    interceptors = worker_interceptors(telemetry, "target", servicer.endpoint.sessions)
    try:
        security = ServerSecurity(tls=config.tls, bind_sessions=True)  # sessions belong to their creator
        await serving.serve(
            config.address, [registration], ERRORS, config.grace_s, interceptors=interceptors, security=security
        )
    finally:
        telemetry.close()


def run(config: TargetWorkerConfig) -> None:
    asyncio.run(serve(config))
