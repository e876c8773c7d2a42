"""The bearer token check of the /v1 routes (GET /health stays open for probes).

The same rule as the coordinator's gRPC check (specdec.rpc.security.TokenAuthInterceptor):
`Authorization: Bearer <token>`, compared in constant time over digests, so neither the
token's content nor its length leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from gateway.errors import AUTHENTICATION, GatewayError


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def bearer_check(token: str | None):
    """A FastAPI dependency that refuses requests without the token (401); a no-op when
    `token` is None."""
    expected = _digest(token) if token else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization")
        scheme, _, credential = (header or "").partition(" ")
        matches = hmac.compare_digest(_digest(credential.strip()), expected)
        if scheme.lower() == "bearer" and matches:
            return
        reason = "the bearer token is not valid" if header else "no bearer token"
        raise GatewayError(
            401, f"{reason}: send 'Authorization: Bearer <token>' (the openai client: api_key=<token>)",
            AUTHENTICATION, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"},
        )

    return check
