"""The three services as Ray actors (specdec/launch/ray_stack.py) on a local Ray instance.

Opt-in (`make test-ray`, `pytest -m ray`; skipped where Ray is not installed). The stack binds
a Ray of its own to loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before ray is imported) and a
test lists every listening socket of Ray's processes and ours. Every gRPC server here binds
127.0.0.1 and all requests go there; two worker actors and a coordinator actor share 2 CPUs.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from tests.helpers.reference import reference

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_stack():
    from specdec.launch.ray_stack import RayStack, RayStackConfig, bind_ray_to_loopback

    bind_ray_to_loopback()  # before ray is imported, or it listens on every interface
    ray = pytest.importorskip("ray")

    config = RayStackConfig(
        address=None, host="127.0.0.1", port=0, preset="tiny", draft_cpus=0.5, target_cpus=0.5,
        coordinator_cpus=0.5, coordinator_on_head=True, worker_threads=1, startup_timeout_s=180,
    )
    init = dict(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    with RayStack(config, init_kwargs=init) as stack:
        yield stack
    assert not ray.is_initialized()


def test_a_greedy_request_through_the_placed_stack(ray_stack, tiny_engine):
    from specdec.client import Client

    assert all(a.startswith("127.0.0.1:") for addresses in ray_stack.addresses.values() for a in addresses)
    with Client(ray_stack.address, timeout=60) as client:
        info = client.info()
        assert list(info.draft_addresses) == ray_stack.addresses["draft"]
        for prompt, mode in (("def add(a, b):", "sequential"), ("the cat sat", "pearl")):
            result = client.complete(prompt, max_new_tokens=40, ignore_eos=True, mode=mode)
            assert list(result.token_ids) == reference(tiny_engine, prompt, 40)


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (Ray's GCS, raylet, workers), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _listening(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every listening TCP socket the processes hold."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                raw = fields[1].split(":")[0]
                if width == 8:
                    address = ".".join(str(b) for b in reversed(bytes.fromhex(raw)))
                else:
                    words = [bytes.fromhex(raw[i:i + 8])[::-1].hex() for i in range(0, 32, 8)]
                    address = ipaddress.IPv6Address(bytes.fromhex("".join(words))).compressed
                out.append((inodes[fields[9]], address))
    return out


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1, an IPv6 socket bound to IPv4 loopback
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc to find Ray's sockets")
def test_ray_listens_on_loopback_only(ray_stack):
    """Ray started by the stack (GCS, raylet, workers, our actors' gRPC servers): no listening
    socket beyond loopback."""
    sockets = _listening(_descendants(os.getpid()) | {os.getpid()})
    assert sockets, "found no listening socket at all: the check would be vacuous"
    beyond = [(pid, a) for pid, a in sockets if not _loopback(a)]
    assert not beyond, f"listening beyond loopback (pid, address): {beyond}"
