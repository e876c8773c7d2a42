"""Worker discovery (coordinator/discovery.py) and the pool's membership (Workers.set_members).

Static lists, DNS with an injected resolver (and one real resolution of "localhost"),
EndpointSlices read by the real `kubernetes` client. No Kubernetes API server can run
here, so a small fake one on 127.0.0.1 stands in for it: it serves the EndpointSlice
list and a chunked watch stream of JSON lines, built from the client's own model
objects (V1EndpointSlice, V1Endpoint, V1EndpointConditions). The addresses in the
slices are documentation addresses (192.0.2.0/24, 2001:db8::/32), never dialled.
"""

from __future__ import annotations

import asyncio
import gc
import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from coordinator.config import CoordinatorConfig
from coordinator.discovery import (
    Discovery,
    DiscoveryConfig,
    DnsSource,
    EndpointSliceSource,
    StaticSource,
    resolve_host,
    slice_addresses,
    sources,
)
from coordinator.remote import Workers
from specdec.launch.stack import free_ports


async def _take(source, n: int, timeout: float = 10.0) -> list[tuple[str, ...]]:
    """The first `n` answers of a source."""
    seen = []
    agen = source.watch()
    try:
        while len(seen) < n:
            seen.append(await asyncio.wait_for(agen.__anext__(), timeout))
    finally:
        await agen.aclose()
    return seen


# -- static and DNS -----------------------------------------------------------------


def test_static_source_answers_once_with_its_list():
    answers = asyncio.run(_take(StaticSource(["b:2", "a:1", "a:1"]), 1))
    assert answers == [("a:1", "b:2")]


def test_dns_source_follows_the_resolver_and_keeps_the_last_answer_on_errors():
    answers = iter([
        [("10.0.0.2", 50071), ("10.0.0.1", 50071)],
        [("10.0.0.1", 50071), ("10.0.0.2", 50071)],  # the same set: no new answer
        OSError("NXDOMAIN"),  # kept: no answer
        [("10.0.0.1", 50071), ("fd00::3", 50071, 0, 0)],  # IPv6 sockaddrs have 4 fields
    ])
    asked = []

    def resolve(host, port):
        asked.append((host, port))
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    source = DnsSource(["workers.ns.svc.cluster.local:50071"], interval_s=0.01, resolve=resolve)
    seen = asyncio.run(_take(source, 2))
    assert seen == [("10.0.0.1:50071", "10.0.0.2:50071"), ("10.0.0.1:50071", "[fd00::3]:50071")]
    assert asked[0] == ("workers.ns.svc.cluster.local", 50071)


def test_dns_resolution_of_localhost_is_real_and_local():
    found = asyncio.run(_take(DnsSource(["localhost:50071"], interval_s=60), 1))[0]
    assert found and set(found) <= {"127.0.0.1:50071", "[::1]:50071"}
    assert resolve_host("localhost", 1)  # the default resolver itself


# -- EndpointSlices: the real client's objects ------------------------------------------


def _slice(name: str, endpoints: list[tuple[str, bool | None]], port: int = 50071, service: str = "workers"):
    from kubernetes import client

    return client.V1EndpointSlice(
        api_version="discovery.k8s.io/v1", kind="EndpointSlice", address_type="IPv4",
        metadata=client.V1ObjectMeta(name=name, namespace="ns", labels={"kubernetes.io/service-name": service}),
        ports=[client.DiscoveryV1EndpointPort(name="metrics", port=9090),
               client.DiscoveryV1EndpointPort(name="grpc", port=port, protocol="TCP")],
        endpoints=[
            client.V1Endpoint(addresses=[ip], conditions=client.V1EndpointConditions(ready=ready))
            for ip, ready in endpoints
        ],
    )


def test_slice_addresses_take_ready_endpoints_on_the_grpc_port():
    pytest.importorskip("kubernetes")
    from kubernetes import client

    a = _slice("a", [("192.0.2.1", True), ("192.0.2.2", None), ("192.0.2.3", False)])
    bare = client.V1EndpointSlice(address_type="IPv4", endpoints=[client.V1Endpoint(addresses=["192.0.2.9"])])
    assert slice_addresses([a], "grpc", 1) == ("192.0.2.1:50071", "192.0.2.2:50071")  # ready None = ready
    assert slice_addresses([bare], "grpc", 50061) == ("192.0.2.9:50061",)  # no ports: the default
    assert slice_addresses([], "grpc", 1) == ()


