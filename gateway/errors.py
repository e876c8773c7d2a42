"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}, with the HTTP
status OpenAI's clients expect (the openai package picks its exception class by status:
400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 429 RateLimitError, ...).

The SDK's typed errors (one per gRPC status) map onto statuses here, so the coordinator's
message, which names the bad field, reaches the HTTP client unchanged.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from specdec.client import (
    DeadlineExceededError,
    InvalidRequestError,
    OverloadedError,
    RequestCancelledError,
    SpecdecError,
    UnauthenticatedError,
    UnavailableError,
)

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
RATE_LIMIT = "rate_limit_error"
UNAVAILABLE = "service_unavailable_error"
TIMEOUT = "timeout_error"
SERVER = "server_error"

# SDK error -> (HTTP status, error.type); the first matching class wins
SDK_ERRORS: tuple[tuple[type[SpecdecError], int, str], ...] = (
    (InvalidRequestError, 400, INVALID_REQUEST),
    (UnauthenticatedError, 401, AUTHENTICATION),
    (OverloadedError, 429, RATE_LIMIT),
    (UnavailableError, 503, UNAVAILABLE),
    (RequestCancelledError, 503, UNAVAILABLE),  # the coordinator cancels only while shutting down
    (DeadlineExceededError, 504, TIMEOUT),
)


class GatewayError(Exception):
    """An error answered in OpenAI's shape with `status`."""

    def __init__(
        self, status: int, message: str, type: str = INVALID_REQUEST, param: str | None = None,
        code: str | None = None, headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def unsupported(param: str, why: str) -> GatewayError:
    """400 for an OpenAI parameter this server does not serve, named as such."""
    return GatewayError(400, f"{param} is not supported by this server: {why}", param=param,
                        code="unsupported_parameter")


def from_sdk(exc: SpecdecError) -> GatewayError:
    """The HTTP error for an SDK error. 429 carries the coordinator's retry hint as
    Retry-After (whole seconds, the standard) and retry-after-ms (what the openai package
    reads first); a RESOURCE_EXHAUSTED without a hint (gRPC's own) gets neither."""
    for kind, status, type in SDK_ERRORS:
        if isinstance(exc, kind):
            break
    else:
        log.error("coordinator error %s: %s", exc.code, exc.details)
        return GatewayError(500, f"the coordinator failed ({exc.code}): {exc.details}", SERVER)
    headers = {}
    if isinstance(exc, OverloadedError) and exc.retry_after_s is not None:
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s))),
                   "retry-after-ms": str(max(1, round(exc.retry_after_s * 1000)))}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return GatewayError(status, exc.details or exc.code, type, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The first pydantic error as (message, param), in words a client can act on."""
    errors = exc.errors()
    if not errors:
        return "the request body is not valid", None
    first = errors[0]
    where = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(where) or None
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {first.get('msg')}", None
    if first.get("type") == "extra_forbidden":
        return f"unrecognized request argument supplied: {param}", param
    if first.get("type") == "missing" and param:
        return f"{param} is required", param
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{param or 'body'}: {first.get('msg')}{more}", param


def install(app: FastAPI) -> None:
    """Answer every error, FastAPI's own included, in OpenAI's shape."""

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError):
        return exc.response()

    @app.exception_handler(SpecdecError)
    async def sdk_error(request: Request, exc: SpecdecError):
        return from_sdk(exc).response()

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        # FastAPI answers 422 by default; OpenAI's clients expect 400 for a malformed request
        message, param = _validation_message(exc)
        return GatewayError(400, message, param=param).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        type = INVALID_REQUEST if exc.status_code < 500 else SERVER
        return GatewayError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", type,
                            code=code, headers=dict(exc.headers or {})).response()

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return GatewayError(500, f"internal error: {type(exc).__name__}", SERVER).response()
