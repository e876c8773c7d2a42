"""The synchronous client.

    with Client("127.0.0.1:50051") as client:
        for chunk in client.generate_stream("def fib(n):", max_new_tokens=64, mode="pearl"):
            print(chunk.text, end="")
        print(chunk.finish_reason, chunk.stats.mean_acceptance_length)
"""

from __future__ import annotations

import random
import time
from typing import Iterator, Sequence

import grpc

from specdec.client import tracing as _tracing
from specdec.client.errors import from_rpc_error, trailing_metadata
from specdec.client.types import Chunk, Completion, Info, build_request
from specdec.pb.v1 import common_pb2, coordinator_pb2_grpc
from specdec.rpc.retry_after import retry_after_s
from specdec.rpc.security import client_tls, open_channel

BACKOFF_S = 0.1  # first retry delay; doubles per retry
MAX_BACKOFF_S = 2.0
HINT_JITTER = 0.1  # a server's retry hint is waited out plus up to this fraction


def backoff_delay(attempt: int) -> float:
    """Exponential backoff with jitter for retry `attempt` (0-based)."""
    return min(MAX_BACKOFF_S, BACKOFF_S * 2**attempt) * random.uniform(0.5, 1.0)


class Deadline:
    """A request's overall timeout, shared by its retries; None = no deadline."""

    def __init__(self, timeout: float | None):
        self.at = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())


def retry_delay(exc: grpc.RpcError, attempt: int, retries: int, received: bool, deadline: Deadline) -> float | None:
    """Seconds to wait before retrying the call that failed with `exc` (retry `attempt`,
    0-based), or None to give up and raise it.

    UNAVAILABLE waits an exponential backoff; RESOURCE_EXHAUSTED waits the coordinator's
    `retry-after-ms` hint (a little more, so clients refused together do not all come
    back at once) and is not retried without one: gRPC's own RESOURCE_EXHAUSTED, such as
    a message over the size limit, would fail again. Never once tokens were received
    (they cannot be taken back), never past `retries`, and never when the wait would end
    after the request's deadline: retries share the one deadline, which they never extend,
    and failing now with the real cause beats a DEADLINE_EXCEEDED later."""
    if received or attempt >= retries:
        return None
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        delay = backoff_delay(attempt)
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        hint = retry_after_s(trailing_metadata(exc))
        if hint is None:
            return None
        delay = hint * random.uniform(1.0, 1.0 + HINT_JITTER)
    else:
        return None
    left = deadline.left()
    return None if left is not None and delay >= left else delay


class Client:
    """A blocking client of the Coordinator service; `timeout` (s) bounds each request,
    `retries` is how often UNAVAILABLE (with backoff) and RESOURCE_EXHAUSTED (after the
    coordinator's retry hint) are retried before any token came, within `timeout`.
    `tracing`: a client span per call, its context sent along (None: when an OpenTelemetry
    SDK TracerProvider is installed, or `tracer_provider` is given).
    Security (specdec.rpc.security): `tls_ca` verifies the coordinator's certificate (TLS
    is on when any TLS file is given, or with tls=True and the default roots),
    `client_cert`/`client_key` for mutual TLS, `token` is sent as a bearer token."""

    def __init__(
        self, address: str, timeout: float | None = None, retries: int = 3, *,
        tracing: bool | None = None, tracer_provider=None,
        tls: bool | None = None, tls_ca: str | None = None, client_cert: str | None = None,
        client_key: str | None = None, tls_server_name: str | None = None, token: str | None = None,
    ):
        self.address = address
        self.timeout = timeout
        self.retries = retries
        self._channel = open_channel(address, client_tls(tls, tls_ca, client_cert, client_key, tls_server_name), token)
        channel = self._channel
        if _tracing.wanted(tracing, tracer_provider):
            channel = _tracing.traced_channel(channel, tracer_provider)
        self._stub = coordinator_pb2_grpc.CoordinatorStub(channel)

    def generate_stream(self, prompt: str | Sequence[int], **params) -> Iterator[Chunk]:
        """Yield chunks as tokens are committed; the last has finish_reason and stats.
        Closing the iterator early cancels the request on the server."""
        request = build_request(prompt, **params)
        deadline = Deadline(self.timeout)
        attempt = 0
        while True:
            call = self._stub.Generate(request, timeout=deadline.left())
            received = False
            try:
                for message in call:
                    received = True
                    yield Chunk.from_pb(message)
                return
            except grpc.RpcError as exc:
                delay = retry_delay(exc, attempt, self.retries, received, deadline)
                if delay is None:
                    raise from_rpc_error(exc) from None
            finally:
                call.cancel()
            time.sleep(delay)
            attempt += 1

    def complete(self, prompt: str | Sequence[int], **params) -> Completion:
        """Generate to the end and return the whole result at once."""
        request = build_request(prompt, **params)
        return Completion.from_pb(self._unary(self._stub.Complete, request))

    def info(self) -> Info:
        return Info.from_pb(self._unary(self._stub.GetInfo, common_pb2.GetInfoRequest()))

    def _unary(self, method, request):
        deadline = Deadline(self.timeout)
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=deadline.left())
            except grpc.RpcError as exc:
                delay = retry_delay(exc, attempt, self.retries, False, deadline)
                if delay is None:
                    raise from_rpc_error(exc) from None
            time.sleep(delay)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
