"""TLS, mutual TLS and bearer tokens for the three services and their clients.

Server side (`ServerSecurity`, used by specdec.rpc.serving.start):
- `--tls-cert/--tls-key`: serve TLS with that certificate chain and key;
- `--tls-ca` as well: mutual TLS. Clients must present a certificate signed by that
  CA bundle; the TLS handshake itself refuses anyone else, before any handler runs;
- `--auth-token` (coordinator): every call must carry `authorization: Bearer <token>`,
  else UNAUTHENTICATED. Health checks stay open (probes carry no token); reflection
  needs the token like everything else (grpcurl -H "authorization: Bearer ...").

Client side (`ChannelTLS`, `open_channel`, `open_aio_channel`): verify the server
against a CA bundle (or gRPC's default roots), present a client certificate, attach
the token. Used by the SDK, the CLI and the coordinator's channels to the workers:
the coordinator dials the workers with TLS whenever it serves TLS, verifies them
against its `--tls-ca` and presents its own serving certificate as its client
identity (one certificate per pod, as the Helm chart mounts it; it therefore needs
both the serverAuth and clientAuth extended key usages, as scripts/make_certs.py
issues them).

Certificates and keys are PEM files read once at startup: a rotated certificate takes
effect when the service restarts (knowingly simple; a rollout does it).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

import grpc

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"  # gRPC metadata keys are lowercase
OPEN_METHODS = ("/grpc.health.v1.Health/",)  # served without a token: kubelet and exec probes


def read_pem(path: str, what: str) -> bytes:
    """The bytes of a PEM file, or a ValueError saying which flag points where."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path!r}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{what} {path!r} is not a PEM file (expected a -----BEGIN ...----- block)")
    return data


def _check_pair(cert: str | None, key: str | None, names: str) -> None:
    if bool(cert) != bool(key):
        raise ValueError(f"give both {names} (a certificate and its private key), or neither")


@dataclass(frozen=True)
class ServerTLS:
    """What a service serves with; nothing given = plaintext."""

    cert: str | None = None  # PEM certificate chain the service presents (--tls-cert)
    key: str | None = None  # its PEM private key (--tls-key)
    ca: str | None = None  # PEM CA bundle: clients must present a certificate it signed (--tls-ca)

    def __post_init__(self):
        _check_pair(self.cert, self.key, "--tls-cert and --tls-key")
        if self.ca and not self.cert:
            raise ValueError("--tls-ca needs --tls-cert and --tls-key: client certificates are checked over TLS only")
        for path, what in ((self.cert, "--tls-cert"), (self.key, "--tls-key"), (self.ca, "--tls-ca")):
            if path:
                read_pem(path, what)  # fail at startup, not at the first handshake

    @property
    def enabled(self) -> bool:
        return bool(self.cert)

    @property
    def mutual(self) -> bool:
        return bool(self.ca)

    def credentials(self) -> grpc.ServerCredentials:
        pair = (read_pem(self.key, "--tls-key"), read_pem(self.cert, "--tls-cert"))
        ca = read_pem(self.ca, "--tls-ca") if self.ca else None
        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)

    def as_client(self) -> "ChannelTLS | None":
        """How this service dials its peers (the coordinator its workers): TLS if it
        serves TLS, verified against its CA, with its own certificate as identity."""
        return ChannelTLS(ca=self.ca, cert=self.cert, key=self.key) if self.enabled else None


@dataclass(frozen=True)
class ChannelTLS:
    """How a client dials over TLS. No `ca`: gRPC's default roots (a public CA, or the
    file named by GRPC_DEFAULT_SSL_ROOTS_FILE_PATH)."""

    ca: str | None = None  # PEM CA bundle that signed the server's certificate
    cert: str | None = None  # PEM client certificate chain, for servers that require one (mTLS)
    key: str | None = None  # its PEM private key
    server_name: str | None = None  # name to expect in the server certificate, if not the address's host

    def __post_init__(self):
        _check_pair(self.cert, self.key, "a client certificate and key")

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=read_pem(self.ca, "CA bundle") if self.ca else None,
            private_key=read_pem(self.key, "client key") if self.key else None,
            certificate_chain=read_pem(self.cert, "client certificate") if self.cert else None,
        )

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def client_tls(
    tls: bool | None = None,
    tls_ca: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    tls_server_name: str | None = None,
) -> ChannelTLS | None:
    """The SDK's arguments as a ChannelTLS; `tls=None` turns TLS on when any file is given."""
    if tls is None:
        tls = bool(tls_ca or client_cert or client_key)
    if not tls:
        if tls_ca or client_cert or client_key:
            raise ValueError("tls=False but TLS files were given: drop them or set tls=True")
        return None
    return ChannelTLS(ca=tls_ca, cert=client_cert, key=client_key, server_name=tls_server_name)


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return ((AUTHORIZATION, f"Bearer {token}"),) if token else ()


# --------------------------------------------------------------------------- client channels


