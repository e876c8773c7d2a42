"""The three services as grpc.aio servers in THIS process: one event loop on a
background thread, 127.0.0.1 free ports. For tests that need every span or metric of
a request in one place (an in-memory span exporter, the services' registries); the
real deployment is specdec/launch/stack.py (one process per service).

    with InProcessStack() as stack:
        Client(stack.address).complete("def add(a, b):")
        stack.telemetry["coordinator"].registry

Tracing is on when an OpenTelemetry SDK TracerProvider is installed before start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading

from coordinator import server as coordinator_server
from coordinator.config import CoordinatorConfig
from coordinator.remote import Workers
from draft_worker import server as draft_server
from draft_worker.config import DraftWorkerConfig
from specdec.rpc.telemetry import ServiceTelemetry
from specdec.telemetry.metrics import serve_metrics
from specdec.telemetry.tracing import tracing_enabled
from target_worker import server as target_server
from target_worker.config import TargetWorkerConfig

HOST = "127.0.0.1"
ROLES = ("draft", "target", "coordinator")


class InProcessStack:
    def __init__(
        self, preset: str = "tiny", seed: int = 0, metrics_http: bool = False, startup_timeout_s: float = 120,
        max_batch: int = 1, cost_profile: str | None = None, coordinator: dict | None = None,
    ):
        self.preset, self.seed = preset, seed
        self.max_batch = max_batch  # the workers' --max-batch
        self.cost_profile = cost_profile  # the workers' --cost-profile (e.g. gpu-like: requests that take a while)
        self.coordinator = dict(coordinator or {})  # CoordinatorConfig fields to override (max_concurrent_requests=2)
        self.metrics_http = metrics_http  # also serve each registry on a free HTTP port
        self.startup_timeout_s = startup_timeout_s
        self.ports: dict[str, int] = {}
        self.metrics_ports: dict[str, int] = {}
        self.telemetry: dict[str, ServiceTelemetry] = {}
        self.servicers: dict[str, object] = {}  # role -> its servicer (tests read its endpoint's state)
        self._running = []
        self._workers: Workers | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="specdec-inprocess", daemon=True)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.ports['coordinator']}"

    def start(self) -> "InProcessStack":
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(self.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    async def _start(self) -> None:
        tracing = tracing_enabled()
        self.telemetry = {role: ServiceTelemetry(tracing=tracing) for role in ROLES}
        worker = dict(port=0, host=HOST, preset=self.preset, seed=self.seed, max_batch=self.max_batch,
                      cost_profile=self.cost_profile)
        await self._serve("draft", draft_server.start(DraftWorkerConfig(**worker), self.telemetry["draft"]))
        await self._serve("target", target_server.start(TargetWorkerConfig(**worker), self.telemetry["target"]))
        config = CoordinatorConfig(
            target=(f"{HOST}:{self.ports['target']}",), draft=(f"{HOST}:{self.ports['draft']}",), host=HOST, port=0,
            preset=self.preset,
        )
        config = dataclasses.replace(config, **self.coordinator)
        await self._serve("coordinator", coordinator_server.start(config, self.telemetry["coordinator"]))

    async def _serve(self, role: str, starting) -> None:
        running = await starting
        self._running.append(running)
        self.ports[role] = running.port
        self.servicers[role] = running.servicer
        if role == "coordinator":
            self._workers = running.servicer.workers
        if self.metrics_http:
            from specdec.launch.stack import free_port

            self.metrics_ports[role] = free_port()
            self.telemetry[role].http = serve_metrics(self.telemetry[role].registry, self.metrics_ports[role], HOST)

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        for telemetry in self.telemetry.values():
            telemetry.close()

    @property
    def workers(self) -> "Workers":
        """The coordinator's worker pool (its replicas and measured speed)."""
        assert self._workers is not None, "the stack is not started"
        return self._workers

    async def _stop(self) -> None:
        for running in reversed(self._running):  # the coordinator first
            await running.stop(0)

    def __enter__(self) -> "InProcessStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
