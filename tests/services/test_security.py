"""Security: TLS and mutual TLS on every service, the coordinator's bearer token, and
sessions bound to their creator on the workers (specdec.rpc.security,
specdec.rpc.session_binding). Two tiny stacks on 127.0.0.1: mutual TLS + token, and
TLS only; certificates from scripts/make_certs.py into tmp_path.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytest.importorskip("cryptography", reason="scripts/make_certs.py needs cryptography (the dev extra)")

from coordinator.remote import Workers  # noqa: E402
from specdec.client import AsyncClient, Client, UnauthenticatedError, UnavailableError  # noqa: E402
from specdec.core.policies import StopRule  # noqa: E402
from specdec.core.sampling import SamplingParams  # noqa: E402
from specdec.launch.stack import LocalStack  # noqa: E402
from specdec.pb.v1 import (  # noqa: E402  # noqa: E402
    common_pb2,
    draft_worker_pb2,
    draft_worker_pb2_grpc,
    target_worker_pb2,
    target_worker_pb2_grpc,
)
from specdec.rpc import security  # noqa: E402
from specdec.rpc.convert import rule_to_pb, sampling_to_pb  # noqa: E402
from specdec.rpc.security import (  # noqa: E402  # noqa: E402
    ChannelTLS,
    ServerTLS,
    TokenAuthInterceptor,
    open_aio_channel,
    open_channel,
)
from specdec.rpc.session_binding import SessionKeys, bound_session_id  # noqa: E402
from tests.helpers.paths import REPO  # noqa: E402
from tests.helpers.reference import reference  # noqa: E402

ROOT = REPO
TOKEN = "t0ken-" + uuid.uuid4().hex
STARTUP_S = 120.0
PROMPTS = [("the cat sat", 24), ("def add(a, b):", 17)]


# --------------------------------------------------------------------------- fixtures


def make_certs(folder: Path, *dns: str) -> Path:
    args = [sys.executable, str(ROOT / "scripts" / "make_certs.py"), "--out", str(folder), "--days", "2"]
    for name in dns:
        args += ["--dns", name]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    return folder


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"), "specdec.example")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory) -> Path:
    """Certificates from another CA: same names, not trusted by the stacks."""
    return make_certs(tmp_path_factory.mktemp("other-ca"))


@pytest.fixture(scope="module")
def mtls_stack(certs):
    with LocalStack(preset="tiny", seed=0, startup_timeout_s=STARTUP_S, tls_dir=certs, auth_token=TOKEN) as stack:
        yield stack


@pytest.fixture(scope="module")
def tls_stack(certs):
    with LocalStack(preset="tiny", seed=0, startup_timeout_s=STARTUP_S, tls_dir=certs, mtls=False) as stack:
        yield stack


def tls_of(folder: Path, identity: str | None) -> ChannelTLS:
    """Trust `folder`'s CA; present `identity` (tls | client) of it, or no certificate."""
    if identity is None:
        return ChannelTLS(ca=str(folder / "ca.crt"))
    ca, cert, key = (str(folder / name) for name in ("ca.crt", f"{identity}.crt", f"{identity}.key"))
    return ChannelTLS(ca=ca, cert=cert, key=key)


def health(address: str, tls: ChannelTLS | None, metadata=()) -> grpc.StatusCode:
    """OK when the health check answers SERVING, else the call's status code."""
    with open_channel(address, tls) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10.0, metadata=metadata
            )
        except grpc.RpcError as exc:
            return exc.code()
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return grpc.StatusCode.OK


# --------------------------------------------------------------------------- configuration


