"""Remote draft and target endpoints: the interfaces of specdec.backend.endpoints over gRPC.

One `RemoteDraft` / `RemoteTarget` per request, sharing the channels of a `Workers`
pool. Each remembers what its worker is known to hold for the session and sends only
the tokens it lacks (`start` = common prefix of that and the new sequence), so a
rejection rolls the worker back implicitly. A worker that lost the session
(restart, eviction) answers FAILED_PRECONDITION and gets the whole history again
from start = 0: a re-prefill, counted in `reprefills`.

Failures: a draft worker that fails becomes EndpointUnavailable (the loop goes on
target-only); a target is retried on the next replica (or the same one, restarting)
for up to `retry_s`, then the request fails with EndpointUnavailable.

GSD rounds (draft_tree / verify_tree) follow the same rules; afterwards the draft
holds exactly the committed sequence (the tree is dropped) and the target the
committed sequence plus the accepted tokens.

Membership (coordinator/discovery.py): `Workers.set_members` adds and removes
replicas at run time. A request takes the replica with the fewest sessions (ties in
turn), passing over replicas whose channel failed to connect while another has not, and
sticks to it; when its replica leaves the pool, the session moves to another at its next
call (a re-prefill), and the channel closes once no session uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
import weakref
from collections.abc import AsyncIterator, Sequence

import grpc

from specdec.backend.endpoints import EndpointUnavailable
from specdec.core.policies import StopRule
from specdec.core.sampling import SamplingParams, SparseDist
from specdec.core.sequences import common_prefix
from specdec.core.speed import SpeedRatio
from specdec.core.tree import DraftTree, TreeParams
from specdec.gsd.verifying import TreeVerification
from specdec.pb.v1 import (
    common_pb2,
    draft_worker_pb2,
    draft_worker_pb2_grpc,
    target_worker_pb2,
    target_worker_pb2_grpc,
)
from specdec.rpc.convert import (
    draft_token_from_pb,
    draft_tree_from_pb,
    proposal_to_pb,
    rule_to_pb,
    sampling_to_pb,
    tree_params_to_pb,
    tree_to_pb,
    tree_verification_from_pb,
    verification_from_pb,
)
from specdec.rpc.security import ChannelTLS, open_aio_channel
from specdec.rpc.session_binding import SESSION_KEY, SessionKeys
from specdec.runtime.drafting import DraftToken
from specdec.runtime.verifying import Verification
from specdec.telemetry import spans

log = logging.getLogger(__name__)

# Reconnect quickly to a restarted worker on loopback / in a cluster.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# Codes meaning "this worker cannot answer now" (dead, restarting, shutting down).
GONE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL}


class Replica:
    """One worker address: a channel and a stub, shared by all requests. `tls`: dial with
    TLS; every call carries its session's key (specdec.rpc.session_binding)."""

    def __init__(
        self, address: str, stub_class, interceptors: Sequence = (), tls: ChannelTLS | None = None,
        session_keys: SessionKeys | None = None,
    ):
        self.address = address
        self.session_keys = session_keys or SessionKeys()
        interceptors = [*interceptors, *self.session_keys.interceptors()]
        self.channel = open_aio_channel(address, tls, options=CHANNEL_OPTIONS, interceptors=interceptors)
        self.stub = stub_class(self.channel)
        self.sessions = 0  # requests bound to this replica now (the pool balances on it)
        self.left = False  # removed by discovery: no new sessions; closed once idle
        self.on_idle = None  # called when it has left and its last session is gone

    @property
    def down(self) -> bool:
        """The channel's last connection attempt failed (TRANSIENT_FAILURE): the worker is
        dead or unreachable. gRPC keeps reconnecting in the background (CHANNEL_OPTIONS'
        backoff), so a restarted worker is READY again without a call being sent to it."""
        return self.channel.get_state() is grpc.ChannelConnectivity.TRANSIENT_FAILURE

    def lease(self, owner) -> weakref.finalize:
        """Count a session on this replica until the returned callable is called (once)
        or `owner` is garbage-collected, whichever comes first."""
        self.sessions += 1
        return weakref.finalize(owner, self._unlease)

    def _unlease(self) -> None:
        self.sessions -= 1
        if self.left and self.sessions == 0 and self.on_idle is not None:
            self.on_idle(self)

    async def info(self, timeout: float) -> common_pb2.WorkerInfo:
        return await self.stub.GetInfo(common_pb2.GetInfoRequest(), timeout=timeout, wait_for_ready=True)

    async def release(self, session_id: str) -> None:
        try:
            await self.stub.Release(common_pb2.ReleaseRequest(session_id=session_id), timeout=5.0)
        except grpc.aio.AioRpcError as exc:  # the session expires by TTL anyway
            log.debug("release of %s on %s failed: %s", session_id, self.address, exc.code().name)


