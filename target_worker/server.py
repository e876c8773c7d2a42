"""Start a target worker: load only the target model, serve TargetWorker until SIGTERM."""

from __future__ import annotations

import asyncio

import grpc

from specdec.cost import CostProfile
from specdec.endpoints import LocalTarget
from specdec.models import load_preset
from specdec.models.presets import set_threads
from specdec.pb import serving
from specdec.pb.convert import worker_info_to_pb
from specdec.pb.v1 import target_worker_pb2, target_worker_pb2_grpc
from specdec.session import SessionStateLost
from target_worker.config import TargetWorkerConfig
from target_worker.servicer import TargetWorkerServicer

SERVICE_NAME = target_worker_pb2.DESCRIPTOR.services_by_name["TargetWorker"].full_name
ERRORS = {SessionStateLost: grpc.StatusCode.FAILED_PRECONDITION, ValueError: grpc.StatusCode.INVALID_ARGUMENT}


def build_servicer(config: TargetWorkerConfig) -> TargetWorkerServicer:
    set_threads(config.threads)
    pair = load_preset(config.preset, seed=config.seed, dtype=config.dtype, roles=("target",))
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
    await serving.serve(config.address, [registration], ERRORS, config.grace_s)


def run(config: TargetWorkerConfig) -> None:
    asyncio.run(serve(config))
