"""Typed errors of the client SDK, one per gRPC status the coordinator uses.

Each also derives from the matching built-in where one fits, so `except ValueError`
or `except TimeoutError` works too.
"""

from __future__ import annotations


class SpecdecError(Exception):
    """Base class; `code` is the gRPC status name, `details` the server's message."""

    code = "UNKNOWN"

    def __init__(self, details: str = "", code: str | None = None):
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code


class InvalidRequestError(SpecdecError, ValueError):
    """INVALID_ARGUMENT: a request field is wrong; the message names it."""

    code = "INVALID_ARGUMENT"


class OverloadedError(SpecdecError):
    """RESOURCE_EXHAUSTED: the coordinator is at its concurrency limit; retry later."""

    code = "RESOURCE_EXHAUSTED"


class UnavailableError(SpecdecError, ConnectionError):
    """UNAVAILABLE: the coordinator, or every target worker behind it, cannot be reached."""

    code = "UNAVAILABLE"


class DeadlineExceededError(SpecdecError, TimeoutError):
    """DEADLINE_EXCEEDED: the request ran past its timeout."""

    code = "DEADLINE_EXCEEDED"


class RequestCancelledError(SpecdecError):
    """CANCELLED: the request was cancelled."""

    code = "CANCELLED"


class UnauthenticatedError(SpecdecError, PermissionError):
    """UNAUTHENTICATED: no valid bearer token; pass `token=` (the coordinator's --auth-token)."""

    code = "UNAUTHENTICATED"


class ServerError(SpecdecError):
    """Any other status (INTERNAL, UNKNOWN, ...): a bug or a broken deployment."""


_BY_CODE = {
    cls.code: cls
    for cls in (InvalidRequestError, OverloadedError, UnavailableError, DeadlineExceededError, RequestCancelledError,
                UnauthenticatedError)
}


def error_for(code: str, details: str) -> SpecdecError:
    """The typed error for a gRPC status name (`grpc.StatusCode.X.name`)."""
    cls = _BY_CODE.get(code, ServerError)
    return cls(details, code=code)


def from_rpc_error(exc) -> SpecdecError:
    """A grpc.RpcError (sync or aio) as a typed error."""
    return error_for(exc.code().name, exc.details() or "")