def test_bad_tls_configuration_fails_early_in_words(tmp_path, certs):
    crt, key, ca = (str(certs / f) for f in ("tls.crt", "tls.key", "ca.crt"))
    with pytest.raises(ValueError, match="both --tls-cert and --tls-key"):
        ServerTLS(cert=crt)
    with pytest.raises(ValueError, match="--tls-ca needs --tls-cert"):
        ServerTLS(ca=ca)
    with pytest.raises(ValueError, match="cannot read --tls-key"):
        ServerTLS(cert=crt, key=str(tmp_path / "missing.key"))
    (tmp_path / "junk.crt").write_text("not a certificate")
    with pytest.raises(ValueError, match="not a PEM file"):
        ServerTLS(cert=str(tmp_path / "junk.crt"), key=key)
    assert ServerTLS(cert=crt, key=key, ca=ca).mutual and not ServerTLS(cert=crt, key=key).mutual
    assert ServerTLS().as_client() is None and ServerTLS(cert=crt, key=key, ca=ca).as_client().cert == crt
    with pytest.raises(ValueError, match="client certificate and key"):
        security.client_tls(client_cert=crt)
    with pytest.raises(ValueError, match="tls=False"):
        security.client_tls(tls=False, tls_ca=ca)
    assert security.client_tls() is None and security.client_tls(tls=True) == ChannelTLS()


