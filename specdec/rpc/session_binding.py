"""Sessions on a worker belong to the caller that created them.

Threat model. A worker keeps a KV cache per session id, and a call may say "continue
after the first `start` tokens you hold" (`start > 0`). The session id is an
identifier, not a secret: it shows up in logs, traces and error messages. Without
binding, anyone who can reach a worker and learns a session id could send
`start = N` on it and get draft tokens (or verdicts) conditioned on that session's
hidden prefix, i.e. read another request's prompt and output through the model;
or crop, extend or release it. Responses never contain cached tokens, but a forward
conditioned on them is a read all the same.

Binding. The worker never uses the caller's session id as the cache key. It keys the
cache by SHA-256(peer identity, session key, session id), where
- the peer identity is the client certificate's identity under mutual TLS (empty
  otherwise), so another client identity never reaches the session even with the key;
- the session key is metadata `specdec-session-key`, which the coordinator derives as
  HMAC-SHA256(a random per-process secret, session id): different for every session,
  never logged, unguessable without the coordinator's secret (which never leaves it).
A caller that lacks either lands in a different, empty session: `start > 0` then
fails with FAILED_PRECONDITION (what a restarted worker answers, so the coordinator's
re-prefill path covers it) and `start = 0` computes only on the tokens the caller sent
itself. Nothing is compared, so there is no timing oracle and no way to squat a
session id before its owner uses it. Without TLS the key crosses the network in
clear: binding then protects against callers that learn session ids, not against
those who can read the coordinator's traffic (they see the tokens anyway; use mTLS).

Not covered: a caller who can reach a worker can still fill its session store
(evicting others' sessions: recoverable by re-prefill, a denial of service only) and
share its batches (timing). Keep workers reachable from the coordinator only (mTLS,
the chart's NetworkPolicy).
"""

from __future__ import annotations

import hashlib
import hmac
import os

import grpc

SESSION_KEY = "specdec-session-key"  # metadata key (lowercase, as gRPC requires)
MAX_SESSION_ID = 256  # characters; the coordinator's are 32 (uuid4 hex)


class SessionKeys:
    """The coordinator's side: a key per session id from a per-process secret."""

    def __init__(self, secret: bytes | None = None):
        self._secret = secret or os.urandom(32)

    def key(self, session_id: str) -> str:
        return hmac.new(self._secret, session_id.encode(), hashlib.sha256).hexdigest()

    def interceptors(self) -> list:
        """aio client interceptors adding the key to every call whose request has a
        session_id (aio sorts interceptors by their first matching kind: one class each)."""
        keys = self

        def details(d, request):
            session_id = getattr(request, "session_id", "")
            if not session_id:
                return d
            metadata = grpc.aio.Metadata(*(d.metadata or ()), (SESSION_KEY, keys.key(session_id)))
            return grpc.aio.ClientCallDetails(d.method, d.timeout, metadata, d.credentials, d.wait_for_ready)

        class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
            async def intercept_unary_unary(self, continuation, d, request):
                return await continuation(details(d, request), request)

        class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
            async def intercept_unary_stream(self, continuation, d, request):
                return await continuation(details(d, request), request)

        return [UnaryUnary(), UnaryStream()]


def bound_session_id(identity: bytes, key: str, session_id: str) -> str:
    """The worker's cache key for `session_id` presented by `identity` with `key`."""
    h = hashlib.sha256()
    for part in (identity, key.encode(), session_id.encode()):
        h.update(len(part).to_bytes(8, "big"))  # length-prefixed: no ambiguity between parts
        h.update(part)
    return h.hexdigest()


def peer_identity(context) -> bytes:
    """The client certificate's identities (SANs, else CN) under mTLS; b"" otherwise."""
    identities = context.peer_identities()
    return b"\n".join(sorted(identities)) if identities else b""


def session_key(context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == SESSION_KEY and isinstance(value, str):
            return value
    return ""


class SessionBindingInterceptor(grpc.aio.ServerInterceptor):
    """The worker's side: rewrites `request.session_id` to its bound id before the
    servicer sees it, for every rpc with a unary request that has a session_id field
    (Draft, Verify, Release and any added later), and for every message of the session
    streams (VerifyStream, DraftStream: one session per stream, keyed by the stream's
    metadata)."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or (handler.request_streaming and not handler.stream_stream):
            return handler
        kwargs = dict(
            request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
        if handler.stream_stream:
            if details.method.startswith("/grpc.reflection."):
                return handler
            return grpc.stream_stream_rpc_method_handler(self._bidi(handler.stream_stream), **kwargs)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(self._streaming(handler.unary_stream), **kwargs)
        return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary), **kwargs)

    @staticmethod
    async def _bind(request, context) -> None:
        session_id = getattr(request, "session_id", None)
        if not isinstance(session_id, str) or not session_id:
            return  # no session (GetInfo), or empty: the servicer refuses that in words
        if len(session_id) > MAX_SESSION_ID:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"session_id has {len(session_id)} characters; at most {MAX_SESSION_ID}",
            )
        request.session_id = bound_session_id(peer_identity(context), session_key(context), session_id)

    def _bidi(self, behavior):
        """A session stream (VerifyStream, DraftStream): every message is bound with the
        stream's metadata, and must name the session its first message named."""

        async def call(requests, context):
            async def bound():
                first = bound_id = None
                async for request in requests:
                    session_id = request.session_id
                    if first is None:
                        first = session_id
                        await self._bind(request, context)
                        bound_id = request.session_id  # the stream's metadata and peer do not change
                    elif session_id != first:
                        await context.abort(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            "a stream carries one session: open a new stream for another session_id",
                        )
                    else:
                        request.session_id = bound_id
                    yield request

            async for response in behavior(bound(), context):
                yield response

        return call

    def _unary(self, behavior):
        async def call(request, context):
            await self._bind(request, context)
            return await behavior(request, context)

        return call

    def _streaming(self, behavior):
        async def call(request, context):
            await self._bind(request, context)
            async for response in behavior(request, context):
                yield response

        return call