class _Held:
    """What a worker is known to hold per session: a prefix of what was last sent."""

    def __init__(self):
        self._tokens: dict[str, list[int]] = {}

    def start(self, session_id: str, sequence: Sequence[int]) -> int:
        return common_prefix(self._tokens.get(session_id, ()), sequence)

    def set(self, session_id: str, tokens: Sequence[int]) -> None:
        self._tokens[session_id] = list(tokens)

    def forget(self, session_id: str) -> None:
        self._tokens.pop(session_id, None)


class SessionStream:
    """One request's bidirectional stream to one replica (VerifyStream or DraftStream):
    opened on first use with the session's key in its metadata, kept for the request's
    life. A reader task takes every response off the wire into a queue and a writer task
    puts the messages on it, so a caller cancelled while waiting (PEARL cancels draft
    rounds all the time) never touches the call itself: grpc.aio cancels the whole RPC
    when a coroutine awaiting its read or write is cancelled."""

    def __init__(self, replica: Replica, method: str, session_id: str):
        self.replica, self.session_id = replica, session_id
        metadata = ((SESSION_KEY, replica.session_keys.key(session_id)),)
        self.call = getattr(replica.stub, method)(metadata=metadata)
        self.responses: asyncio.Queue = asyncio.Queue()
        self._outgoing: asyncio.Queue = asyncio.Queue()
        self._closed = False
        self._reader = asyncio.ensure_future(self._read())
        self._writer = asyncio.ensure_future(self._write())

    async def _read(self) -> None:
        try:
            while (message := await self.call.read()) is not grpc.aio.EOF:
                self.responses.put_nowait(message)
            self.responses.put_nowait(await self._status())
        except asyncio.CancelledError:
            if self._closed:
                raise
            self.responses.put_nowait(_StreamEnded(grpc.StatusCode.CANCELLED, "the stream was cancelled"))
        except grpc.aio.AioRpcError as exc:
            self.responses.put_nowait(exc)
        except Exception as exc:  # e.g. a channel closed under the call
            self.responses.put_nowait(_StreamEnded(grpc.StatusCode.UNAVAILABLE, str(exc)))

    async def _write(self) -> None:
        try:
            while True:
                await self.call.write(await self._outgoing.get())
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            pass  # the call is over: the reader reports its status

    async def _status(self) -> Exception:
        code = await self.call.code()
        if code == grpc.StatusCode.OK:  # ended without an error while a round was due: gone
            code = grpc.StatusCode.UNAVAILABLE
        return _StreamEnded(code, await self.call.details() or "the worker ended the stream")

    def write(self, message) -> None:
        """Queue `message` for the wire (in order)."""
        self._outgoing.put_nowait(message)

    async def read(self):
        """The next response; raises _StreamEnded / AioRpcError when the call is over."""
        item = await self.responses.get()
        if isinstance(item, Exception):
            self.responses.put_nowait(item)  # every later read fails the same way
            raise item
        return item

    def close(self) -> None:
        self._closed = True
        self._reader.cancel()
        self._writer.cancel()
        self.call.cancel()


