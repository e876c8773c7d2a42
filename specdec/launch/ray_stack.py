"""The three services as Ray actors on an existing Ray cluster (KubeRay, `ray start`),
with the same gRPC interfaces as everywhere else.

    with RayStack(RayStackConfig(address="auto", preset="tiny")) as stack:
        Client(stack.address).complete("def add(a, b):")

Each actor runs one service's grpc.aio server on an event loop in its own thread and
reports the address it listens on: the node's IP (or `host` when it is not a
wildcard) and the port it bound. The workers start first; the coordinator actor is
given their addresses (static discovery). GPUs are Ray resources: an actor asking for
`num_gpus` sees only those GPUs (CUDA_VISIBLE_DEVICES), so a worker with GPUs loads
on "cuda", and a target with more than one spreads its layers over them
(device_map=auto). Actors die with the driver (`specdec up --ray` or your script).

Each actor calls the service's own `server.start(config)`, as every launcher does
(signals can only be handled on a main thread, so the actor stops it explicitly).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

WILDCARDS = ("0.0.0.0", "::", "[::]", "")
HEAD_NODE_RESOURCE = "node:__internal_head__"
LOCAL_ADDRESSES = (None, "local")  # ray.init starts a Ray instance of its own on this machine
# A Ray of our own on one machine listens on loopback only. Ray has no init argument for it:
# it rewrites 127.0.0.1 to the machine's routable address and its GCS and raylet listen on
# every interface unless this variable is 0 when `ray` is first imported (it is read at import;
# `_node_ip_address` does not help: measured). RAY_USAGE_STATS_ENABLED=0: no usage report.
LOOPBACK_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass(frozen=True)
class RayStackConfig:
    address: str | None = "auto"  # ray.init address: auto (a running cluster), ray://HOST:10001, local
    host: str = "0.0.0.0"  # interface every service binds on its node; 127.0.0.1 for a one-machine test
    port: int = 50051  # the coordinator's port (0: any free); workers take any free port
    preset: str = "qwen-coder"  # tiny | qwen-coder
    seed: int = 0
    dtype: str = "float32"
    draft_model: str | None = None  # a folder / .gguf on every node instead of the preset's draft
    target_model: str | None = None  # ... instead of the preset's target
    tokenizer: str | None = None  # the coordinator's tokenizer (default: the preset's; give it with --target-model)
    draft_replicas: int = 1  # 0: target-only decoding
    target_replicas: int = 1
    draft_gpus: float = 0.0  # Ray num_gpus per draft actor
    target_gpus: float = 0.0  # Ray num_gpus per target actor (> 1: layers spread over them)
    draft_cpus: float = 1.0  # Ray num_cpus per actor
    target_cpus: float = 1.0
    coordinator_cpus: float = 1.0
    coordinator_on_head: bool = False  # pin the coordinator to the head node (KubeRay: the head Service reaches it)
    target_device_map: str | None = None  # default: auto when target_gpus > 1
    worker_threads: int | None = None  # torch threads per worker (default: torch's)
    startup_timeout_s: float = 600.0

    def __post_init__(self):
        if self.target_replicas < 1:
            raise ValueError(f"target_replicas must be >= 1, got {self.target_replicas}")
        if self.draft_replicas < 0:
            raise ValueError(f"draft_replicas must be >= 0, got {self.draft_replicas}")
        for name in ("draft_gpus", "target_gpus", "draft_cpus", "target_cpus", "coordinator_cpus"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def worker_config(self, role: str):
        gpus = self.draft_gpus if role == "draft" else self.target_gpus
        device_map = self.target_device_map if role == "target" else None
        if role == "target" and device_map is None and gpus > 1:
            device_map = "auto"
        common = dict(
            host=self.host, port=0, preset=self.preset, seed=self.seed, dtype=self.dtype, threads=self.worker_threads,
            model=self.draft_model if role == "draft" else self.target_model,
            device="cuda" if gpus > 0 else "cpu", device_map=device_map,
        )
        if role == "draft":
            from draft_worker.config import DraftWorkerConfig

            return DraftWorkerConfig(**common)
        from target_worker.config import TargetWorkerConfig

        return TargetWorkerConfig(**common)

    def coordinator_config(self, draft: list[str], target: list[str]):
        from coordinator.config import CoordinatorConfig

        return CoordinatorConfig(
            target=tuple(target), draft=tuple(draft), host=self.host, port=self.port, preset=self.preset,
            tokenizer=self.tokenizer, startup_timeout_s=self.startup_timeout_s,
        )


async def _start(role: str, config):
    """Start one service on the actor's loop with the same `start(config)` as every launcher."""
    if role == "coordinator":
        from coordinator import server
    elif role == "draft":
        from draft_worker import server
    else:
        from target_worker import server
    return await server.start(config)


