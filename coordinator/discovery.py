"""Worker discovery: which draft and target replicas the coordinator's pool holds.

Three modes (`--discovery`, env SPECDEC_DISCOVERY):
- static: the `--draft` / `--target` addresses, fixed (gRPC resolves each name itself).
- dns: each `--draft` / `--target` HOST:PORT is re-resolved every `--discovery-interval`
  seconds; every address it resolves to is one replica. Point it at a headless
  Service: its DNS answer is one A/AAAA record per ready pod.
- kubernetes: the EndpointSlices of a Service (label kubernetes.io/service-name) are
  listed and watched through the API; every address of an endpoint whose
  conditions.ready is not false is one replica. Needs get/list/watch on
  discovery.k8s.io/endpointslices (the Helm chart's Role).

A source yields the sorted address tuple of one role whenever it changes;
`Discovery` applies it to the pool (`Workers.set_members`): new replicas get
channels, replicas that left get no new sessions, their sessions move to another
replica at their next call (a re-prefill), and their channels close once idle.
An empty answer for the targets keeps the last known ones (a request then fails
over among them until a new one appears); an empty answer for the drafts empties
the drafts (requests go target-only).
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Iterable, Mapping, Protocol, Sequence

log = logging.getLogger(__name__)

ROLES = ("draft", "target")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

# (host, port) -> [(ip, port), ...], like the sockaddrs of socket.getaddrinfo
Resolver = Callable[[str, int], Sequence[tuple]]


class DiscoveryMode(str, enum.Enum):
    STATIC = "static"
    DNS = "dns"
    KUBERNETES = "kubernetes"


@dataclass(frozen=True)
class DiscoveryConfig:
    mode: DiscoveryMode = DiscoveryMode.STATIC
    interval_s: float = 5.0  # dns: re-resolution period
    namespace: str | None = None  # kubernetes: default from the pod's service account, else the DNS name
    draft_service: str | None = None  # kubernetes: default: the first label of --draft's host
    target_service: str | None = None  # kubernetes: default: the first label of --target's host
    port_name: str = "grpc"  # kubernetes: the EndpointSlice port to dial (else the --draft/--target port)

    def __post_init__(self):
        try:
            object.__setattr__(self, "mode", DiscoveryMode(self.mode))
        except ValueError:
            raise ValueError(f"discovery must be static, dns or kubernetes, got {self.mode!r}") from None
        if self.interval_s <= 0:
            raise ValueError(f"discovery interval must be > 0 seconds, got {self.interval_s}")


def split_address(address: str) -> tuple[str, int]:
    """'host:port' / '[v6]:port' -> (host, port)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"worker address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Source(Protocol):
    def watch(self) -> AsyncIterator[tuple[str, ...]]:
        """Yield a role's addresses (sorted, distinct) now and whenever they change."""


class StaticSource:
    def __init__(self, addresses: Iterable[str]):
        self.addresses = tuple(sorted(set(addresses)))

    async def watch(self) -> AsyncIterator[tuple[str, ...]]:
        yield self.addresses
        await asyncio.Event().wait()  # never changes