class FakeApiServer(ThreadingHTTPServer):
    """Serves GET .../namespaces/ns/endpointslices: the list, or with watch=true a chunked
    stream of the events `publish` sends, until `timeoutSeconds` or `close`."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _FakeApiHandler)
        from kubernetes.client import ApiClient

        self.serialize = ApiClient().sanitize_for_serialization
        self.slices: dict[str, dict] = {}
        self.version = 1
        self.watchers: list[queue.Queue] = []
        self.queries: list[dict] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def publish(self, kind: str, endpoint_slice) -> None:
        with self.lock:
            self.version += 1
            obj = self.serialize(endpoint_slice)
            obj["metadata"]["resourceVersion"] = str(self.version)
            if kind == "DELETED":
                self.slices.pop(obj["metadata"]["name"], None)
            else:
                self.slices[obj["metadata"]["name"]] = obj
            for watcher in self.watchers:
                watcher.put({"type": kind, "object": obj})

    def close(self) -> None:
        with self.lock:
            for watcher in self.watchers:
                watcher.put(None)
        self.shutdown()
        self.server_close()


class _FakeApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked watch streams, as the API server sends them

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.server.queries.append(query)
        if url.path != "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices":
            self.send_error(404)
            return
        if query.get("watch") == "true":
            return self._watch(float(query.get("timeoutSeconds", "5")))
        with self.server.lock:
            body = json.dumps({
                "kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": str(self.server.version)}, "items": list(self.server.slices.values()),
            }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _watch(self, timeout_s: float) -> None:
        events: queue.Queue = queue.Queue()
        with self.server.lock:
            self.server.watchers.append(events)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while True:
                try:
                    event = events.get(timeout=timeout_s)
                except queue.Empty:
                    break
                if event is None:
                    break
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        finally:
            with self.server.lock:
                self.server.watchers.remove(events)
            self.close_connection = True


@pytest.fixture()
def fake_api(monkeypatch):
    pytest.importorskip("kubernetes")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # the client must talk to 127.0.0.1 directly
    server = FakeApiServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.close()


def test_endpoint_slices_are_listed_then_watched(fake_api):
    from kubernetes import client

    fake_api.publish("ADDED", _slice("workers-a", [("192.0.2.1", True), ("192.0.2.2", True), ("192.0.2.3", False)]))
    api = client.DiscoveryV1Api(client.ApiClient(client.Configuration(host=fake_api.url)))
    source = EndpointSliceSource("ns", "workers", default_port=1, api=api, watch_timeout_s=5)

    async def follow():
        agen = source.watch()
        nxt = lambda: asyncio.wait_for(agen.__anext__(), 10)  # noqa: E731
        try:
            seen = [await nxt()]
            while not fake_api.watchers:  # the watch is open: changes now arrive as events
                await asyncio.sleep(0.01)
            fake_api.publish("MODIFIED", _slice("workers-a", [("192.0.2.1", True), ("192.0.2.2", False)]))
            seen.append(await nxt())
            fake_api.publish("ADDED", _slice("workers-b", [("192.0.2.7", True)], port=50072))
            seen.append(await nxt())
            fake_api.publish("DELETED", _slice("workers-a", []))
            seen.append(await nxt())
            return seen
        finally:
            await agen.aclose()

    seen = asyncio.run(follow())
    assert seen == [
        ("192.0.2.1:50071", "192.0.2.2:50071"),  # 192.0.2.3 is not ready
        ("192.0.2.1:50071",),  # 192.0.2.2 became not ready (terminating)
        ("192.0.2.1:50071", "192.0.2.7:50072"),  # a second slice, its own port
        ("192.0.2.7:50072",),  # the first slice deleted
    ]
    selectors = {q.get("labelSelector") for q in fake_api.queries}
    assert selectors == {"kubernetes.io/service-name=workers"}
    assert any(q.get("watch") == "true" and q.get("resourceVersion") == "2" for q in fake_api.queries)


# -- configuration ---------------------------------------------------------------


def test_sources_per_mode():
    draft = ("rel-draft-headless.ml.svc.cluster.local:50061",)
    target = ("rel-target-headless.ml.svc.cluster.local:50071",)
    assert sources(DiscoveryConfig(), draft, target) == {}
    dns = sources(DiscoveryConfig(mode="dns", interval_s=7), draft, target)
    assert dns["target"].names == [("rel-target-headless.ml.svc.cluster.local", 50071)]
    assert dns["target"].interval_s == 7
    assert set(sources(DiscoveryConfig(mode="dns"), (), target)) == {"target"}
    k8s = sources(DiscoveryConfig(mode="kubernetes"), draft, target)["draft"]
    assert (k8s.namespace, k8s.service, k8s.default_port) == ("ml", "rel-draft-headless", 50061)
    named = sources(DiscoveryConfig(mode="kubernetes", namespace="x", target_service="t"), (), target)["target"]
    assert (named.namespace, named.service) == ("x", "t")
    with pytest.raises(ValueError, match="discovery must be static, dns or kubernetes"):
        DiscoveryConfig(mode="consul")


def test_discovery_for_config_names_the_services_for_tls():
    config = CoordinatorConfig(
        target=("rel-target-headless.ml.svc.cluster.local:50071",), draft=("127.0.0.1:50061",),
        discovery=DiscoveryConfig(mode="dns"),
    )
    discovery = Discovery.for_config(config, workers=None)
    assert set(discovery.sources) == {"draft", "target"}
    assert discovery.server_names == {"target": "rel-target-headless.ml.svc.cluster.local", "draft": None}


# -- the pool's membership --------------------------------------------------------


def test_pool_balances_sessions_and_drops_departed_replicas_once_idle():
    """Channels to free loopback ports: nothing is ever called on them."""
    a, b, c = (f"127.0.0.1:{p}" for p in free_ports(3))

    async def scenario():
        workers = Workers(draft=[a], target=[a, b])
        held = [workers.endpoints() for _ in range(4)]  # a request holds its endpoints
        assert sorted(r.sessions for r in workers.targets) == [2, 2]
        assert workers.drafts[0].sessions == 4
        departed = workers.targets[1]
        workers.set_members("target", [a, c])
        assert [r.address for r in workers.targets] == [a, c] and departed.left
        assert departed in workers._leaving  # still used by two sessions
        fresh = [workers.endpoints()[1] for _ in range(2)]
        assert {t.replica.address for t in fresh} == {c}  # the fewest sessions
        del held
        gc.collect()  # requests over: their leases end with them
        await asyncio.sleep(0)
        assert departed.sessions == 0 and departed not in workers._leaving  # closed once idle
        workers.set_members("draft", [])
        assert workers.drafts == [] and workers.endpoints()[0] is None
        del fresh
        await workers.close()

    asyncio.run(scenario())


def test_pool_passes_over_a_replica_whose_connection_failed_while_another_has_not():
    """A dead replica soon holds no sessions; by the count alone it would draw every new
    request (on a dead draft, each would then decode target-only to its end). Nothing
    listens on these ports: `dead` is made to try, `untried` never dials (IDLE)."""
    dead, untried = (f"127.0.0.1:{p}" for p in free_ports(2))

    async def failed(replica) -> None:
        import grpc

        state = replica.channel.get_state(try_to_connect=True)
        while state is not grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            await asyncio.wait_for(replica.channel.wait_for_state_change(state), 10)
            state = replica.channel.get_state(try_to_connect=True)

    async def scenario():
        workers = Workers(draft=[dead, untried], target=[untried])
        await failed(workers.drafts[0])
        held = [workers.endpoints() for _ in range(3)]  # the dead one has 0 sessions, the other 3 ...
        assert [r.down for r in workers.drafts] == [True, False]
        assert {d.replica.address for d, _ in held} == {untried}  # ... and still draws every request
        await failed(workers.drafts[1])  # none left up: the count decides again
        assert workers.endpoints()[0].replica.address == dead
        del held
        await workers.close()

    asyncio.run(scenario())


def test_no_ready_target_keeps_the_last_known_ones():
    a = f"127.0.0.1:{free_ports(1)[0]}"

    async def scenario():
        workers = Workers(draft=[], target=[a])
        discovery = Discovery(workers, {})
        discovery.apply("target", ())
        assert [r.address for r in workers.targets] == [a]
        await workers.close()

    asyncio.run(scenario())
