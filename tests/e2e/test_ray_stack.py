"""The three services as Ray actors (specdec/launch/ray_stack.py) on a local Ray instance.

Opt-in (`make test-ray`, `pytest -m ray`): Ray binds its own services beyond loopback
even when asked not to. Every gRPC server here binds 127.0.0.1 and all requests go
there; two worker actors and a coordinator actor share 2 CPUs (0.5 each).
"""

from __future__ import annotations

import pytest

from tests.helpers.reference import reference

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_stack():
    ray = pytest.importorskip("ray")
    from specdec.launch.ray_stack import RayStack, RayStackConfig

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
