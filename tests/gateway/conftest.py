"""Fixtures of the gateway tests: one tiny stack in this process whose coordinator requires a
bearer token, and gateways (real uvicorn servers on 127.0.0.1 free ports) in front of it,
all shared by the module.

The gateways run on an event loop of their own on a background thread, as they would in
their own process: the openai client's blocking calls in the test thread then talk to them
over real sockets."""

from __future__ import annotations

import asyncio
import threading

import pytest

TOKEN = "s3cret-token"  # the coordinator's and the main gateway's bearer token
STARTUP_S = 120


class Gateways:
    """Gateways started on one background event loop; stopped together (bounded)."""

    def __init__(self):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gateways", daemon=True)
        self._thread.start()
        self._running = []

    def start(self, **config) -> str:
        """Start a gateway with these GatewayConfig fields on a free port; its base URL."""
        from gateway.config import GatewayConfig
        from gateway.server import start

        running = self._run(start(GatewayConfig(host="127.0.0.1", port=0, **config)), timeout=30)
        self._running.append(running)
        return f"http://127.0.0.1:{running.port}"

    def _run(self, coroutine, timeout: float):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self) -> None:
        for running in reversed(self._running):
            self._run(running.stop(grace_s=1), timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def stack():
    """Draft worker, target worker and coordinator (tiny, token required) in this process."""
    from specdec.launch.inprocess import InProcessStack

    with InProcessStack(preset="tiny", seed=0, startup_timeout_s=STARTUP_S, coordinator={"auth_token": TOKEN}) as s:
        yield s


@pytest.fixture(scope="module")
def gateways(stack):
    g = Gateways()
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def base_url(stack, gateways) -> str:
    """The main gateway: clients must send TOKEN, which it also sends to the coordinator."""
    return gateways.start(coordinator=stack.address, auth_token=TOKEN)


@pytest.fixture(scope="module")
def openai_client(base_url):
    openai = pytest.importorskip("openai")
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=TOKEN, max_retries=0, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def sdk(stack):
    """The gRPC SDK on the same coordinator: the reference the gateway must equal."""
    from specdec.client import Client

    with Client(stack.address, timeout=60, token=TOKEN) as client:
        yield client
