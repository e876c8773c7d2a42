"""The retry hint a RESOURCE_EXHAUSTED answer carries: trailing metadata
`retry-after-ms: <integer milliseconds>`, the coordinator's estimate of when a slot frees.

Shared by the coordinator (which writes it) and the client SDK (which waits that long
before its retry); any gRPC client can read it the same way. Torch-free: the SDK imports it.

Why a metadata key of our own and not `google.rpc.RetryInfo` in the rich status details:
that needs googleapis-common-protos and a `grpc-status-details-bin` parse in every client,
while a plain ASCII key reads in one line from grpcurl, curl-like tools or any language.
(gRPC's own `grpc-retry-pushback-ms` is reserved for its built-in retry policy, which
would then retry on our behalf and outside our deadline rules.)
"""

from __future__ import annotations

from typing import Iterable

RETRY_AFTER_KEY = "retry-after-ms"


def retry_after_metadata(milliseconds: int) -> tuple[tuple[str, str], ...]:
    """The trailing metadata carrying a hint of `milliseconds`."""
    return ((RETRY_AFTER_KEY, str(int(milliseconds))),)


def retry_after_s(metadata: Iterable | None) -> float | None:
    """The hint in a call's trailing metadata, in seconds; None when absent or unreadable
    (gRPC's own RESOURCE_EXHAUSTED, e.g. a message over the size limit, carries none and
    must not be retried)."""
    for key, value in metadata or ():
        if key == RETRY_AFTER_KEY:
            text = value.decode() if isinstance(value, bytes) else str(value)
            try:
                milliseconds = int(text)
            except ValueError:
                return None
            return milliseconds / 1000.0 if milliseconds >= 0 else None
    return None
