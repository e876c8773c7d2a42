"""`specdec up`: three processes on loopback, and a SIGTERM that drains before it stops them."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from specdec.client import Client
from specdec.launch.stack import free_ports, is_serving
from tests.helpers.polling import wait_for

TOKENS = 160


def test_sigterm_lets_the_request_in_flight_finish_then_stops_all_three():
    (port,) = free_ports(1)
    up = subprocess.Popen(
        [sys.executable, "-m", "specdec.cli", "up", "--tiny", "--port", str(port), "--startup-timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = up.stdout.readline()  # printed once all three report SERVING (or '' if up died)
        assert line.startswith("coordinator listening on 127.0.0.1:"), line + up.stderr.read()
        address = line.split()[-1]
        with Client(address, timeout=60.0, retries=0) as client:
            stream = client.generate_stream("the cat sat", max_new_tokens=TOKENS, ignore_eos=True)
            chunks = [next(stream)]  # the request is in flight
            up.send_signal(signal.SIGTERM)
            chunks += list(stream)  # the coordinator drains it before the workers are stopped
        assert chunks[-1].finish_reason == "length"
        assert sum(len(c.token_ids) for c in chunks) == TOKENS
        assert up.wait(60) == 0  # non-zero if any service had to be killed
        err = up.stderr.read()
        assert "stopped: coordinator, draft worker, target worker" in err, err
        assert not is_serving(address)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def _children(pid: int) -> list[int]:
    """Live child processes of `pid`, from /proc (Linux)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, ...
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its exit status waits to be reaped


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the services")
def test_no_service_outlives_a_sigkilled_up():
    """`specdec up` killed hard (SIGKILL: no handler runs) leaves no orphan holding a model."""
    (port,) = free_ports(1)
    up = subprocess.Popen(
        [sys.executable, "-m", "specdec.cli", "up", "--tiny", "--port", str(port), "--startup-timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    services: list[int] = []
    try:
        line = up.stdout.readline()
        assert line.startswith("coordinator listening on 127.0.0.1:"), line + up.stderr.read()
        services = _children(up.pid)
        assert len(services) == 3, services  # coordinator, draft worker, target worker
        up.kill()
        up.wait()
        assert wait_for(lambda: not any(_alive(pid) for pid in services), timeout_s=5.0), [
            pid for pid in services if _alive(pid)
        ]
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for pid in services:  # never leave one behind, whatever failed above (by pid, never by name)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