class _Metadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata (the bearer token) to every call of a sync channel."""

    def __init__(self, metadata: Sequence[tuple[str, str]]):
        self.metadata = tuple(metadata)

    def _details(self, details):
        return _CallDetails(details.method, details.timeout, (*(details.metadata or ()), *self.metadata),
                            details.credentials, details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait_for_ready, compression


def _aio_metadata_interceptors(metadata: Sequence[tuple[str, str]]) -> list:
    """aio sorts interceptors by their first matching kind, so one class per kind."""
    metadata = tuple(metadata)

    def details(d):
        extra = grpc.aio.Metadata(*(d.metadata or ()), *metadata)
        return grpc.aio.ClientCallDetails(d.method, d.timeout, extra, d.credentials, d.wait_for_ready)

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, d, request):
            return await continuation(details(d), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation, d, request):
            return await continuation(details(d), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation, d, requests):
            return await continuation(details(d), requests)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation, d, requests):
            return await continuation(details(d), requests)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]


def open_channel(address: str, tls: ChannelTLS | None = None, token: str | None = None, options=()) -> grpc.Channel:
    """A sync channel: TLS when `tls` is given, the bearer token on every call."""
    options = [*options, *(tls.options() if tls else ())]
    if tls is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, tls.credentials(), options=options)
    return grpc.intercept_channel(channel, _Metadata(bearer_metadata(token))) if token else channel


def open_aio_channel(
    address: str, tls: ChannelTLS | None = None, token: str | None = None, options=(), interceptors=()
) -> grpc.aio.Channel:
    """An asyncio channel: TLS when `tls` is given, the bearer token on every call."""
    options = [*options, *(tls.options() if tls else ())]
    interceptors = [*interceptors, *(_aio_metadata_interceptors(bearer_metadata(token)) if token else ())]
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors or None)
    return grpc.aio.secure_channel(address, tls.credentials(), options=options, interceptors=interceptors or None)


# --------------------------------------------------------------------------- server side


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without `authorization: Bearer <token>` (UNAUTHENTICATED), except
    OPEN_METHODS. Compared in constant time (digests, so the length does not leak either)."""

    def __init__(self, token: str):
        if not token:
            raise ValueError("the auth token is empty")
        self._expected = _digest(token.encode())

    def authorized(self, metadata) -> bool:
        ok = False
        for key, value in metadata or ():
            if key != AUTHORIZATION or not isinstance(value, str):
                continue
            scheme, _, credential = value.partition(" ")
            # no early exit: every presented value costs the same
            matches = hmac.compare_digest(_digest(credential.strip().encode()), self._expected)
            ok |= scheme.lower() == "bearer" and matches
        return ok

    async def intercept_service(self, continuation, details):
        if details.method.startswith(OPEN_METHODS) or self.authorized(details.invocation_metadata):
            return await continuation(details)
        has_token = any(key == AUTHORIZATION for key, _ in details.invocation_metadata or ())
        reason = "the bearer token is not valid" if has_token else "no bearer token"
        return refusal(
            await continuation(details), grpc.StatusCode.UNAUTHENTICATED,
            f"{reason}: send metadata 'authorization: Bearer <token>' (Client(token=...), specdec generate --token)",
        )


def refusal(handler, code: grpc.StatusCode, details: str):
    """A handler of the same shape as `handler` that only aborts with `code`."""

    async def unary_in(request, context):
        await context.abort(code, details)

    async def stream_in(requests, context):
        await context.abort(code, details)

    if handler is None:  # unknown method: do not tell the unauthenticated which exist
        return grpc.unary_unary_rpc_method_handler(unary_in)
    kwargs = dict(request_deserializer=None, response_serializer=handler.response_serializer)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(stream_in, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(stream_in, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(unary_in, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary_in, **kwargs)


@dataclass(frozen=True)
class ServerSecurity:
    """Everything about who may call a service: its TLS, the coordinator's token, and
    (workers) whether sessions are bound to their creator (specdec.rpc.session_binding)."""

    tls: ServerTLS = ServerTLS()
    auth_token: str | None = field(default=None, repr=False)
    bind_sessions: bool = False

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """Outermost first: authentication before anything else runs."""
        out: list[grpc.aio.ServerInterceptor] = []
        if self.auth_token:
            out.append(TokenAuthInterceptor(self.auth_token))
        if self.bind_sessions:
            from specdec.rpc.session_binding import SessionBindingInterceptor

            out.append(SessionBindingInterceptor())
        return out

    def listen(self, server: grpc.aio.Server, address: str) -> int:
        """Add the listening port (TLS or plaintext); returns the port bound."""
        if self.auth_token and not self.tls.enabled:
            log.warning("--auth-token without --tls-cert: the token crosses the network in plaintext")
        if not self.tls.enabled:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, self.tls.credentials())

    def describe(self) -> str:
        parts = ["mutual TLS" if self.tls.mutual else "TLS" if self.tls.enabled else "plaintext"]
        if self.auth_token:
            parts.append("bearer token")
        return ", ".join(parts)


def read_token(token: str | None, token_file: str | None) -> str | None:
    """The auth token from a flag/env value or a file (one line; a Kubernetes Secret)."""
    if token and token_file:
        raise ValueError("give --auth-token or --auth-token-file, not both")
    if token_file:
        try:
            with open(os.path.expanduser(token_file), encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise ValueError(f"cannot read --auth-token-file {token_file!r}: {exc.strerror}") from None
        if not token:
            raise ValueError(f"--auth-token-file {token_file!r} is empty")
    token = (token or "").strip() or None
    if token is not None and any(c.isspace() for c in token):
        raise ValueError("the auth token must not contain whitespace")
    return token