class _StreamEnded(Exception):
    """A session stream ended; `code()` / `details()` as grpc.aio.AioRpcError has them."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


StreamError = (grpc.aio.AioRpcError, _StreamEnded)


class RemoteDraft:
    """specdec.backend.endpoints.DraftEndpoint over one draft worker (another of `pool`'s once
    that one leaves the pool)."""

    def __init__(self, replica: Replica, pool: Workers | None = None):
        self.replica = replica
        self.held = _Held()
        self.reprefills = 0
        self.pool = pool
        self._lease = replica.lease(self)
        self._stream: SessionStream | None = None  # this request's DraftStream
        self._round = 0  # the last round started on it
        self._sampling: tuple | None = None  # (params, its message): built once per request

    def _follow_pool(self, session_id: str) -> None:
        """Move off a replica that left the pool, to the least busy one still in it."""
        if self.replica.left and self.pool is not None and self.pool.drafts:
            self.pool.release_behind(self.replica, self._lease, session_id)
            self.replica = self.pool.pick(self.pool.drafts)
            self._lease = self.replica.lease(self)
            self.held.forget(session_id)  # the new replica gets the whole history

    async def draft(
        self, session_id: str, committed: Sequence[int], rule: StopRule, params: SamplingParams, seed: int
    ) -> AsyncIterator[DraftToken]:
        """Stream one round's draft tokens over this request's DraftStream; closing the
        iterator early (aclose) stops the round, so the worker stops drafting."""
        self._follow_pool(session_id)
        base = list(committed)
        start = self.held.start(session_id, base)
        for attempt in range(2):
            self._round += 1
            round_id = self._round
            command = draft_worker_pb2.DraftCommand(session_id=session_id, round=round_id, traceparent=spans.traceparent(), draft=(
                draft_worker_pb2.DraftRequest(
                    session_id=session_id, start=start, tokens=base[start:], rule=rule_to_pb(rule),
                    sampling=self._sampling_pb(params), seed=seed,
                )))
            self.held.set(session_id, base[:start])  # all we can be sure of until a token arrives
            stream = self._stream_for(session_id)
            drafted: list[int] = []
            ended = False
            try:
                stream.write(command)
                while True:
                    item = await stream.read()
                    if item.round != round_id:
                        continue  # a late token of a round stopped before
                    if item.end:
                        ended = True
                        return
                    # the worker appends each draft token before drafting the next one
                    self.held.set(session_id, base + drafted)
                    drafted.append(item.token.token_id)
                    yield draft_token_from_pb(item.token)
            except StreamError as exc:
                self._close_stream()
                code = exc.code()
                if code == grpc.StatusCode.FAILED_PRECONDITION and attempt == 0 and not drafted:
                    log.info("draft worker %s lost session %s; re-prefilling", self.replica.address, session_id)
                    spans.add_event("specdec.re-prefill", worker=self.replica.address)
                    self.reprefills += 1
                    start = 0
                    continue
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise ValueError(exc.details()) from None
                self.held.forget(session_id)
                self._lease()  # the request goes on target-only
                raise EndpointUnavailable(f"draft worker {self.replica.address}: {code.name}: {exc.details()}") from None
            finally:
                if not ended and self._stream is stream:  # left early: stop the round on the worker
                    stream.write(draft_worker_pb2.DraftCommand(session_id=session_id, round=round_id, stop=True))

    def _stream_for(self, session_id: str) -> SessionStream:
        if self._stream is not None and (self._stream.replica, self._stream.session_id) != (self.replica, session_id):
            self._close_stream()
        if self._stream is None:
            self._stream = SessionStream(self.replica, "DraftStream", session_id)
        return self._stream

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _sampling_pb(self, params: SamplingParams):
        if self._sampling is None or self._sampling[0] != params:
            self._sampling = (params, sampling_to_pb(params))
        return self._sampling[1]

    async def draft_tree(
        self, session_id: str, committed: Sequence[int], tree: TreeParams, params: SamplingParams, seed: int
    ) -> DraftTree:
        """One GSD draft tree; the worker ends holding exactly `committed`."""
        self._follow_pool(session_id)
        base = list(committed)
        start = self.held.start(session_id, base)
        while True:  # at most twice: a lost session is re-prefilled from start = 0 once
            request = draft_worker_pb2.DraftTreeRequest(
                session_id=session_id, start=start, tokens=base[start:], tree=tree_params_to_pb(tree),
                sampling=sampling_to_pb(params), seed=seed,
            )
            self.held.set(session_id, base[:start])  # all we can be sure of until it answers
            try:
                reply = await self.replica.stub.DraftTree(request)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.FAILED_PRECONDITION and start > 0:
                    log.info("draft worker %s lost session %s; re-prefilling", self.replica.address, session_id)
                    self.reprefills += 1
                    start = 0
                    continue
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise ValueError(exc.details()) from None
                self.held.forget(session_id)
                self._lease()  # the request goes on target-only
                raise EndpointUnavailable(f"draft worker {self.replica.address}: {code.name}: {exc.details()}") from None
            self.held.set(session_id, base)
            return draft_tree_from_pb(reply)

    async def release(self, session_id: str) -> None:
        self.held.forget(session_id)
        self._close_stream()
        try:
            await self.replica.release(session_id)
        finally:
            self._lease()


class RemoteTarget:
    """specdec.backend.endpoints.TargetEndpoint over target replicas, starting at `first`. With a
    `pool`, fail-over and departures pick among the pool's replicas of the moment."""

    def __init__(
        self, replicas: Sequence[Replica], first: int = 0, retry_s: float = 10.0, pool: Workers | None = None
    ):
        self.replicas = list(replicas)
        self.replica = self.replicas[first % len(self.replicas)]
        self.retry_s = retry_s
        self.held = _Held()
        self.reprefills = 0
        self.failovers = 0  # calls retried because the worker was gone
        self.pool = pool
        self._lease = self.replica.lease(self)
        self._stream: SessionStream | None = None  # this request's VerifyStream
        self._sampling: tuple | None = None  # (params, its message): built once per request

    def _members(self) -> list[Replica]:
        return self.pool.targets if self.pool is not None and self.pool.targets else self.replicas

    def _move_to(self, replica: Replica, session_id: str) -> None:
        if replica is not self.replica:
            if self.pool is not None:
                self.pool.release_behind(self.replica, self._lease, session_id)
            else:
                self._lease()
            self.replica, self._lease = replica, replica.lease(self)
            self._resend_all(session_id)  # the next replica has never seen this session

    async def verify(
        self,
        session_id: str,
        committed: Sequence[int],
        draft: Sequence[int],
        proposals: Sequence[SparseDist] | None,
        params: SamplingParams,
        seed: int,
    ) -> Verification:
        committed, draft = list(committed), list(draft)
        request = target_worker_pb2.VerifyRequest(
            session_id=session_id, draft_tokens=draft, sampling=self._sampling_pb(params), seed=seed,
            traceparent=spans.traceparent(), proposals=[proposal_to_pb(q) for q in proposals] if proposals is not None else [],
        )
        reply = await self._call("VerifyStream", session_id, committed, request)
        self.held.set(session_id, committed + draft)
        return verification_from_pb(reply)

    async def verify_tree(
        self, session_id: str, committed: Sequence[int], tree: DraftTree, params: SamplingParams, seed: int
    ) -> TreeVerification:
        """Verify a GSD tree; the worker ends holding `committed` plus the accepted tokens."""
        committed = list(committed)
        request = target_worker_pb2.VerifyTreeRequest(
            session_id=session_id, tree=tree_to_pb(tree), sampling=sampling_to_pb(params), seed=seed
        )
        reply = await self._call("VerifyTree", session_id, committed, request)
        self.held.set(session_id, committed + list(reply.tokens))
        return tree_verification_from_pb(reply)

    async def _call(self, rpc: str, session_id: str, committed: list[int], request):
        """The `rpc` method on the current replica, with the request's `start` / `tokens`
        filled in from what that replica holds; re-prefills a lost session and fails over
        (module docstring)."""
        deadline, reprefills = None, self.reprefills
        while True:
            if self.replica.left and self.pool is not None and self.pool.targets:
                self._move_to(self.pool.pick(self.pool.targets), session_id)
            start = min(self.held.start(session_id, committed), len(committed))
            request.start = start
            del request.tokens[:]
            request.tokens.extend(committed[start:])
            self.held.set(session_id, committed[:start])
            try:
                with _reprefill_span(self.reprefills > reprefills and start == 0, self.replica.address):
                    if rpc == "VerifyStream":
                        return await self._on_stream(session_id, request)
                    return await getattr(self.replica.stub, rpc)(request)
            except StreamError as exc:
                code = exc.code()
                if code == grpc.StatusCode.FAILED_PRECONDITION and start > 0:
                    log.info("target worker %s lost session %s; re-prefilling", self.replica.address, session_id)
                    self._resend_all(session_id)
                    continue
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise ValueError(exc.details()) from None
                if code not in GONE:
                    raise RuntimeError(f"target worker {self.replica.address}: {code.name}: {exc.details()}") from None
                deadline = deadline or time.monotonic() + self.retry_s
                await self._fail_over(session_id, exc, deadline)

    def _sampling_pb(self, params: SamplingParams):
        if self._sampling is None or self._sampling[0] != params:
            self._sampling = (params, sampling_to_pb(params))
        return self._sampling[1]

    async def _on_stream(self, session_id: str, request):
        """One round on this request's stream to the current replica (opened on first use,
        and again after a failure or a move)."""
        if self._stream is not None and (self._stream.replica, self._stream.session_id) != (self.replica, session_id):
            self._close_stream()
        if self._stream is None:
            self._stream = SessionStream(self.replica, "VerifyStream", session_id)
        stream = self._stream
        try:
            stream.write(request)
            return await stream.read()
        except BaseException:  # failed, or cancelled with the round unanswered: never reused
            if self._stream is stream:
                self._close_stream()
            raise

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _resend_all(self, session_id: str) -> None:
        self.held.forget(session_id)
        self.reprefills += 1

    async def _fail_over(self, session_id: str, exc, deadline: float) -> None:
        """Move to the next replica (or wait for this one to come back) until `deadline`."""
        left = deadline - time.monotonic()
        if left <= 0:
            tried = ", ".join(r.address for r in self._members())
            raise EndpointUnavailable(
                f"no target worker answered within {self.retry_s:.1f}s (tried {tried}; last: "
                f"{exc.code().name}: {exc.details()}): check that a target worker is running (--target)"
            )
        log.warning("target worker %s failed (%s); trying again", self.replica.address, exc.code().name)
        self.failovers += 1
        members = self._members()
        if len(members) > 1 or self.replica not in members:
            after = members.index(self.replica) + 1 if self.replica in members else 0
            self._move_to(members[after % len(members)], session_id)
        try:
            await asyncio.wait_for(self.replica.channel.channel_ready(), timeout=min(left, 1.0))
        except asyncio.TimeoutError:
            pass

    async def release(self, session_id: str) -> None:
        self.held.forget(session_id)
        self._close_stream()
        try:
            await self.replica.release(session_id)
        finally:
            self._lease()


