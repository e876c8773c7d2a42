"""grpc.aio server plumbing shared by the three services: errors, health, reflection, shutdown.

Servicers only translate protobuf <-> core calls; exceptions they let through become
status codes here (`ErrorInterceptor`), like TGI's interceptor.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from specdec.rpc.security import ServerSecurity

log = logging.getLogger(__name__)

# Set by a launcher (specdec up, the process stack) in each service's environment: the pid of
# the launcher, whose death (SIGKILL, an OOM kill, a closed terminal) must take the service down
# with it instead of leaving an orphan holding a model in memory.
PARENT_PID_ENV = "SPECDEC_PARENT_PID"
PARENT_POLL_S = 0.5

# Registers a servicer on a server: (server) -> None
Registration = Callable[[grpc.aio.Server], None]


class Malformed:
    """A request whose bytes did not parse; answered INVALID_ARGUMENT (grpc itself would
    answer UNKNOWN, as for a bug)."""

    def __init__(self, error: Exception):
        self.error = error

    def __str__(self) -> str:
        return f"malformed request: {self.error}: send a serialized message of the rpc's request type"


def _tolerant(deserialize):
    """`deserialize` that returns Malformed instead of raising."""
    if deserialize is None:
        return None

    def parse(data: bytes):
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, bad UTF-8 in a string field, ...
            return Malformed(exc)

    return parse


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps exceptions escaping a handler to status codes, the first matching class wins;
    anything unmapped is a bug and reaches the client as UNKNOWN (and the server log)."""

    def __init__(self, codes: Mapping[type[BaseException], grpc.StatusCode]):
        self.codes = dict(codes)

    def code_for(self, exc: BaseException) -> grpc.StatusCode | None:
        for kind, code in self.codes.items():
            if isinstance(exc, kind):
                return code
        return None

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or (handler.request_streaming and not handler.response_streaming):
            return handler  # no client-streaming rpcs of ours
        kwargs = dict(
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        if handler.stream_stream:
            if details.method.startswith("/grpc.reflection."):
                return handler  # reflection's own stream
            return grpc.stream_stream_rpc_method_handler(self._bidi(handler.stream_stream), **kwargs)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary), **kwargs)
        return grpc.unary_stream_rpc_method_handler(self._streaming(handler.unary_stream), **kwargs)

    def _unary(self, behavior):
        async def call(request, context):
            if isinstance(request, Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
            try:
                return await behavior(request, context)
            except Exception as exc:
                await self._abort(exc, context)

        return call

    def _streaming(self, behavior):
        async def call(request, context):
            if isinstance(request, Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
            try:
                async for response in behavior(request, context):
                    yield response
            except Exception as exc:
                await self._abort(exc, context)

        return call

    def _bidi(self, behavior):
        async def call(requests, context):
            async def checked():
                async for request in requests:
                    if isinstance(request, Malformed):
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
                    yield request

            try:
                async for response in behavior(checked(), context):
                    yield response
            except Exception as exc:
                await self._abort(exc, context)

        return call

    async def _abort(self, exc: Exception, context) -> None:
        code = self.code_for(exc)
        if code is None:
            raise exc
        await context.abort(code, str(exc))


@dataclass
class Running:
    """A started service: what every launcher gets back from a service's `start(config)`.

    `stop()` drains (health NOT_SERVING, then `grace_s` for in-flight calls) and closes
    what the service opened besides its server (worker channels, discovery, telemetry).
    """

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    servicer: object  # the service's servicer (tests and stacks read its state)
    closers: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)

    async def stop(self, grace_s: float | None = 0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        for close in reversed(self.closers):
            done = close()
            if asyncio.iscoroutine(done):
                await done
        self.closers = []


async def start(
    address: str,
    services: Sequence[tuple[str, Registration]],
    errors: Mapping[type[BaseException], grpc.StatusCode],
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    security: ServerSecurity = ServerSecurity(),
    servicer: object = None,
) -> Running:
    """Start serving `services` (full name, registration) with health and reflection.
    `interceptors` run outside the error mapping; `security` (TLS, token, session binding:
    specdec.rpc.security) inside them."""
    server = grpc.aio.server(interceptors=[*interceptors, *security.interceptors(), ErrorInterceptor(errors)])
    for _, register in services:
        register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [name for name, _ in services]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    try:
        port = security.listen(server, address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc} (is the port taken?)") from None
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = address.rsplit(":", 1)[0]
    log.info("%s listening on %s:%d (%s)", ", ".join(names), host, port, security.describe())
    return Running(server, port, health_servicer, servicer)


async def serve_until_signal(starting: Awaitable[Running], grace_s: float) -> None:
    """Start a service, serve until SIGTERM/SIGINT, then drain for `grace_s` and close."""
    running = await starting
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watch = asyncio.create_task(watch_parent(launcher_pid(), stop))
    try:
        await stop.wait()
        log.info("shutting down (grace %.1fs)", grace_s)
    finally:
        watch.cancel()
        await running.stop(grace_s)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def launcher_pid() -> int | None:
    """The launcher this process must not outlive (PARENT_PID_ENV), if one started it."""
    value = os.environ.get(PARENT_PID_ENV, "")
    return int(value) if value.isdigit() else None


async def watch_parent(pid: int | None, stop: asyncio.Event) -> None:
    """Set `stop` once the launcher `pid` is no longer this process's parent: it died and we
    were handed to init (or a subreaper). A parent-pid watch, not PR_SET_PDEATHSIG: that fires
    when the launcher's forking *thread* ends and is Linux-only."""
    if pid is None:
        return
    while not stop.is_set():
        if os.getppid() != pid:
            log.warning("the launcher (pid %d) is gone: shutting down", pid)
            stop.set()
            return
        await asyncio.sleep(PARENT_POLL_S)
