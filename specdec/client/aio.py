"""The asyncio client: the same API as `Client`, with coroutines and async iterators.

    async with AsyncClient("127.0.0.1:50051") as client:
        async for chunk in client.generate_stream("def fib(n):", mode="pearl"):
            print(chunk.text, end="")
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Sequence

import grpc

from specdec.client import tracing as _tracing
from specdec.client.client import Deadline, retry_delay
from specdec.client.errors import from_rpc_error
from specdec.client.types import Chunk, Completion, Info, build_request
from specdec.pb.v1 import common_pb2, coordinator_pb2_grpc
from specdec.rpc.security import client_tls, open_aio_channel


class AsyncClient:
    """An asyncio client of the Coordinator service (create it inside the event loop);
    `tracing` / `tracer_provider` and the TLS / token arguments as for `Client`."""

    def __init__(
        self, address: str, timeout: float | None = None, retries: int = 3, *,
        tracing: bool | None = None, tracer_provider=None,
        tls: bool | None = None, tls_ca: str | None = None, client_cert: str | None = None,
        client_key: str | None = None, tls_server_name: str | None = None, token: str | None = None,
    ):
        self.address = address
        self.timeout = timeout
        self.retries = retries
        traced = _tracing.wanted(tracing, tracer_provider)
        self._channel = open_aio_channel(
            address, client_tls(tls, tls_ca, client_cert, client_key, tls_server_name), token,
            interceptors=_tracing.aio_interceptors(tracer_provider) if traced else (),
        )
        self._stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)

    async def generate_stream(self, prompt: str | Sequence[int], **params) -> AsyncIterator[Chunk]:
        """Yield chunks as tokens are committed; the last has finish_reason and stats.
        Closing the iterator (aclose, or cancelling the task) cancels the request."""
        request = build_request(prompt, **params)
        deadline = Deadline(self.timeout)
        attempt = 0
        while True:
            call = self._stub.Generate(request, timeout=deadline.left())
            received = False
            try:
                async for message in call:
                    received = True
                    yield Chunk.from_pb(message)
                return
            except grpc.aio.AioRpcError as exc:
                delay = retry_delay(exc, attempt, self.retries, received, deadline)
                if delay is None:
                    raise from_rpc_error(exc) from None
            finally:
                call.cancel()
            await asyncio.sleep(delay)
            attempt += 1

    async def complete(self, prompt: str | Sequence[int], **params) -> Completion:
        request = build_request(prompt, **params)
        return Completion.from_pb(await self._unary(self._stub.Complete, request))

    async def info(self) -> Info:
        return Info.from_pb(await self._unary(self._stub.GetInfo, common_pb2.GetInfoRequest()))

    async def _unary(self, method, request):
        deadline = Deadline(self.timeout)
        for attempt in range(self.retries + 1):
            try:
                return await method(request, timeout=deadline.left())
            except grpc.aio.AioRpcError as exc:
                delay = retry_delay(exc, attempt, self.retries, False, deadline)
                if delay is None:
                    raise from_rpc_error(exc) from None
            await asyncio.sleep(delay)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
