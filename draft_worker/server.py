"""Start a draft worker: load only the draft model, serve DraftWorker until SIGTERM."""

from __future__ import annotations

import asyncio
import socket

from draft_worker.config import DraftWorkerConfig
from draft_worker.servicer import DraftWorkerServicer
from specdec.backend.local import LocalDraft
from specdec.models.placement import Placement, load_worker_model
from specdec.models.presets import set_threads
from specdec.pb.v1 import draft_worker_pb2, draft_worker_pb2_grpc
from specdec.rpc.convert import worker_info_to_pb
from specdec.rpc.serving import Running, serve_until_signal
from specdec.rpc.telemetry import ServiceTelemetry
from specdec.rpc.worker import start_worker
from specdec.runtime.compiled import apply_runtime
from specdec.runtime.cost import CostProfile
from specdec.telemetry import tracing
from specdec.grammar import compiler_for

SERVICE_NAME = draft_worker_pb2.DESCRIPTOR.services_by_name["DraftWorker"].full_name


def build_servicer(config: DraftWorkerConfig) -> DraftWorkerServicer:
    set_threads(config.threads)
    placement = Placement(config.device, config.device_map, config.tp_plan)
    pair = load_worker_model("draft", config.preset, config.model, config.seed, config.dtype, placement)
    apply_runtime(pair.draft, config.runtime)
    budget = CostProfile.load(config.cost_profile).budget("draft", config.preset) if config.cost_profile else None
    head = None
    if config.acceptance_head:
        from specdec.specdecpp.head import load_head

        head = load_head(config.acceptance_head, pair.draft)
    endpoint = LocalDraft(
        pair.draft, budget, top_n=config.proposal_top_n, head=head, max_sessions=config.max_sessions,
        ttl_s=config.session_ttl_s, max_batch=config.max_batch, batch_wait_s=config.batch_wait_ms / 1000.0,
        chunk_tokens=config.chunk_tokens or None, grammar=compiler_for(pair.draft, pair.tokenizer),
    )

    def describe():
        return worker_info_to_pb(
            "draft", pair.draft, pair.tokenizer, config.preset,
            has_acceptance_head=endpoint.head is not None,
            sessions=len(endpoint.sessions),
            evictions=endpoint.sessions.evictions,
            max_sessions=config.max_sessions,
            proposal_top_n=config.proposal_top_n,
            cost_profile=config.cost_profile or "",
            max_batch=config.max_batch,
            device=config.device_map or config.device,
            host=socket.gethostname(),
            budgeted_forwards=budget.forwards if budget is not None else 0,
            overrun_forwards=budget.overruns if budget is not None else 0,
        )

    return DraftWorkerServicer(endpoint, describe)


async def start(config: DraftWorkerConfig, telemetry: ServiceTelemetry | None = None) -> Running:
    """Load the draft model and start serving it; every launcher (`specdec serve`, the
    local, in-process and Ray stacks) calls this."""
    servicer = build_servicer(config)
    register = draft_worker_pb2_grpc.add_DraftWorkerServicer_to_server
    return await start_worker(config, "draft", SERVICE_NAME, register, servicer, tracing.DRAFT_WORKER, telemetry)


def run(config: DraftWorkerConfig) -> None:
    """Serve until SIGTERM/SIGINT (`specdec serve draft`)."""
    asyncio.run(serve_until_signal(start(config), config.grace_s))
