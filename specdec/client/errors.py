"""Typed errors of the client SDK, one per gRPC status the coordinator uses.

Each also derives from the matching built-in where one fits, so `except ValueError`
or `except TimeoutError` works too.
"""

from __future__ import annotations

from specdec.rpc.retry_after import retry_after_s


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
    """RESOURCE_EXHAUSTED: the coordinator is at its concurrency limit. `retry_after_s` is
    its estimate of when a slot frees (trailing metadata `retry-after-ms`; None if it sent
    none). The SDK has already waited and retried while `retries` and the timeout allowed."""

    code = "RESOURCE_EXHAUSTED"
    retry_after_s: float | None = None


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


def trailing_metadata(exc) -> tuple:
    """A failed call's trailing metadata as (key, value) pairs; () when it has none to give."""
    try:
        return tuple(exc.trailing_metadata() or ())
    except (AttributeError, TypeError, ValueError):  # not a call object (a test's fake), or no metadata yet
        return ()


def from_rpc_error(exc) -> SpecdecError:
    """A grpc.RpcError (sync or aio) as a typed error."""
    error = error_for(exc.code().name, exc.details() or "")
    if isinstance(error, OverloadedError):
        error.retry_after_s = retry_after_s(trailing_metadata(exc))
    return error