def resolve_host(host: str, port: int) -> list[tuple]:
    """Every (ip, port) a name resolves to (one per pod of a headless Service)."""
    return [info[4] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


class DnsSource:
    """Re-resolves HOST:PORT names every `interval_s`; `resolve` runs in a thread (it blocks)."""

    def __init__(self, addresses: Iterable[str], interval_s: float = 5.0, resolve: Resolver = resolve_host):
        self.names = [split_address(a) for a in addresses]
        self.interval_s = interval_s
        self.resolve = resolve

    async def resolve_all(self) -> tuple[str, ...]:
        found: set[str] = set()
        for host, port in self.names:  # a failure keeps the last answer (the caller's)
            found.update(join_address(a[0], a[1]) for a in await asyncio.to_thread(self.resolve, host, port))
        return tuple(sorted(found))

    async def watch(self) -> AsyncIterator[tuple[str, ...]]:
        last = None
        while True:
            try:
                addresses = await self.resolve_all()
            except OSError as exc:  # NXDOMAIN with no ready pod, DNS down: keep what we have
                log.warning("cannot resolve %s: %s", ", ".join(h for h, _ in self.names), exc)
            else:
                if addresses != last:
                    last = addresses
                    yield addresses
            await asyncio.sleep(self.interval_s)


def slice_addresses(slices: Iterable, port_name: str, default_port: int) -> tuple[str, ...]:
    """HOST:PORT of every ready endpoint of V1EndpointSlice objects. Per the API, a
    missing `ready` condition means ready; terminating endpoints have ready=false."""
    found = set()
    for s in slices:
        ports = s.ports or []
        named = [p.port for p in ports if p.name == port_name and p.port]
        port = named[0] if named else ports[0].port if len(ports) == 1 and ports[0].port else default_port
        for endpoint in s.endpoints or []:
            if endpoint.conditions is not None and endpoint.conditions.ready is False:
                continue
            found.update(join_address(a, port) for a in endpoint.addresses or [])
    return tuple(sorted(found))


class EndpointSliceSource:
    """Lists, then watches, a Service's EndpointSlices with the `kubernetes` client (in a
    thread: the client blocks). Each watch lasts `watch_timeout_s`, then it lists again;
    errors (API down, 410 Gone) are retried every `retry_s`."""

    def __init__(
        self, namespace: str, service: str, default_port: int, port_name: str = "grpc", api=None,
        watch_timeout_s: int = 60, retry_s: float = 5.0,
    ):
        self.namespace, self.service = namespace, service
        self.default_port, self.port_name = default_port, port_name
        self.api = api  # a kubernetes.client.DiscoveryV1Api; default: in-cluster config, else ~/.kube/config
        self.watch_timeout_s, self.retry_s = watch_timeout_s, retry_s
        self._stop = threading.Event()

    async def watch(self) -> AsyncIterator[tuple[str, ...]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(addresses: tuple[str, ...]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, addresses)

        thread = threading.Thread(target=self._run, args=(emit,), name=f"endpointslices-{self.service}", daemon=True)
        thread.start()
        last = None
        try:
            while True:
                addresses = await queue.get()
                if addresses != last:
                    last = addresses
                    yield addresses
        finally:
            self._stop.set()  # the thread ends after its current watch (a daemon: never waited for)

    def _run(self, emit: Callable[[tuple[str, ...]], None]) -> None:
        from kubernetes import watch

        api = self.api or _default_api()
        selector = f"{SERVICE_NAME_LABEL}={self.service}"
        while not self._stop.is_set():
            try:
                listing = api.list_namespaced_endpoint_slice(
                    self.namespace, label_selector=selector, _request_timeout=30
                )
                slices = {s.metadata.name: s for s in listing.items}
                emit(slice_addresses(slices.values(), self.port_name, self.default_port))
                w = watch.Watch()
                for event in w.stream(
                    api.list_namespaced_endpoint_slice, self.namespace, label_selector=selector,
                    resource_version=listing.metadata.resource_version, timeout_seconds=self.watch_timeout_s,
                    _request_timeout=self.watch_timeout_s + 15,
                ):
                    if self._stop.is_set():
                        w.stop()
                        break
                    kind, obj = event["type"], event["object"]
                    if kind in ("ADDED", "MODIFIED"):
                        slices[obj.metadata.name] = obj
                    elif kind == "DELETED":
                        slices.pop(obj.metadata.name, None)
                    else:  # BOOKMARK: nothing changed
                        continue
                    emit(slice_addresses(slices.values(), self.port_name, self.default_port))
            except Exception as exc:  # ApiException (403: RBAC, 410: expired), connection errors
                log.warning("watching EndpointSlices of %s/%s failed: %s", self.namespace, self.service, exc)
                self._stop.wait(self.retry_s)


def _default_api():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.DiscoveryV1Api()


def sources(config: DiscoveryConfig, draft: Sequence[str], target: Sequence[str], api=None) -> dict[str, Source]:
    """One source per role with addresses; none in static mode (the pool keeps its list)."""
    given = {"draft": tuple(draft), "target": tuple(target)}
    if config.mode is DiscoveryMode.STATIC:
        return {}
    if config.mode is DiscoveryMode.DNS:
        return {role: DnsSource(a, config.interval_s) for role, a in given.items() if a}
    services = {"draft": config.draft_service, "target": config.target_service}
    out = {}
    for role, addresses in given.items():
        if not addresses and not services[role]:
            continue
        host, port = split_address(addresses[0]) if addresses else ("", 0)
        service = services[role] or host.split(".")[0]
        if not service:
            raise ValueError(f"discovery kubernetes needs --{role}-service or a --{role} HOST:PORT to name the Service")
        namespace = config.namespace or _namespace(host)
        out[role] = EndpointSliceSource(namespace, service, port, config.port_name, api)
    return out


def _namespace(host: str) -> str:
    """The one in a Service DNS name (service.namespace.svc...), else the pod's, else default."""
    labels = host.split(".")
    if len(labels) > 2 and labels[2] == "svc":
        return labels[1]
    try:
        with open(NAMESPACE_FILE) as f:
            return f.read().strip()
    except OSError:
        return "default"


def _host_name(addresses: Sequence[str]) -> str | None:
    """The host of the first address when it is a name, not an IP literal."""
    host = split_address(addresses[0])[0]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


class Discovery:
    """Keeps a pool (coordinator.remote.Workers) in step with one source per role."""

    def __init__(self, workers, sources: Mapping[str, Source], server_names: Mapping[str, str] | None = None):
        """`server_names`: per role, the name TLS certificates carry when discovered
        addresses are bare IPs (the Service's DNS name)."""
        self.workers = workers
        self.sources = dict(sources)
        self.server_names = dict(server_names or {})
        self._tasks: list[asyncio.Task] = []

    @classmethod
    def for_config(cls, config, workers) -> "Discovery":
        """From a CoordinatorConfig (its `discovery`, `draft` and `target`)."""
        names = {role: _host_name(a) for role, a in (("draft", config.draft), ("target", config.target)) if a}
        return cls(workers, sources(config.discovery, config.draft, config.target), names)

    async def start(self, timeout_s: float) -> None:
        """Start following; wait up to `timeout_s` for each source's first answer (until
        then the pool keeps the addresses it was built with)."""
        first = {role: asyncio.Event() for role in self.sources}
        self._tasks = [
            asyncio.create_task(self._follow(role, source, first[role]), name=f"discovery-{role}")
            for role, source in self.sources.items()
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first.values())), timeout_s)
        except asyncio.TimeoutError:
            log.warning("worker discovery gave no answer within %.0fs; using %s", timeout_s, self.describe())

    async def _follow(self, role: str, source: Source, first: asyncio.Event) -> None:
        try:
            async for addresses in source.watch():
                self.apply(role, addresses)
                first.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("discovery of %s workers stopped; keeping %s", role, self.describe())

    def apply(self, role: str, addresses: Sequence[str]) -> None:
        if not addresses and role == "target":
            log.warning("discovery found no ready target worker; keeping the last known: %s", self.describe())
            return
        self.workers.set_members(role, addresses, server_name=self.server_names.get(role))
        log.info("%s workers: %s", role, ", ".join(addresses) or "none")

    def describe(self) -> str:
        drafts = ", ".join(r.address for r in self.workers.drafts) or "no drafts"
        targets = ", ".join(r.address for r in self.workers.targets) or "no targets"
        return f"{targets}; {drafts}"

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
