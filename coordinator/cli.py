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


def _split(addresses: Optional[str]) -> tuple[str, ...]:
    return tuple(a.strip() for a in (addresses or "").split(",") if a.strip())


def serve(
    role: Role = typer.Argument(..., help="Which service: draft | target | coordinator."),
    host: str = typer.Option("127.0.0.1", envvar="SPECDEC_HOST", help="Interface to listen on."),
    port: Optional[int] = typer.Option(
        None, envvar="SPECDEC_PORT", help="Port (0 = any free); default 50051 coordinator, 50061 draft, 50071 target."
    ),
    preset: str = typer.Option("qwen-coder", envvar="SPECDEC_PRESET", help="Model pair: qwen-coder | tiny."),
    seed: int = typer.Option(0, envvar="SPECDEC_SEED", help="Seed that builds the tiny models (workers)."),
    dtype: str = typer.Option("float32", envvar="SPECDEC_DTYPE", help="float32 | bfloat16 | float16 (workers)."),
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
        64, envvar="SPECDEC_MAX_CONCURRENT_REQUESTS", help="More get RESOURCE_EXHAUSTED (coordinator)."
    ),
    target_retry_s: float = typer.Option(
        10.0, envvar="SPECDEC_TARGET_RETRY_S", help="How long a request waits for a target replica (coordinator)."
    ),
    grace: float = typer.Option(5.0, envvar="SPECDEC_GRACE", help="Drain time on SIGTERM, s."),
    log_level: str = typer.Option("INFO", envvar="SPECDEC_LOG_LEVEL", help="DEBUG | INFO | WARNING."),
):
    """Run one service until SIGTERM/SIGINT."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if role is Role.COORDINATOR:
            from coordinator.config import DEFAULT_PORT, CoordinatorConfig
            from coordinator.server import run

            config = CoordinatorConfig(
                target=_split(target), draft=_split(draft), host=host, port=DEFAULT_PORT if port is None else port,
                preset=preset, threads=threads or 1, max_concurrent_requests=max_concurrent_requests,
                target_retry_s=target_retry_s, grace_s=grace,
            )
        elif role is Role.DRAFT:
            from draft_worker.config import DEFAULT_PORT, DraftWorkerConfig
            from draft_worker.server import run

            config = DraftWorkerConfig(
                host=host, port=DEFAULT_PORT if port is None else port, preset=preset, seed=seed, dtype=dtype,
                threads=threads, cost_profile=cost_profile, max_sessions=max_sessions, session_ttl_s=session_ttl,
                max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                proposal_top_n=proposal_top_n, acceptance_head=acceptance_head, grace_s=grace,
            )
        else:
            from target_worker.config import DEFAULT_PORT, TargetWorkerConfig
            from target_worker.server import run

            config = TargetWorkerConfig(
                host=host, port=DEFAULT_PORT if port is None else port, preset=preset, seed=seed, dtype=dtype,
                threads=threads, cost_profile=cost_profile, max_sessions=max_sessions, session_ttl_s=session_ttl,
                max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                grace_s=grace,
            )
        run(config)
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)


def up(
    preset: str = typer.Option("qwen-coder", help="Model pair: qwen-coder | tiny."),
    tiny: bool = typer.Option(False, "--tiny", help="Shorthand for --preset tiny (random tiny models)."),
    port: int = typer.Option(50051, help="Coordinator port (workers get free ports)."),
    cost_profile: Optional[str] = typer.Option(None, help="Emulate a device's forward latency, e.g. gpu-like."),
    seed: int = typer.Option(0, help="Seed that builds the tiny models."),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16."),
    startup_timeout: float = typer.Option(600.0, help="Seconds to wait for all services to report SERVING."),
):
    """Start draft worker, target worker and coordinator on 127.0.0.1; Ctrl-C stops all."""
    from coordinator.stack import LocalStack, StackError, wait_until_interrupted

    stack = LocalStack(
        preset="tiny" if tiny else preset, port=port, cost_profile=cost_profile, seed=seed, dtype=dtype,
        startup_timeout_s=startup_timeout,
    )
    try:
        with stack:
            typer.echo(f"coordinator listening on {stack.address}")
            typer.echo(f'try: specdec generate --address {stack.address} "def fib(n):"', err=True)
            wait_until_interrupted(stack)
    except StackError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)


def main_for_role(role: str) -> None:
    """`python -m draft_worker ...` == `specdec serve draft ...` (likewise the others)."""
    app = typer.Typer(add_completion=False)
    app.command(help=f"Run the {role} service until SIGTERM/SIGINT.")(serve)
    app(args=[role, *sys.argv[1:]], prog_name=f"python -m {role if role == 'coordinator' else role + '_worker'}")