class ServiceActor:
    """One service in a Ray actor (made a Ray actor class by `RayStack`)."""

    def __init__(self):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="specdec-grpc", daemon=True)
        self._thread.start()
        self._running = None  # the service's specdec.rpc.serving.Running

    def start(self, role: str, config, timeout_s: float) -> str:
        """Serve `role` with `config`; returns the HOST:PORT peers dial."""
        future = asyncio.run_coroutine_threadsafe(_start(role, config), self._loop)
        self._running = future.result(timeout_s)
        return f"{advertised_host(config.host)}:{self._running.port}"

    def stop(self, grace_s: float = 5.0) -> None:
        if self._running is not None:
            asyncio.run_coroutine_threadsafe(self._running.stop(grace_s), self._loop).result(grace_s + 30)
            self._running = None


def advertised_host(host: str) -> str:
    """The address peers dial: the node's IP when listening on every interface."""
    if host in WILDCARDS:
        import ray

        return ray.util.get_node_ip_address()
    return host


def bind_ray_to_loopback() -> None:
    """Make the Ray this process is about to start listen on loopback only (LOOPBACK_RAY_ENV);
    warn when `ray` was imported already, too late for the setting to take."""
    imported = "ray" in sys.modules
    for key, value in LOOPBACK_RAY_ENV.items():
        os.environ.setdefault(key, value)
    if imported and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
        log.warning("ray was imported before the stack set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: a local Ray may "
                    "listen beyond loopback; set it in the environment before importing ray")


class RayStack:
    """Places and starts the actors; a context manager. `address` is the coordinator's."""

    def __init__(self, config: RayStackConfig, init_kwargs: dict | None = None):
        self.config = config
        self.init_kwargs = dict(init_kwargs or {})  # more ray.init arguments (num_cpus for a local test)
        self.actors: dict[str, list] = {"draft": [], "target": [], "coordinator": []}
        self.addresses: dict[str, list[str]] = {"draft": [], "target": [], "coordinator": []}
        self._initialised_ray = False

    @property
    def address(self) -> str:
        return self.addresses["coordinator"][0]

    def start(self) -> "RayStack":
        local = self.config.address in LOCAL_ADDRESSES
        if local:
            bind_ray_to_loopback()
        import ray

        if not ray.is_initialized():
            ray.init(address=self.config.address, **self.init_kwargs)
            self._initialised_ray = True
        try:
            self._start(ray)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, ray) -> None:
        c = self.config
        actor_class = ray.remote(ServiceActor)
        resources = {
            "draft": dict(num_cpus=c.draft_cpus, num_gpus=c.draft_gpus),
            "target": dict(num_cpus=c.target_cpus, num_gpus=c.target_gpus),
            "coordinator": dict(num_cpus=c.coordinator_cpus, num_gpus=0),
        }
        if c.coordinator_on_head:  # the head node's own resource, as Ray's own head-pinned actors do
            resources["coordinator"]["resources"] = {HEAD_NODE_RESOURCE: 0.001}
        starts: dict[str, list] = {}
        for role, replicas in (("draft", c.draft_replicas), ("target", c.target_replicas)):
            for _ in range(replicas):
                actor = actor_class.options(**resources[role]).remote()
                self.actors[role].append(actor)
                starts.setdefault(role, []).append(actor.start.remote(role, c.worker_config(role), c.startup_timeout_s))
        for role, refs in starts.items():  # all workers load their models at the same time
            self.addresses[role] = ray.get(refs, timeout=c.startup_timeout_s)
        log.info("workers: draft %s, target %s", self.addresses["draft"], self.addresses["target"])
        coordinator = actor_class.options(**resources["coordinator"]).remote()
        self.actors["coordinator"].append(coordinator)
        config = c.coordinator_config(self.addresses["draft"], self.addresses["target"])
        start = coordinator.start.remote("coordinator", config, c.startup_timeout_s)
        self.addresses["coordinator"] = [ray.get(start, timeout=c.startup_timeout_s)]

    def stop(self) -> None:
        import ray

        for role in ("coordinator", "draft", "target"):  # the coordinator first: it drains its requests
            refs = [actor.stop.remote() for actor in self.actors[role]]
            try:
                ray.get(refs, timeout=60)
            except Exception as exc:  # a dead actor: nothing to stop
                log.warning("stopping %s actors: %s", role, exc)
            for actor in self.actors[role]:
                ray.kill(actor)
            self.actors[role] = []
        if self._initialised_ray:
            ray.shutdown()
            self._initialised_ray = False

    def __enter__(self) -> "RayStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until_interrupted() -> None:
    """Block until Ctrl-C / SIGTERM (`specdec up --ray`)."""
    import signal
    import time

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
