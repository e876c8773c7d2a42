"""`specdec up --preset tiny --http-port PORT`: four processes on loopback, the HTTP API answers
plain urllib (what curl does), and the gateway stops with the rest: on SIGTERM, and when
`up` itself is killed (the parent-death watch every service has)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from specdec.launch.stack import free_ports, http_ready
from tests.e2e.test_up import _alive, _children
from tests.helpers.polling import wait_for

STARTUP_S = 120


def _up(http_port: int) -> subprocess.Popen:
    (port,) = free_ports(1)
    return subprocess.Popen(
        [sys.executable, "-m", "specdec.cli", "up", "--preset", "tiny", "--port", str(port), "--http-port",
         str(http_port), "--startup-timeout", str(STARTUP_S)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _base_url(up: subprocess.Popen) -> str:
    """The gateway's /v1 URL, from the lines `up` prints once all four report ready."""
    coordinator = up.stdout.readline()
    assert coordinator.startswith("coordinator listening on 127.0.0.1:"), coordinator + up.stderr.read()
    http = up.stdout.readline()
    assert http.startswith("OpenAI-compatible HTTP API on http://127.0.0.1:"), http + up.stderr.read()
    return http.split()[-1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return f"{pid} (gone)"


def _stop(up: subprocess.Popen, services: list[int]) -> None:
    """Never leave a process behind, whatever failed (by pid, never by name)."""
    if up.poll() is None:
        up.kill()
        up.wait()
    for pid in services:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_up_serves_the_http_api_and_stops_it_on_sigterm():
    (http_port,) = free_ports(1)
    up = _up(http_port)
    try:
        base = _base_url(up)
        assert base == f"http://127.0.0.1:{http_port}/v1"
        (model,) = _get(f"{base}/models")["data"]
        assert model["id"] == "tiny"
        request = urllib.request.Request(
            f"{base}/chat/completions", headers={"Content-Type": "application/json"},
            data=json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
                             "temperature": 0}).encode(),
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            body = json.loads(reply.read())
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] <= 8
        assert body["choices"][0]["message"]["role"] == "assistant"
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0  # non-zero if any service had to be killed
        assert "stopped: gateway, coordinator, draft worker, target worker" in up.stderr.read()
        assert not http_ready(f"127.0.0.1:{http_port}")
    finally:
        _stop(up, [])


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the services")
def test_no_service_outlives_a_sigkilled_up_the_gateway_included():
    (http_port,) = free_ports(1)
    up = _up(http_port)
    services: list[int] = []
    try:
        _base_url(up)
        services = _children(up.pid)
        assert len(services) == 4, services  # coordinator, draft worker, target worker, gateway
        up.kill()
        up.wait()
        # bounded generously: the machine may be busy, and the point is no orphan, not how fast
        assert wait_for(lambda: not any(_alive(pid) for pid in services), timeout_s=20.0), [
            _command(pid) for pid in services if _alive(pid)
        ]
    finally:
        _stop(up, services)
