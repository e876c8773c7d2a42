"""The local stack: draft worker, target worker and coordinator as child processes on
127.0.0.1, each worker with its own core (`--threads 1`), so drafting and
verification really run in parallel.

    with LocalStack(preset="tiny") as stack:
        Client(stack.address).complete("def add(a, b):")

Used by `specdec up`, the tests and the benchmarks. Stopping sends SIGTERM (graceful
drain), then SIGKILL to anything still running.

`tls_dir` (a folder made by scripts/make_certs.py) runs every service with TLS, and
with `mtls` (the default) with mutual TLS; `auth_token` makes the coordinator require
it. `stack.client_kwargs()` are then the arguments a `Client` needs.

`http_port` (0: a free one) also starts the OpenAI-compatible HTTP gateway (gateway/) in
front of the coordinator, with the same TLS files and token; `stack.http_url` is its base.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from specdec.rpc.health import is_serving
from specdec.rpc.serving import PARENT_PID_ENV

HOST = "127.0.0.1"
# Env vars of the services' security flags: a stack sets them itself (empty = off).
SECURITY_ENV = ("SPECDEC_TLS_CERT", "SPECDEC_TLS_KEY", "SPECDEC_TLS_CA", "SPECDEC_AUTH_TOKEN", "SPECDEC_AUTH_TOKEN_FILE")

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """A service of the stack did not start; the message carries its stderr tail."""


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free right now (another process could take one before we bind:
    rare on loopback). The sockets stay open until all are picked, so no port repeats."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


class Service:
    """One child process: `python -m <module> serve-flags`, its log in a file."""

    def __init__(
        self, name: str, module: str, port: int, args: list[str], log_dir: Path, tls=None, env: dict | None = None,
        ready=None,
    ):
        self.name, self.module, self.port, self.args = name, module, port, args
        # (address, tls) -> whether it serves; default: the gRPC health check (the gateway's: http_ready)
        self.ready = ready or (lambda address, tls: is_serving(address, tls=tls))
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.tls = tls  # how health checks dial it (specdec.rpc.security.ChannelTLS); None: plaintext
        self.env = env or {}  # extra environment (secrets stay out of the command line)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> None:
        # the service exits when this process dies, however it dies (specdec.rpc.serving.watch_parent)
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{PARENT_PID_ENV: str(os.getpid())}, **self.env)
        command = [sys.executable, "-m", self.module, "--host", HOST, "--port", str(self.port), *self.args]
        with open(self.log_path, "ab") as log:
            # own session: a terminal's Ctrl-C reaches only the parent, which stops us in order
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_serving(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive:
                raise StackError(f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}")
            if self.ready(self.address, self.tls):
                return
            time.sleep(0.1)
        raise StackError(f"{self.name} did not report SERVING within {timeout_s:.0f}s:\n{self.log_tail()}")

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        if self.alive:
            self.process.send_signal(sig)

    def stop(self, grace_s: float = 10.0, sig: int = signal.SIGTERM) -> bool:
        """Signal (unless already done) and wait; SIGKILL after `grace_s`. False when it had
        to be killed (it did not stop by itself)."""
        self.terminate(sig)
        if self.process is None:
            return True
        try:
            self.process.wait(grace_s)
            return True
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs of SIGTERM: killed", self.name, grace_s)
            self.process.kill()
            self.process.wait()
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests: a worker dies mid-request)."""
        self.stop(grace_s=10.0, sig=signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def http_ready(address: str, tls=None, timeout: float = 1.0) -> bool:
    """Whether the HTTP gateway at `address` answers GET /health with 200 (its coordinator
    answers too); over HTTPS, verified against `tls.ca`, when `tls` is given."""
    import ssl

    scheme, context = ("https", ssl.create_default_context(cafile=tls.ca)) if tls else ("http", None)
    try:
        with urllib.request.urlopen(f"{scheme}://{address}/health", timeout=timeout, context=context) as reply:
            return reply.status == 200
    except OSError:  # refused, not listening yet, not ready (urllib's HTTPError for a 503)
        return False


class LocalStack:
    """The three services on loopback; a context manager. `port=0` picks a free port."""

    def __init__(
        self,
        preset: str = "tiny",
        port: int = 0,
        cost_profile: str | None = None,
        seed: int = 0,
        dtype: str = "float32",
        startup_timeout_s: float = 120.0,
        worker_args: tuple[str, ...] = (),
        coordinator_args: tuple[str, ...] = (),
        log_dir: str | Path | None = None,
        tls_dir: str | Path | None = None,
        mtls: bool = True,
        auth_token: str | None = None,
        draft_args: tuple[str, ...] = (),  # after worker_args: the draft worker's own (e.g. its --device)
        target_args: tuple[str, ...] = (),  # ... and the target worker's
        http_port: int | None = None,  # also start the HTTP gateway on this port (0: a free one)
    ):
        self._tmp = None if log_dir else tempfile.TemporaryDirectory(prefix="specdec-stack-")
        log_dir = Path(log_dir or self._tmp.name)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.startup_timeout_s = startup_timeout_s
        common = ["--preset", preset, "--seed", str(seed), "--dtype", dtype, "--threads", "1", *worker_args]
        if cost_profile:
            common += ["--cost-profile", cost_profile]
        self.tls_dir = Path(tls_dir) if tls_dir else None
        self.mtls, self.auth_token = mtls, auth_token
        tls_args, tls, coordinator_env = self._security()
        worker_env = {k: "" for k in SECURITY_ENV}  # only what is passed here, not the caller's env
        draft_port, target_port, coordinator_port = free_ports(3)
        self.draft = Service(
            "draft", "draft_worker", draft_port, [*common, *draft_args, *tls_args], log_dir, tls, worker_env
        )
        self.target = Service(
            "target", "target_worker", target_port, [*common, *target_args, *tls_args], log_dir, tls, worker_env
        )
        self.coordinator = Service(
            "coordinator", "coordinator", port or coordinator_port,
            ["--preset", preset, "--draft", self.draft.address, "--target", self.target.address, *tls_args,
             *coordinator_args],
            log_dir, tls, coordinator_env,
        )
        gateway_env = coordinator_env | {"SPECDEC_COORDINATOR_TOKEN": ""}  # it sends on the stack's token
        self.gateway = None if http_port is None else Service(
            "gateway", "gateway", http_port or free_port(),
            ["--coordinator", self.coordinator.address, *self._gateway_tls_args()], log_dir, tls, gateway_env,
            ready=http_ready,
        )
        self.services = (self.draft, self.target, self.coordinator, *([self.gateway] if self.gateway else []))

    def _security(self):
        """(TLS flags of every service, how the stack itself dials them, the coordinator's env)."""
        env = {k: "" for k in SECURITY_ENV} | {"SPECDEC_AUTH_TOKEN": self.auth_token or ""}
        if self.tls_dir is None:
            return [], None, env
        from specdec.rpc.security import ChannelTLS

        d = self.tls_dir
        args = ["--tls-cert", str(d / "tls.crt"), "--tls-key", str(d / "tls.key")]
        if self.mtls:
            args += ["--tls-ca", str(d / "ca.crt")]
        else:  # without --tls-ca the coordinator checks the workers against gRPC's default roots
            env["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(d / "ca.crt")
        return args, ChannelTLS(ca=str(d / "ca.crt"), cert=str(d / "tls.crt"), key=str(d / "tls.key")), env

    def _gateway_tls_args(self) -> list[str]:
        """With TLS the gateway serves HTTPS and dials the coordinator verifying it against the CA,
        presenting the services' certificate (accepted with and without mutual TLS)."""
        if self.tls_dir is None:
            return []
        d = self.tls_dir
        return ["--tls-cert", str(d / "tls.crt"), "--tls-key", str(d / "tls.key"), "--tls-ca", str(d / "ca.crt")]

    def client_kwargs(self) -> dict:
        """What `Client(stack.address, **stack.client_kwargs())` needs: the CA, the client
        certificate under mTLS, the token."""
        kwargs: dict = {"token": self.auth_token} if self.auth_token else {}
        if self.tls_dir is not None:
            kwargs["tls_ca"] = str(self.tls_dir / "ca.crt")
            if self.mtls:
                kwargs.update(client_cert=str(self.tls_dir / "client.crt"), client_key=str(self.tls_dir / "client.key"))
        return kwargs

    @property
    def address(self) -> str:
        return self.coordinator.address

    @property
    def http_url(self) -> str | None:
        """The gateway's base URL (append /v1 for OpenAI clients); None without one."""
        if self.gateway is None:
            return None
        return f"{'https' if self.tls_dir else 'http'}://{self.gateway.address}"

    def start(self) -> "LocalStack":
        try:
            for service in self.services:  # the coordinator waits for the workers by itself
                service.start()
            for service in self.services:
                service.wait_serving(self.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> list[str]:
        """The gateway first (its streams in flight still need the coordinator), the
        coordinator next (it drains its in-flight requests, which still need the workers),
        then both workers at once. Returns the services that had to be killed."""
        killed = []
        first = (self.gateway,) if self.gateway else ()
        for group in (first, (self.coordinator,), (self.draft, self.target)):
            for service in group:
                service.terminate()
            killed += [service.name for service in group if not service.stop()]
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return killed

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until_interrupted(stack: LocalStack) -> None:
    """Block until Ctrl-C / SIGTERM, or until a service dies (StackError)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            for service in stack.services:
                if not service.alive:
                    raise StackError(f"{service.name} exited with code {service.process.returncode}:\n{service.log_tail()}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
