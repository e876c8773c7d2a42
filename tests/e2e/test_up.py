"""`specdec up`: three processes on loopback, and a SIGTERM that drains before it stops them."""

import signal
import subprocess
import sys

from specdec.client import Client
from specdec.launch.stack import free_ports, is_serving

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
