"""The Python client SDK of the coordinator (sync and asyncio). Imports neither torch
nor transformers: only grpc and the generated protobuf modules.

    from specdec.client import Client
    with Client("127.0.0.1:50051") as client:
        result = client.complete("def add(a, b):", max_new_tokens=32, mode="pearl")
        result.text, result.stats.acceptance_rate
"""

from specdec.client.aio import AsyncClient
from specdec.client.client import Client
from specdec.client.errors import (
    DeadlineExceededError,
    InvalidRequestError,
    OverloadedError,
    RequestCancelledError,
    ServerError,
    SpecdecError,
    UnauthenticatedError,
    UnavailableError,
)
from specdec.client.types import Chunk, Completion, Info, Stats, build_request

__all__ = [
    "AsyncClient",
    "Chunk",
    "Client",
    "Completion",
    "DeadlineExceededError",
    "Info",
    "InvalidRequestError",
    "OverloadedError",
    "RequestCancelledError",
    "ServerError",
    "SpecdecError",
    "Stats",
    "UnauthenticatedError",
    "UnavailableError",
    "build_request",
]
