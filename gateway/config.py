"""The gateway's configuration: one frozen value, built from flags and env vars
(specdec/launch/cli.py, `specdec serve gateway`) and passed down explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field

from specdec.rpc.security import ChannelTLS, read_pem

DEFAULT_PORT = 8000  # vLLM's and TGI's customary HTTP port, so clients' defaults tend to fit
DEFAULT_COORDINATOR = "127.0.0.1:50051"


@dataclass(frozen=True)
class GatewayConfig:
    coordinator: str = DEFAULT_COORDINATOR  # the coordinator's gRPC address, host:port
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0: any free port
    # The `model` requests must name, and GET /v1/models lists; None: the coordinator's target
    # model as GetInfo reports it (its last path component when it is a local folder)
    served_model_name: str | None = None
    # HTTP clients must send `Authorization: Bearer <auth_token>` (401 otherwise); None: open
    auth_token: str | None = field(default=None, repr=False)
    # The bearer token sent to the coordinator; None: auth_token (one token for the deployment)
    coordinator_token: str | None = field(default=None, repr=False)
    tls_cert: str | None = None  # serve HTTPS with this PEM certificate chain (needs tls_key)
    tls_key: str | None = None
    # Dial the coordinator over TLS (verify it against `ca`; present `cert` for mutual TLS); None: plaintext
    coordinator_tls: ChannelTLS | None = None
    request_timeout_s: float | None = None  # each request's deadline at the coordinator (504 past it); None: none
    # How often the SDK retries UNAVAILABLE / RESOURCE_EXHAUSTED before any token. 0 by default: HTTP
    # clients (the openai package: 2 retries) retry 429 and 503 themselves, honouring Retry-After,
    # and retrying here as well would multiply the waits
    retries: int = 0
    grace_s: float = 5.0  # drain time on SIGTERM: streams in flight may finish

    def __post_init__(self):
        host, _, port = self.coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--coordinator {self.coordinator!r} is not HOST:PORT")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("give both --tls-cert and --tls-key (a certificate and its private key), or neither")
        for path, what in ((self.tls_cert, "--tls-cert"), (self.tls_key, "--tls-key")):
            if path:
                read_pem(path, what)  # fail at startup, not at the first handshake
        if self.request_timeout_s is not None and self.request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0 (or unset), got {self.request_timeout_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.served_model_name is not None and not self.served_model_name.strip():
            raise ValueError("--served-model-name is empty")

    @property
    def token_for_coordinator(self) -> str | None:
        return self.coordinator_token or self.auth_token

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"