class Workers:
    """The worker pool: channels to every replica; per request, the replicas with the
    fewest sessions (in turn among equals). Discovery changes it with `set_members`."""

    def __init__(
        self, draft: Sequence[str], target: Sequence[str], target_retry_s: float = 10.0, interceptors: Sequence = (),
        tls: ChannelTLS | None = None,
    ):
        """`interceptors`: grpc.aio client interceptors of every channel (tracing); `tls`:
        how to dial the workers (None: plaintext)."""
        self.tls, self.session_keys = tls, SessionKeys()
        keys = dict(tls=tls, session_keys=self.session_keys)
        self.drafts = [Replica(a, draft_worker_pb2_grpc.DraftWorkerStub, interceptors, **keys) for a in draft]
        self.targets = [Replica(a, target_worker_pb2_grpc.TargetWorkerStub, interceptors, **keys) for a in target]
        self.target_retry_s = target_retry_s
        self._turn = itertools.count()
        self._interceptors = interceptors
        self._leaving: set[Replica] = set()  # left the pool, still used by a session
        self._closing: set[asyncio.Task] = set()  # channels of departed replicas, closing
        self._releases: set[asyncio.Task] = set()  # sessions released behind their move
        self.speed = SpeedRatio()  # the workers' measured compute: PEARL's default window

    def pick(self, replicas: Sequence[Replica]) -> Replica:
        """The replica with the fewest sessions; among equals, each in turn. Replicas that
        are `down` are passed over while another is not: a dead replica soon holds no
        sessions, so by the count alone it would draw every new request (each then failing
        over, or, on a dead draft, decoding target-only to its end)."""
        n = next(self._turn) % len(replicas)
        ordered = [*replicas[n:], *replicas[:n]]
        return min([r for r in ordered if not r.down] or ordered, key=lambda r: r.sessions)

    def endpoints(self) -> tuple[RemoteDraft | None, RemoteTarget]:
        """Fresh endpoints for one request: the least busy draft and target replicas."""
        draft = RemoteDraft(self.pick(self.drafts), pool=self) if self.drafts else None
        first = self.targets.index(self.pick(self.targets))
        return draft, RemoteTarget(self.targets, first=first, retry_s=self.target_retry_s, pool=self)

    def set_members(self, role: str, addresses: Sequence[str], server_name: str | None = None) -> None:
        """The replicas of `role` ("draft" | "target") are now `addresses`. New ones get
        channels (with TLS, expecting `server_name` in the certificate when given: the
        Service name an address was discovered from); departed ones get no new sessions
        and close once idle. The lists change in place."""
        members = self.drafts if role == "draft" else self.targets
        stub = draft_worker_pb2_grpc.DraftWorkerStub if role == "draft" else target_worker_pb2_grpc.TargetWorkerStub
        tls = self.tls
        if tls is not None and server_name and not tls.server_name:
            tls = dataclasses.replace(tls, server_name=server_name)
        kept = {r.address: r for r in members if r.address in addresses}
        for replica in members:
            if replica.address not in kept:
                replica.left = True
                replica.on_idle = self._close_soon
                self._leaving.add(replica)
                if replica.sessions == 0:
                    self._close_soon(replica)
        members[:] = [
            kept.get(a) or Replica(a, stub, self._interceptors, tls=tls, session_keys=self.session_keys)
            for a in addresses
        ]

    def release_behind(self, replica: Replica, lease, session_id: str) -> None:
        """A session moved off `replica`: release it there in the background (best effort;
        a dead replica fails fast, the TTL covers the rest), then end its `lease`."""

        async def release():
            try:
                await replica.release(session_id)
            finally:
                lease()

        task = asyncio.get_running_loop().create_task(release())
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def _close_soon(self, replica: Replica) -> None:
        try:
            task = asyncio.get_running_loop().create_task(replica.channel.close())
        except RuntimeError:  # no loop here (garbage collected elsewhere): close() does it
            return
        self._leaving.discard(replica)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def target_info(self, timeout: float) -> common_pb2.WorkerInfo:
        """The first target replica's description; waits up to `timeout` for one to start
        (asking the new ones when discovery changed the replicas meanwhile)."""
        deadline = time.monotonic() + timeout
        while True:
            asked = list(self.targets)
            try:
                return await _first_info(asked, max(0.0, deadline - time.monotonic()), "target")
            except EndpointUnavailable:
                if asked == self.targets or time.monotonic() >= deadline:
                    raise

    async def draft_info(self, timeout: float) -> common_pb2.WorkerInfo | None:
        if not self.drafts:
            return None
        try:
            return await _first_info(self.drafts, timeout, "draft")
        except EndpointUnavailable as exc:  # requests degrade to target-only until one starts
            log.warning("%s", exc)
            return None

    async def close(self) -> None:
        for task in self._releases:
            task.cancel()
        replicas = (*self.drafts, *self.targets, *self._leaving)
        closing = [r.channel.close() for r in replicas]
        await asyncio.gather(*closing, *self._closing, *self._releases, return_exceptions=True)


def _reprefill_span(resending: bool, address: str):
    """A re-prefill span around a call that sends a worker the whole history again."""
    return spans.phase(spans.REPREFILL, worker=address) if resending else contextlib.nullcontext()


async def _first_info(replicas: Sequence[Replica], timeout: float, role: str) -> common_pb2.WorkerInfo:
    calls = [asyncio.ensure_future(r.info(timeout)) for r in replicas]
    try:
        for next_done in asyncio.as_completed(calls):
            try:
                return await next_done
            except grpc.aio.AioRpcError:
                continue
    finally:
        for call in calls:
            call.cancel()
    addresses = ", ".join(r.address for r in replicas)
    raise EndpointUnavailable(f"no {role} worker answered GetInfo within {timeout:.0f}s at {addresses}: start one")