def test_token_sources_and_checks(tmp_path):
    (tmp_path / "token").write_text(" abc \n")
    assert security.read_token(None, str(tmp_path / "token")) == "abc" and security.read_token(" xyz ", None) == "xyz"
    assert security.read_token(None, None) is None and security.read_token("", None) is None
    with pytest.raises(ValueError, match="not both"):
        security.read_token("a", str(tmp_path / "token"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        security.read_token(None, str(tmp_path / "empty"))
    check = TokenAuthInterceptor("abc")
    assert check.authorized([("authorization", "Bearer abc")]) and check.authorized([("authorization", "bearer abc")])
    assert check.authorized([("authorization", "Bearer nope"), ("authorization", "Bearer abc")])
    for bad in ([], [("authorization", "Bearer ab")], [("authorization", "Basic abc")], [("authorization", "abc")],
                [("x-token", "Bearer abc")]):
        assert not check.authorized(bad), bad


def test_bound_session_ids_separate_identities_keys_and_ids():
    keys = SessionKeys()
    assert keys.key("s") == keys.key("s") != keys.key("t") != SessionKeys().key("t")
    ids = {bound_session_id(i, k, s) for i in (b"", b"a") for k in ("", "k") for s in ("s", "t")}
    assert len(ids) == 8
    assert bound_session_id(b"a", "bc", "d") != bound_session_id(b"ab", "c", "d")  # length-prefixed parts


# --------------------------------------------------------------------------- mutual TLS + token


def test_mtls_stack_greedy_equality(mtls_stack, tiny_engine):
    kwargs = mtls_stack.client_kwargs()
    with Client(mtls_stack.address, timeout=60.0, **kwargs) as client:
        for (prompt, n), mode in zip(PROMPTS, ("pearl", "sequential")):
            got = client.complete(prompt, max_new_tokens=n, mode=mode, ignore_eos=True)
            assert list(got.token_ids) == reference(tiny_engine, prompt, n), mode
            assert got.stats.reprefills == 0 and not got.stats.draft_fallback and got.stats.draft_tokens > 0

    async def stream():
        async with AsyncClient(mtls_stack.address, timeout=60.0, **kwargs) as client:
            return [t async for c in client.generate_stream(PROMPTS[0][0], max_new_tokens=PROMPTS[0][1],
                                                            mode="pearl", ignore_eos=True) for t in c.token_ids]

    assert asyncio.run(stream()) == reference(tiny_engine, *PROMPTS[0])


def test_the_coordinator_requires_the_bearer_token(mtls_stack, certs):
    kwargs = mtls_stack.client_kwargs()
    del kwargs["token"]
    for token in (None, "wrong", TOKEN + "x"):
        with Client(mtls_stack.address, timeout=30.0, token=token, **kwargs) as client:
            with pytest.raises(UnauthenticatedError, match="bearer token"):
                client.complete("hi", max_new_tokens=2)
            with pytest.raises(UnauthenticatedError):
                client.info()
    with Client(mtls_stack.address, timeout=30.0, **mtls_stack.client_kwargs()) as client:
        assert client.info().preset == "tiny"
    # probes carry no token: health stays open (over mTLS); reflection does not
    assert health(mtls_stack.address, tls_of(certs, "client")) == grpc.StatusCode.OK
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with open_channel(mtls_stack.address, tls_of(certs, "client")) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10.0
        )
        with pytest.raises(grpc.RpcError) as refused:
            list(call)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("service", ["coordinator", "draft", "target"])
def test_mtls_refuses_callers_without_a_trusted_certificate(mtls_stack, certs, other_ca, service):
    """The TLS handshake itself fails (UNAVAILABLE) before any handler runs."""
    address = getattr(mtls_stack, service).address
    assert health(address, tls_of(certs, "client")) == grpc.StatusCode.OK
    assert health(address, tls_of(certs, "tls")) == grpc.StatusCode.OK  # the coordinator's identity
    refused = {
        "no client certificate": tls_of(certs, None),
        "a certificate from another CA": ChannelTLS(
            ca=str(certs / "ca.crt"), cert=str(other_ca / "client.crt"), key=str(other_ca / "client.key")),
        "plaintext": None,
    }
    for why, tls in refused.items():
        assert health(address, tls) == grpc.StatusCode.UNAVAILABLE, why
    # and the client checks the server: a server certificate from a CA it does not trust
    assert health(address, tls_of(other_ca, "client")) == grpc.StatusCode.UNAVAILABLE
    assert health(address, ChannelTLS(ca=str(certs / "ca.crt"), cert=str(certs / "client.crt"),
                                      key=str(certs / "client.key"), server_name="wrong.example")) != grpc.StatusCode.OK


def test_sdk_errors_without_a_client_certificate(mtls_stack):
    kwargs = mtls_stack.client_kwargs()
    del kwargs["client_cert"], kwargs["client_key"]
    with Client(mtls_stack.address, timeout=10.0, retries=0, **kwargs) as client:
        with pytest.raises(UnavailableError):
            client.complete("hi", max_new_tokens=2)


def test_cli_generate_over_mtls_with_a_token(mtls_stack, certs):
    from typer.testing import CliRunner

    from specdec.cli import app

    args = ["generate", "def add(a, b):", "--address", mtls_stack.address, "--max-new-tokens", "8",
            "--mode", "pearl", "--no-chat", "--json", "--tls-ca", str(certs / "ca.crt"),
            "--client-cert", str(certs / "client.crt"), "--client-key", str(certs / "client.key")]
    ok = CliRunner().invoke(app, [*args, "--token", TOKEN], env={"SPECDEC_AUTH_TOKEN": ""})
    assert ok.exit_code == 0, ok.output
    assert '"tokens": 8' in ok.output
    refused = CliRunner().invoke(app, args, env={"SPECDEC_AUTH_TOKEN": ""})
    assert refused.exit_code == 1 and "no bearer token" in refused.output


# --------------------------------------------------------------------------- TLS without client certificates


def test_tls_stack_greedy_equality_and_refusals(tls_stack, tiny_engine, certs, other_ca):
    with Client(tls_stack.address, timeout=60.0, **tls_stack.client_kwargs()) as client:
        prompt, n = PROMPTS[1]
        got = client.complete(prompt, max_new_tokens=n, mode="pearl", ignore_eos=True)
        assert list(got.token_ids) == reference(tiny_engine, prompt, n)
        assert got.stats.reprefills == 0 and not got.stats.draft_fallback and got.stats.draft_tokens > 0
    for service in tls_stack.services:
        assert health(service.address, tls_of(certs, None)) == grpc.StatusCode.OK  # no client certificate needed
        assert health(service.address, None) == grpc.StatusCode.UNAVAILABLE  # plaintext
        assert health(service.address, tls_of(other_ca, None)) == grpc.StatusCode.UNAVAILABLE  # untrusted server
    with Client(tls_stack.address, timeout=10.0, retries=0, tls=True) as client:  # default roots lack our CA
        with pytest.raises(UnavailableError):
            client.info()


# --------------------------------------------------------------------------- session isolation on the workers


def _draft_request(session_id: str, start: int, tokens: list[int]) -> draft_worker_pb2.DraftRequest:
    return draft_worker_pb2.DraftRequest(
        session_id=session_id, start=start, tokens=tokens, rule=rule_to_pb(StopRule(3)),
        sampling=sampling_to_pb(SamplingParams()), seed=0,
    )


def _verify_request(session_id: str, start: int, tokens: list[int]) -> target_worker_pb2.VerifyRequest:
    return target_worker_pb2.VerifyRequest(
        session_id=session_id, start=start, tokens=tokens, draft_tokens=[5], sampling=sampling_to_pb(SamplingParams()),
        seed=0,
    )


async def _probe_sessions(stack: LocalStack, coordinator_tls: ChannelTLS, callers: dict) -> None:
    """The coordinator's channels (Workers: session keys on every call) hold a session on
    both workers; every other caller that names its session id finds nothing there."""
    owner = Workers([stack.draft.address], [stack.target.address], tls=coordinator_tls)
    draft, target = owner.drafts[0].stub, owner.targets[0].stub
    session_id = uuid.uuid4().hex  # as the coordinator makes them
    prefix = [3, 14, 15, 9, 26, 5, 35, 8]
    drafted = [t.token_id async for t in draft.Draft(_draft_request(session_id, 0, prefix))]
    assert len(drafted) == 3
    await target.Verify(_verify_request(session_id, 0, prefix))
    n = len(prefix)
    try:
        for why, (tls, keys) in callers.items():
            interceptors = keys.interceptors() if keys else ()
            async with open_aio_channel(stack.draft.address, tls, interceptors=interceptors) as channel:
                stub = draft_worker_pb2_grpc.DraftWorkerStub(channel)
                # neither can it drop the session (its Release reaches a session of its own)
                assert not (await stub.Release(common_pb2.ReleaseRequest(session_id=session_id))).released, why
                with pytest.raises(grpc.aio.AioRpcError) as lost:
                    _ = [t async for t in stub.Draft(_draft_request(session_id, n, []))]
                assert lost.value.code() == grpc.StatusCode.FAILED_PRECONDITION, why
                assert "holds 0 tokens" in lost.value.details(), why
            async with open_aio_channel(stack.target.address, tls, interceptors=interceptors) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as lost:
                    await target_worker_pb2_grpc.TargetWorkerStub(channel).Verify(_verify_request(session_id, n, []))
                assert lost.value.code() == grpc.StatusCode.FAILED_PRECONDITION, why
        async with open_aio_channel(stack.target.address, callers[next(iter(callers))][0]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as long_id:
                await target_worker_pb2_grpc.TargetWorkerStub(channel).Verify(_verify_request("x" * 257, 0, prefix))
            assert long_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 256" in long_id.value.details()
        # the owner's session is untouched: it goes on from its cache, then releases it
        again = [t.token_id async for t in draft.Draft(_draft_request(session_id, n, []))]
        assert again == drafted
        await target.Verify(_verify_request(session_id, n, []))
    finally:
        assert (await owner.drafts[0].stub.Release(common_pb2.ReleaseRequest(session_id=session_id))).released
        assert (await owner.targets[0].stub.Release(common_pb2.ReleaseRequest(session_id=session_id))).released
        await owner.close()


def test_a_session_id_does_not_open_another_callers_session_under_mtls(mtls_stack, certs):
    asyncio.run(_probe_sessions(mtls_stack, tls_of(certs, "tls"), {
        "a trusted client without the session key": (tls_of(certs, "client"), None),
        "a trusted client with a key of its own": (tls_of(certs, "client"), SessionKeys()),
        "the coordinator's own certificate, another secret": (tls_of(certs, "tls"), SessionKeys()),
    }))


def test_a_session_id_does_not_open_another_callers_session_without_client_certificates(tls_stack, certs):
    asyncio.run(_probe_sessions(tls_stack, tls_of(certs, None), {
        "a caller without the session key": (tls_of(certs, None), None),
        "a caller with a key of its own": (tls_of(certs, None), SessionKeys()),
    }))
