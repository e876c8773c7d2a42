"""Start the gateway: an SDK AsyncClient of the coordinator, the FastAPI app, and uvicorn
serving it in the caller's event loop, on a socket bound here (so that port 0 works and a
taken port is an OSError, not uvicorn's sys.exit). Like the other services:

    running = await start(GatewayConfig(coordinator="127.0.0.1:50051", port=0))
    running.port; await running.stop(grace_s=5)

`run(config)` serves until SIGTERM/SIGINT, or until the launcher that set
SPECDEC_PARENT_PID dies (specdec.rpc.serving.serve_until_signal, as every service).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass

import uvicorn

from gateway.app import create_app
from gateway.config import GatewayConfig
from specdec.client import AsyncClient
from specdec.rpc import serving

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 30.0
STOP_SLACK_S = 5.0  # beyond the grace period, for uvicorn to cancel what is left and close


class _Server(uvicorn.Server):
    def capture_signals(self):
        """The launcher owns SIGTERM/SIGINT (serve_until_signal, or a test's loop): uvicorn's own
        handlers would replace its handlers and re-raise the signal after shutdown."""
        return contextlib.nullcontext()


@dataclass
class RunningGateway:
    """A started gateway: the same `port` and `stop(grace_s)` as specdec.rpc.serving.Running."""

    server: _Server
    task: asyncio.Task
    client: AsyncClient
    port: int

    async def stop(self, grace_s: float | None = 0) -> None:
        """Stop accepting, let responses in flight finish for `grace_s` (then cancel them, which
        cancels their gRPC calls), close the channel to the coordinator."""
        self.server.config.timeout_graceful_shutdown = grace_s or 0
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), (grace_s or 0) + STOP_SLACK_S)
        except asyncio.TimeoutError:
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        finally:
            await self.client.close()


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv6 when the host is)."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror} (is the port taken?)") from None
    sock.setblocking(False)
    return sock


async def start(config: GatewayConfig) -> RunningGateway:
    """Serve the OpenAI-compatible API for the coordinator at `config.coordinator`. The
    coordinator need not be up yet: requests get 503 until it answers."""
    tls = config.coordinator_tls
    client = AsyncClient(
        config.coordinator, timeout=config.request_timeout_s, retries=config.retries,
        tls=tls is not None, tls_ca=tls.ca if tls else None, client_cert=tls.cert if tls else None,
        client_key=tls.key if tls else None, tls_server_name=tls.server_name if tls else None,
        token=config.token_for_coordinator,
    )
    try:
        sock = listen(config.host, config.port)
        app = create_app(client, model_name=config.served_model_name, auth_token=config.auth_token)
        server = _Server(uvicorn.Config(
            app, lifespan="off", log_config=None, server_header=False, timeout_graceful_shutdown=config.grace_s,
            ssl_certfile=config.tls_cert, ssl_keyfile=config.tls_key,
        ))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_S
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise OSError("the HTTP server stopped while starting")
            if asyncio.get_running_loop().time() > deadline:
                server.should_exit = True
                raise OSError(f"the HTTP server did not start within {STARTUP_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.01)
    except BaseException:
        await client.close()
        raise
    port = sock.getsockname()[1]
    log.info("gateway listening on %s://%s:%d (coordinator %s, %s, %s)", config.scheme, config.host, port,
             config.coordinator, "TLS" if tls else "plaintext",
             "bearer token" if config.auth_token else "no token")
    return RunningGateway(server, task, client, port)


def run(config: GatewayConfig) -> None:
    """Serve until SIGTERM/SIGINT (`specdec serve gateway`)."""
    asyncio.run(serving.serve_until_signal(start(config), config.grace_s))
