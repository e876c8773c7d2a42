"""Typer commands for the services: `specdec serve ROLE` and `specdec up`.

Every flag can also come from an env var (SPECDEC_PORT, SPECDEC_PRESET, ...), which
is how containers configure them. Only typer is imported here; the services (torch,
grpc) are imported when a command runs, so `--help` stays fast.
"""

from __future__ import annotations

import enum
import logging
import sys
from typing import Optional

import typer


class Role(str, enum.Enum):
    DRAFT = "draft"
    TARGET = "target"
    COORDINATOR = "coordinator"
    GATEWAY = "gateway"  # the OpenAI-compatible HTTP API, a client of the coordinator


def _split(addresses: Optional[str]) -> tuple[str, ...]:
    return tuple(a.strip() for a in (addresses or "").split(",") if a.strip())


def serve(
    role: Role = typer.Argument(..., help="Which service: draft | target | coordinator | gateway."),
    host: str = typer.Option("127.0.0.1", envvar="SPECDEC_HOST", help="Interface to listen on."),
    port: Optional[int] = typer.Option(
        None, envvar="SPECDEC_PORT",
        help="Port (0 = any free); default 50051 coordinator, 50061 draft, 50071 target, 8000 gateway.",
    ),
    preset: str = typer.Option("qwen-coder", envvar="SPECDEC_PRESET", help="Model pair: qwen-coder | tiny."),
    seed: int = typer.Option(0, envvar="SPECDEC_SEED", help="Seed that builds the tiny models (workers)."),
    dtype: str = typer.Option("float32", envvar="SPECDEC_DTYPE", help="float32 | bfloat16 | float16 (workers)."),
    runtime: str = typer.Option(
        "eager", envvar="SPECDEC_RUNTIME",
        help="eager | compiled: each decoder layer under torch.compile, dynamic shapes; off until measured on "
             "your device (workers).",
    ),
    threads: Optional[int] = typer.Option(None, envvar="SPECDEC_THREADS", help="torch.set_num_threads."),
    cost_profile: Optional[str] = typer.Option(
        None, envvar="SPECDEC_COST_PROFILE", help="Emulate a device's forward latency, e.g. gpu-like (workers)."
    ),
    max_sessions: int = typer.Option(256, envvar="SPECDEC_MAX_SESSIONS", help="KV caches held at once (workers)."),
    session_ttl: float = typer.Option(600.0, envvar="SPECDEC_SESSION_TTL", help="Idle session TTL, s (workers)."),
    max_batch: int = typer.Option(
        1, envvar="SPECDEC_MAX_BATCH", help="Merge up to N concurrent sessions' forwards into one (workers)."
    ),
    batch_wait_ms: float = typer.Option(
        2.0, envvar="SPECDEC_BATCH_WAIT_MS", help="How long a forward waits for others to join a batch (workers)."
    ),
    chunk_tokens: int = typer.Option(
        0, envvar="SPECDEC_CHUNK_TOKENS",
        help="With --max-batch: tokens per merged forward; long prompts are prefilled in chunks beside the decoding "
             "sessions (0: the cost profile's flat budget, else 256) (workers).",
    ),
    proposal_top_n: int = typer.Option(64, envvar="SPECDEC_PROPOSAL_TOP_N", help="N of the sparse q (draft)."),
    acceptance_head: Optional[str] = typer.Option(
        None, envvar="SPECDEC_ACCEPTANCE_HEAD", help="Folder of a SpecDec++ head; policy specdecpp needs one (draft)."
    ),
    draft: Optional[str] = typer.Option(
        None, envvar="SPECDEC_DRAFT", help="Draft worker addresses, HOST:PORT[,HOST:PORT] (coordinator)."
    ),
    target: Optional[str] = typer.Option(
        None, envvar="SPECDEC_TARGET", help="Target worker addresses, HOST:PORT[,HOST:PORT] (coordinator)."
    ),
    max_concurrent_requests: int = typer.Option(
        64, envvar="SPECDEC_MAX_CONCURRENT_REQUESTS",
        help="More get RESOURCE_EXHAUSTED at once, with a retry-after-ms hint in the trailing metadata (coordinator).",
    ),
    target_retry_s: float = typer.Option(
        10.0, envvar="SPECDEC_TARGET_RETRY_S", help="How long a request waits for a target replica (coordinator)."
    ),
    coordinator: str = typer.Option(
        "127.0.0.1:50051", envvar="SPECDEC_COORDINATOR", help="The coordinator's gRPC address, HOST:PORT (gateway)."
    ),
    served_model_name: Optional[str] = typer.Option(
        None, envvar="SPECDEC_SERVED_MODEL_NAME",
        help="The `model` requests must name; default: the coordinator's target model (gateway).",
    ),
    coordinator_token: Optional[str] = typer.Option(
        None, envvar="SPECDEC_COORDINATOR_TOKEN",
        help="Bearer token sent to the coordinator; default: --auth-token (gateway).",
    ),
    request_timeout: float = typer.Option(
        0.0, envvar="SPECDEC_REQUEST_TIMEOUT", help="Each request's deadline at the coordinator, s; 0 = none (gateway)."
    ),
    grace: float = typer.Option(5.0, envvar="SPECDEC_GRACE", help="Drain time on SIGTERM, s."),
    log_level: str = typer.Option("INFO", envvar="SPECDEC_LOG_LEVEL", help="DEBUG | INFO | WARNING."),
    metrics_port: int = typer.Option(
        0, envvar="SPECDEC_METRICS_PORT", help="Serve Prometheus metrics on http://HOST:PORT/metrics (0 = off)."
    ),
    otlp_endpoint: Optional[str] = typer.Option(
        None, envvar="OTEL_EXPORTER_OTLP_ENDPOINT",
        help="Export traces over OTLP/gRPC, e.g. http://127.0.0.1:4317 (unset = no export).",
    ),
    tls_cert: Optional[str] = typer.Option(
        None, envvar="SPECDEC_TLS_CERT", help="PEM certificate chain to serve TLS with (needs --tls-key)."
    ),
    tls_key: Optional[str] = typer.Option(None, envvar="SPECDEC_TLS_KEY", help="PEM private key of --tls-cert."),
    tls_ca: Optional[str] = typer.Option(
        None, envvar="SPECDEC_TLS_CA",
        help="PEM CA bundle: clients must present a certificate it signed (mutual TLS); the coordinator also "
        "verifies the workers with it and presents --tls-cert to them.",
    ),
    auth_token: Optional[str] = typer.Option(
        None, envvar="SPECDEC_AUTH_TOKEN", help="Clients must send 'authorization: Bearer TOKEN' (coordinator)."
    ),
    auth_token_file: Optional[str] = typer.Option(
        None, envvar="SPECDEC_AUTH_TOKEN_FILE", help="Read --auth-token from this file (coordinator)."
    ),
    model: Optional[str] = typer.Option(
        None, envvar="SPECDEC_MODEL", help="A Hugging Face folder or .gguf to serve instead of the preset's (workers)."
    ),
    device: str = typer.Option("cpu", envvar="SPECDEC_DEVICE", help="cpu | cuda | cuda:N (workers)."),
    device_map: Optional[str] = typer.Option(
        None, envvar="SPECDEC_DEVICE_MAP",
        help="transformers device_map: auto | balanced | balanced_low_0 | sequential | a device | JSON: "
        "spread the layers over this machine's GPUs (workers).",
    ),
    tp_plan: Optional[str] = typer.Option(
        None, envvar="SPECDEC_TP_PLAN", help="transformers tp_plan: auto; tensor parallelism under torchrun (workers)."
    ),
    tokenizer: Optional[str] = typer.Option(
        None, envvar="SPECDEC_TOKENIZER",
        help="The target's tokenizer, a folder or .gguf; default: the preset's (coordinator).",
    ),
    discovery: str = typer.Option(
        "static", envvar="SPECDEC_DISCOVERY",
        help="How to find workers: static (the --draft/--target list) | dns (re-resolve those names, one "
        "replica per address) | kubernetes (watch the Services' EndpointSlices) (coordinator).",
    ),
    discovery_interval: float = typer.Option(
        5.0, envvar="SPECDEC_DISCOVERY_INTERVAL", help="Seconds between DNS re-resolutions (coordinator)."
    ),
    discovery_namespace: Optional[str] = typer.Option(
        None, envvar="SPECDEC_DISCOVERY_NAMESPACE", help="Namespace of the worker Services (kubernetes discovery)."
    ),
    draft_service: Optional[str] = typer.Option(
        None, envvar="SPECDEC_DISCOVERY_DRAFT_SERVICE",
        help="Draft workers' Service (kubernetes discovery); default: the first label of --draft's host.",
    ),
    target_service: Optional[str] = typer.Option(
        None, envvar="SPECDEC_DISCOVERY_TARGET_SERVICE",
        help="Target workers' Service (kubernetes discovery); default: the first label of --target's host.",
    ),
):
    """Run one service until SIGTERM/SIGINT."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from specdec.telemetry.config import TelemetryConfig

        telemetry = TelemetryConfig(otlp_endpoint=otlp_endpoint or None, metrics_port=metrics_port)
        from specdec.rpc.security import ServerTLS, read_token

        if role is Role.GATEWAY:  # an HTTP service: its TLS flags mean something else (_gateway_config)
            from gateway.server import run

            return run(_gateway_config(
                host, port, grace, tls_cert, tls_key, tls_ca, read_token(auth_token, auth_token_file), coordinator,
                served_model_name, read_token(coordinator_token, None), request_timeout,
            ))
        tls = ServerTLS(cert=tls_cert or None, key=tls_key or None, ca=tls_ca or None)
        token = read_token(auth_token, auth_token_file)
        if token and role is not Role.COORDINATOR:  # a warning: one env shared by all pods must not stop workers
            logging.getLogger(__name__).warning(
                "ignoring --auth-token: it is for the coordinator; workers authenticate it by mutual TLS (--tls-ca)"
            )
        if role is Role.COORDINATOR:
            from coordinator.config import DEFAULT_PORT, CoordinatorConfig
            from coordinator.server import run

            config = CoordinatorConfig(
                target=_split(target), draft=_split(draft), host=host, port=DEFAULT_PORT if port is None else port,
                preset=preset, threads=threads or 1, max_concurrent_requests=max_concurrent_requests,
                target_retry_s=target_retry_s, grace_s=grace, telemetry=telemetry, tls=tls, auth_token=token,
                tokenizer=tokenizer, discovery=_discovery(
                    discovery, discovery_interval, discovery_namespace, draft_service, target_service
                ),
            )
        elif role is Role.DRAFT:
            from draft_worker.config import DEFAULT_PORT, DraftWorkerConfig
            from draft_worker.server import run

            config = DraftWorkerConfig(
                host=host, port=DEFAULT_PORT if port is None else port, preset=preset, seed=seed, dtype=dtype,
                runtime=runtime,
                threads=threads, cost_profile=cost_profile, max_sessions=max_sessions, session_ttl_s=session_ttl,
                max_batch=max_batch, batch_wait_ms=batch_wait_ms, chunk_tokens=chunk_tokens,
                proposal_top_n=proposal_top_n, acceptance_head=acceptance_head, grace_s=grace, telemetry=telemetry,
                tls=tls, model=model, device=device, device_map=device_map, tp_plan=tp_plan,
            )
        else:
            from target_worker.config import DEFAULT_PORT, TargetWorkerConfig
            from target_worker.server import run

            config = TargetWorkerConfig(
                host=host, port=DEFAULT_PORT if port is None else port, preset=preset, seed=seed, dtype=dtype,
                runtime=runtime,
                threads=threads, cost_profile=cost_profile, max_sessions=max_sessions, session_ttl_s=session_ttl,
                max_batch=max_batch, batch_wait_ms=batch_wait_ms, chunk_tokens=chunk_tokens,
                grace_s=grace, telemetry=telemetry, tls=tls, model=model, device=device, device_map=device_map,
                tp_plan=tp_plan,
            )
        run(config)
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)


def chosen_dtype(dtype: str, preset: str, cost_profile: str | None, gpus: float = 0.0) -> str:
    """`dtype`, with "auto" resolved and the reason printed (specdec/models/hardware.py).
    The tiny pair and emulated costs stay in float32: exact, and their speed is declared."""
    if dtype != "auto":
        return dtype
    if preset == "tiny" or cost_profile:
        typer.echo("dtype: float32 (the tiny pair or an emulated cost profile: exact, speed declared)", err=True)
        return "float32"
    from specdec.models.hardware import choose_dtype

    chosen, why = choose_dtype("cuda" if gpus else "cpu")
    typer.echo(f"dtype: {chosen} ({why}; --dtype to choose)", err=True)
    return chosen


def up(
    preset: str = typer.Option("qwen-coder", help="Model pair: qwen-coder | tiny."),
    tiny: bool = typer.Option(False, "--tiny", help="Shorthand for --preset tiny (random tiny models)."),
    port: int = typer.Option(50051, help="Coordinator port (workers get free ports)."),
    http_port: Optional[int] = typer.Option(
        None, "--http-port",
        help="Also start the OpenAI-compatible HTTP API (the gateway) on this port of 127.0.0.1 (0 = any free).",
    ),
    cost_profile: Optional[str] = typer.Option(None, help="Emulate a device's forward latency, e.g. gpu-like."),
    seed: int = typer.Option(0, help="Seed that builds the tiny models."),
    dtype: str = typer.Option(
        "auto", help="auto | float32 | bfloat16 | float16 (auto: bfloat16 where a short measurement says it is "
                     "faster here, else float32; the tiny pair and emulated costs: float32)."),
    startup_timeout: float = typer.Option(600.0, help="Seconds to wait for all services to report SERVING."),
    ray: Optional[str] = typer.Option(
        None, "--ray", metavar="ADDRESS",
        help="Place the services as Ray actors on this Ray cluster instead (auto | ray://HOST:10001 | local).",
    ),
    ray_host: Optional[str] = typer.Option(
        None, help="--ray: interface each service binds on its node (default: 127.0.0.1 with --ray local, "
                   "a Ray of our own on this machine, which then listens on loopback too; else 0.0.0.0)."
    ),
    draft_replicas: int = typer.Option(1, help="--ray: draft worker actors (0: target-only)."),
    target_replicas: int = typer.Option(1, help="--ray: target worker actors."),
    draft_gpus: float = typer.Option(0.0, help="--ray: GPUs per draft actor."),
    target_gpus: float = typer.Option(0.0, help="--ray: GPUs per target actor (> 1: layers spread over them)."),
    worker_cpus: float = typer.Option(1.0, help="--ray: CPUs per worker actor."),
    draft_model: Optional[str] = typer.Option(None, help="--ray: draft model folder on every node."),
    target_model: Optional[str] = typer.Option(None, help="--ray: target model folder on every node."),
    tokenizer: Optional[str] = typer.Option(None, help="--ray: the coordinator's tokenizer (with --target-model)."),
    coordinator_on_head: bool = typer.Option(
        False, "--coordinator-on-head", help="--ray: run the coordinator on the head node (a fixed address)."
    ),
):
    """Start draft worker, target worker and coordinator on 127.0.0.1 (or, with --ray, as
    actors on a Ray cluster), and with --http-port the HTTP gateway; Ctrl-C stops all."""
    dtype = chosen_dtype(dtype, "tiny" if tiny else preset, cost_profile, gpus=draft_gpus + target_gpus)
    if ray is not None:
        if http_port is not None:
            typer.echo("error: --http-port is not available with --ray yet: run `specdec serve gateway "
                       "--coordinator HOST:PORT` beside the cluster", err=True)
            raise typer.Exit(2)
        return _up_on_ray(
            address=ray, host=ray_host or ("127.0.0.1" if ray == "local" else "0.0.0.0"), port=port, preset="tiny" if tiny else preset, seed=seed, dtype=dtype,
            draft_replicas=draft_replicas, target_replicas=target_replicas, draft_gpus=draft_gpus,
            target_gpus=target_gpus, draft_cpus=worker_cpus, target_cpus=worker_cpus, draft_model=draft_model,
            target_model=target_model, tokenizer=tokenizer, startup_timeout_s=startup_timeout,
            coordinator_on_head=coordinator_on_head,
        )
    from specdec.launch.stack import LocalStack, StackError, wait_until_interrupted

    stack = LocalStack(
        preset="tiny" if tiny else preset, port=port, cost_profile=cost_profile, seed=seed, dtype=dtype,
        startup_timeout_s=startup_timeout, http_port=http_port,
    )
    try:
        stack.start()
        typer.echo(f"coordinator listening on {stack.address}")
        if stack.http_url:
            typer.echo(f"OpenAI-compatible HTTP API on {stack.http_url}/v1")
        typer.echo(f'try: specdec generate --address {stack.address} "def fib(n):"', err=True)
        wait_until_interrupted(stack)
    except StackError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    finally:
        killed = stack.stop()  # the coordinator drains first, then the workers
    if killed:
        typer.echo(f"error: {', '.join(killed)} did not stop within the grace period and had to be killed", err=True)
        raise typer.Exit(1)
    typer.echo(f"stopped: {'gateway, ' if stack.gateway else ''}coordinator, draft worker, target worker", err=True)


def _up_on_ray(**options) -> None:
    try:
        from specdec.launch.ray_stack import (
            RayStack,
            RayStackConfig,
            wait_until_interrupted,
        )

        stack = RayStack(RayStackConfig(**options))
    except ImportError:
        typer.echo("error: --ray needs Ray: pip install 'specdec[ray]'", err=True)
        raise typer.Exit(2)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    with stack:
        typer.echo(f"coordinator listening on {stack.address}")
        typer.echo(f"workers: draft {stack.addresses['draft']}, target {stack.addresses['target']}", err=True)
        wait_until_interrupted()


def _gateway_config(host, port, grace, tls_cert, tls_key, tls_ca, token, coordinator, served_model_name,
                    coordinator_token, request_timeout):
    """The gateway's flags: --tls-cert/--tls-key serve HTTPS; --tls-ca dials the coordinator over
    TLS, verified against it, presenting --tls-cert when given (mutual TLS), as the coordinator
    dials its workers; --auth-token is what HTTP clients must send, and (unless
    --coordinator-token) what the gateway sends on."""
    from gateway.config import DEFAULT_PORT, GatewayConfig
    from specdec.rpc.security import ChannelTLS

    return GatewayConfig(
        coordinator=coordinator, host=host, port=DEFAULT_PORT if port is None else port,
        served_model_name=served_model_name or None, auth_token=token, coordinator_token=coordinator_token,
        tls_cert=tls_cert or None, tls_key=tls_key or None,
        coordinator_tls=ChannelTLS(ca=tls_ca, cert=tls_cert or None, key=tls_key or None) if tls_ca else None,
        request_timeout_s=request_timeout or None, grace_s=grace,
    )


def _discovery(mode: str, interval: float, namespace, draft_service, target_service):
    from coordinator.discovery import DiscoveryConfig

    return DiscoveryConfig(
        mode=mode, interval_s=interval, namespace=namespace or None, draft_service=draft_service or None,
        target_service=target_service or None,
    )


def main_for_role(role: str) -> None:
    """`python -m draft_worker ...` == `specdec serve draft ...` (likewise the others)."""
    app = typer.Typer(add_completion=False)
    app.command(help=f"Run the {role} service until SIGTERM/SIGINT.")(serve)
    module = role if role in ("coordinator", "gateway") else role + "_worker"
    app(args=[role, *sys.argv[1:]], prog_name=f"python -m {module}")
