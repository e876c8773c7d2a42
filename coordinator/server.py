"""Start the coordinator: load the tokenizer, ask the workers what they serve, serve
Coordinator until SIGTERM. No model weights are loaded here."""

from __future__ import annotations

import asyncio
import logging

import grpc

from coordinator.admission import Overloaded
from coordinator.config import CoordinatorConfig
from coordinator.discovery import Discovery
from coordinator.metrics import RequestMetrics
from coordinator.remote import Workers
from coordinator.requests import ModelLimits, mode_names, policy_names
from coordinator.servicer import CoordinatorServicer
from specdec.backend.endpoints import EndpointUnavailable
from specdec.models.presets import Preset, set_threads
from specdec.pb.v1 import coordinator_pb2, coordinator_pb2_grpc
from specdec.rpc import serving
from specdec.rpc.security import ServerSecurity
from specdec.rpc.serving import Running
from specdec.rpc.telemetry import ServiceTelemetry
from specdec.telemetry import tracing
from specdec.telemetry.metrics import CoordinatorMetrics

log = logging.getLogger(__name__)

SERVICE_NAME = coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name
ERRORS = {
    ValueError: grpc.StatusCode.INVALID_ARGUMENT,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    EndpointUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def load_tokenizer(preset: str, path: str | None = None):
    """The target's tokenizer: from `path` (a folder or .gguf) when given, else the
    preset's (tiny: built in memory; qwen-coder: the cache)."""
    if path:
        from specdec.models.loading import load_tokenizer as load

        return load(path)
    if Preset(preset) is Preset.TINY:
        from specdec.models.tiny import tiny_tokenizer

        return tiny_tokenizer()
    from specdec.models.loading import load_tokenizer as load
    from specdec.models.presets import qwen_coder_paths

    return load(qwen_coder_paths()["target"])


def share_compute(draft, target) -> bool:
    """Whether the draft and target workers (their WorkerInfo) compute on the same device:
    one host and the same device (or both its CPU), and no cost profile on both (a profile
    declares each model its own device)."""
    if draft is None or not draft.host or draft.host != target.host:
        return False
    if draft.cost_profile and target.cost_profile:
        return False
    both_cpu = draft.device.startswith("cpu") and target.device.startswith("cpu")
    return both_cpu or draft.device == target.device


async def build_servicer(
    config: CoordinatorConfig, workers: Workers, metrics: RequestMetrics | None = None
) -> CoordinatorServicer:
    tokenizer = load_tokenizer(config.preset, config.tokenizer)
    target = await workers.target_info(config.startup_timeout_s)
    draft = await workers.draft_info(config.startup_timeout_s)
    if draft is not None and draft.vocab_size != target.vocab_size:
        raise ValueError(
            f"draft and target vocabularies differ ({draft.vocab_size} vs {target.vocab_size}): "
            "pick a draft trained with the target's tokenizer"
        )
    workers.speed.max_batch = target.max_batch or None  # what policy auto's cost model assumes of a batch
    workers.speed.shared_device = share_compute(draft, target)  # ... and of PEARL's overlap
    limits = ModelLimits(
        context_length=target.context_length,
        vocab_size=target.vocab_size,
        eos_token_ids=tuple(target.eos_token_ids),
        has_draft=bool(config.draft),
        has_acceptance_head=bool(draft and draft.has_acceptance_head),
    )
    info = coordinator_pb2.CoordinatorInfo(
        preset=config.preset,
        target_model=target.model_name,
        draft_model=draft.model_name if draft is not None else "",
        modes=mode_names(limits),
        policies=policy_names(limits),
        context_length=limits.context_length,
        vocab_size=limits.vocab_size,
        eos_token_ids=limits.eos_token_ids,
        draft_addresses=config.draft,
        target_addresses=config.target,
        max_concurrent_requests=config.max_concurrent_requests,
    )
    return CoordinatorServicer(tokenizer, workers, limits, info, metrics, config.retry_after)


async def start(config: CoordinatorConfig, telemetry: ServiceTelemetry | None = None) -> Running:
    """Find the workers, ask them what they serve, start serving Coordinator. Every
    launcher calls this; a `telemetry` passed in stays the launcher's to close."""
    set_threads(config.threads)
    owned = telemetry is None
    if owned:
        telemetry = ServiceTelemetry.start(tracing.COORDINATOR, config.telemetry, config.host)
    workers = Workers(
        config.draft, config.target, config.target_retry_s, telemetry.client_interceptors(), tls=config.tls.as_client()
    )
    discovery = Discovery.for_config(config, workers)  # dns / kubernetes: keeps `workers` current
    closers = [telemetry.close] if owned else []
    closers += [workers.close, discovery.stop]  # run in reverse: discovery first, telemetry last
    try:
        await discovery.start(config.startup_timeout_s)
        metrics = RequestMetrics(CoordinatorMetrics(telemetry.registry), ERRORS)
        servicer = await build_servicer(config, workers, metrics)
        registration = (
            SERVICE_NAME, lambda server: coordinator_pb2_grpc.add_CoordinatorServicer_to_server(servicer, server)
        )
        security = ServerSecurity(tls=config.tls, auth_token=config.auth_token)
        running = await serving.start(
            config.address, [registration], ERRORS, telemetry.server_interceptors(), security, servicer=servicer
        )
    except BaseException:
        for close in reversed(closers):
            done = close()
            if asyncio.iscoroutine(done):
                await done
        raise
    running.closers.extend(closers)
    return running


def run(config: CoordinatorConfig) -> None:
    """Serve until SIGTERM/SIGINT (`specdec serve coordinator`)."""
    asyncio.run(serving.serve_until_signal(start(config), config.grace_s))
