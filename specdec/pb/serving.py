"""grpc.aio server plumbing shared by the three services: errors, health, reflection, shutdown.

Servicers only translate protobuf <-> core calls; exceptions they let through become
status codes here (`ErrorInterceptor`), like TGI's interceptor.py.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Callable, Mapping, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from specdec.pb.security import ServerSecurity

log = logging.getLogger(__name__)

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
        if handler is None or handler.request_streaming:
            return handler  # no client-streaming rpcs of ours (reflection's pass through)
        kwargs = dict(
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
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

    async def _abort(self, exc: Exception, context) -> None:
        code = self.code_for(exc)
        if code is None:
            raise exc
        await context.abort(code, str(exc))


async def start(
    address: str,
    services: Sequence[tuple[str, Registration]],
    errors: Mapping[type[BaseException], grpc.StatusCode],
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    security: ServerSecurity = ServerSecurity(),
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Start serving `services` (full name, registration) with health and reflection;
    returns (server, port, health servicer). `interceptors` run outside the error mapping;
    `security` (TLS, token, session binding: specdec.pb.security) inside them."""
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
    return server, port, health_servicer


async def serve(
    address: str,
    services: Sequence[tuple[str, Registration]],
    errors: Mapping[type[BaseException], grpc.StatusCode],
    grace_s: float,
    ready: Callable[[int], None] | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    security: ServerSecurity = ServerSecurity(),
) -> None:
    """Serve `services` (full name, registration) with health and reflection until
    SIGTERM/SIGINT, then drain for `grace_s`. `ready(port)` is called once listening."""
    server, port, health_servicer = await start(address, services, errors, interceptors, security)
    if ready is not None:
        ready(port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down (grace %.1fs)", grace_s)
    finally:
        await health_servicer.enter_graceful_shutdown()
        await server.stop(grace_s)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
