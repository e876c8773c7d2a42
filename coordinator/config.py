"""The coordinator's configuration: one frozen value, built from flags and env vars
(specdec/launch/cli.py) and passed down explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.admission import RetryAfter
from coordinator.discovery import DiscoveryConfig
from specdec.rpc.security import ServerTLS
from specdec.telemetry.config import TelemetryConfig

DEFAULT_PORT = 50051


@dataclass(frozen=True)
class CoordinatorConfig:
    target: tuple[str, ...]  # target worker addresses (replicas), host:port
    draft: tuple[str, ...] = ()  # draft worker addresses; none = autoregressive only
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0: any free port
    preset: str = "qwen-coder"  # whose tokenizer to load: tiny | qwen-coder
    tokenizer: str | None = None  # the target's tokenizer folder / .gguf (workers started with --model)
    threads: int | None = 1  # torch threads (the coordinator only does bookkeeping)
    max_concurrent_requests: int = 64  # more get RESOURCE_EXHAUSTED, with a retry-after-ms hint
    retry_after: RetryAfter = RetryAfter()  # how that hint is estimated (coordinator/admission.py)
    target_retry_s: float = 10.0  # how long a request waits for some target replica to answer
    startup_timeout_s: float = 120.0  # how long to wait for the workers at startup
    grace_s: float = 5.0  # drain time on SIGTERM
    telemetry: TelemetryConfig = TelemetryConfig()  # OTLP endpoint, /metrics port
    tls: ServerTLS = ServerTLS()  # --tls-cert/--tls-key/--tls-ca; also how it dials the workers
    auth_token: str | None = field(default=None, repr=False)  # clients must send it as a bearer token
    discovery: DiscoveryConfig = DiscoveryConfig()  # static | dns | kubernetes (coordinator/discovery.py)

    def __post_init__(self):
        if not self.target:
            raise ValueError("give at least one target worker address (--target HOST:PORT)")
        for address in (*self.target, *self.draft):
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"worker address {address!r} is not HOST:PORT")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.max_concurrent_requests < 1:
            raise ValueError(f"max_concurrent_requests must be >= 1, got {self.max_concurrent_requests}")
        if self.target_retry_s < 0:
            raise ValueError(f"target_retry_s must be >= 0, got {self.target_retry_s}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
