"""PEARL: drafting and verification overlapped, with neither side idle (docs/algorithms.md §4).

The target never waits for the draft's first token, and the draft never waits for a verdict:
- pre-verify: after a rejection (and at the start) the target at once runs a pass over
  the committed prefix alone. That pass needs no draft token: its last row is the
  target's distribution for the next position, and the worker keeps it. Meanwhile the
  draft starts the new window; its first token is judged against the kept row as soon
  as the target is free (no pass at all when it is rejected).
- post-verify: while the target verifies a window, the draft drafts the next window as
  if all were accepted. When all were, the pass's last row (the "bonus row") judges the
  next window's first token, in greedy and sampling alike; the rest of that window
  goes through the next pass. A rejection cancels the draft and both caches crop to
  the committed prefix on their next call (implicit rollback).

Every position is decided by exactly one test of §0 against the target's row for it
(accept with min(1, p/q), else the residual; or the target's own token when no draft
token is there), keyed by (seed, position). Which row or pass a position is judged in
depends on timing, never on a random draw, so the output distribution is exactly the
target's; seeded sampling is reproducible in distribution, greedy output exactly.

The loop is a small state (`_Pearl`) and one handler per event: a draft token arrived,
the draft stream ended or failed, the target's verdict arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass, field
from typing import AsyncIterator

from specdec.backend.endpoints import EndpointUnavailable
from specdec.runtime.drafting import DraftToken
from specdec.telemetry import spans


class _Stream:
    """One draft round: the tokens the policy's stop rule lets the draft propose after a
    base sequence, awaited one at a time. Its span lasts until it ends or is cancelled.
    The policy observes it once its fate is known (`judged`, `accepted`)."""

    def __init__(self, number: int, tokens: AsyncIterator[DraftToken]):
        self.number = number
        self._tokens = tokens
        self._next: asyncio.Task | None = None
        self.taken = 0  # tokens drafted so far
        self.judged = 0  # of those, tokens the target has decided
        self.accepted = 0
        self.ended = False  # the stop rule fired (not cancelled)
        self.observed = False  # the policy has seen this round
        self.span = spans.start_phase(spans.DRAFT)
        with spans.current(self.span):  # the worker call, opened by the first item, is the span's child
            self.next_task()

    def next_task(self) -> asyncio.Task:
        if self._next is None:
            self._next = asyncio.ensure_future(anext(self._tokens))
        return self._next

    def take(self) -> DraftToken | None:
        """The finished next item; None when the stop rule ended the stream. Raises what the
        endpoint raised (EndpointUnavailable: the draft worker is gone)."""
        task, self._next = self._next, None
        try:
            token = task.result()
        except StopAsyncIteration:
            self.ended = True
            self._end_span()
            return None
        except BaseException:
            self._end_span()
            raise
        self.taken += 1
        return token

    async def cancel(self) -> None:
        self.span.set_attribute(spans.CANCELLED, True)
        if self._next is not None:
            self._next.cancel()
            with contextlib.suppress(BaseException):
                await self._next
            self._next = None
        with contextlib.suppress(BaseException):
            await self._tokens.aclose()
        self._end_span()

    def _end_span(self) -> None:
        if self.span.is_recording():
            self.span.set_attribute(spans.DRAFT_TOKENS, self.taken)
            self.span.end()


@dataclass
class _Drafted:
    token: DraftToken
    stream: _Stream


@dataclass
class _Window:
    """What the target is verifying now: draft tokens (empty: a pre-verify pass)."""

    tokens: list[_Drafted]
    task: asyncio.Task
    span: object  # the round's span (specdec.telemetry.spans)


@dataclass
class _Pearl:
    """The state between events. `committed` is the request's (req.out.committed)."""

    req: object  # specdec.loop.generate.Request
    pending: list[_Drafted] = field(default_factory=list)  # drafted after the window, not yet sent
    stream: _Stream | None = None  # the draft round in progress
    window: _Window | None = None  # the target's call in flight
    target_has_row: bool = False  # the target's last pass ended at the committed sequence
    target_next: int | None = None  # that pass's own token for the next position (used when no draft comes)
    _numbers: itertools.count = field(default_factory=itertools.count)

    # -- what to do next ------------------------------------------------------------

    def start_draft_if_due(self) -> None:
        """The draft drafts without pause while fewer than K tokens (the request's draft
        length: PEARL's window) wait for the target; each stream is one policy round,
        continuing the committed sequence, the window in flight and the pending tokens."""
        req = self.req
        if self.stream is not None or req.draft is None:
            return
        room = req.draft_length - len(self.pending)
        ahead = [d.token.token for d in (self.window.tokens if self.window else [])] + [
            d.token.token for d in self.pending
        ]
        limit = min(room, req.out.remaining - len(ahead) - 1)
        if limit >= 1:
            self.stream = _Stream(next(self._numbers), req.draft_stream(req.out.committed + ahead, limit))

    def next_target_call(self) -> bool:
        """With the target idle: send it what there is. False when nothing can be sent and
        nothing is coming (the draft is gone): the caller then finishes target-only."""
        if self.pending or not self.target_has_row:
            # a window of everything drafted meanwhile, or a pre-verify pass over the prefix
            phase = spans.POST_VERIFY if self.pending else spans.PRE_VERIFY
            self._launch(self.pending, phase)
            self.pending = []
            return True
        if self.stream is not None:
            return True  # the next draft token is on its way: judged against the kept row
        # no draft is coming: the target's own token for the next position is the output
        self.req.commit([self.target_next])
        self.target_has_row, self.target_next = False, None
        return self.req.draft is not None or self.req.out.done

    def _launch(self, window: list[_Drafted], phase: str) -> None:
        span = self.req.start_round()
        with spans.current(span):
            task = asyncio.ensure_future(self.req.verify([d.token for d in window], phase))
        self.window = _Window(window, task, span)

    # -- events -----------------------------------------------------------------------

    def on_draft_token(self, token: DraftToken) -> None:
        self.req.note_draft(token)
        self.pending.append(_Drafted(token, self.stream))

    def on_draft_end(self) -> None:
        """The stop rule ended the round (its tokens are in the window or pending)."""
        stream, self.stream = self.stream, None
        self._settle(stream)

    def on_draft_failure(self, exc: Exception) -> None:
        """A dead draft: keep what it drafted, go on without it."""
        self.req.fall_back(exc)
        self.stream = None

    async def on_verdict(self, window: _Window, verdict) -> None:
        req = self.req
        tokens = window.tokens
        self.window = None
        judged = tokens[: verdict.accepted + (0 if verdict.all_accepted else 1)]
        for i, d in enumerate(judged):
            d.stream.judged += 1
            d.stream.accepted += int(i < verdict.accepted)
        if verdict.all_accepted:
            req.commit([d.token.token for d in tokens])
            req.record_round(window.span, len(tokens), verdict.accepted, recovered=False, bonus=False)
            self.target_has_row, self.target_next = True, verdict.next_token
            for stream in {id(d.stream): d.stream for d in tokens}.values():
                self._settle(stream)
        else:
            req.commit([d.token.token for d in tokens[: verdict.accepted]] + [verdict.next_token])
            req.record_round(window.span, len(tokens), verdict.accepted, recovered=True, bonus=False)
            self.target_has_row, self.target_next = False, None
            rejected_in = judged[-1].stream
            for stream in {id(d.stream): d.stream for d in judged[:-1]}.values():
                self._settle(stream)
            if not rejected_in.observed:
                rejected_in.observed = True
                req.observe(rejected_in.judged, rejected_in.accepted)
            await self._roll_back()
        window.span.end()

    # -- helpers ----------------------------------------------------------------------

    def idle(self) -> bool:
        """Nothing in flight, nothing drafted ahead, no kept row: right after a rejection."""
        return self.window is None and self.stream is None and not self.pending and not self.target_has_row

    def _settle(self, stream: _Stream) -> None:
        """Let the policy observe a round once it ended and the target judged all of it."""
        if stream.ended and not stream.observed and stream.judged == stream.taken > 0:
            stream.observed = True
            self.req.observe(stream.judged, stream.accepted)

    async def _roll_back(self) -> None:
        with spans.phase(spans.ROLLBACK, discarded_tokens=len(self.pending)):
            self.pending = []
            if self.stream is not None:
                await self.stream.cancel()
                self.stream = None

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.cancel()
            self.stream = None
        if self.window is not None:
            self.window.task.cancel()
            with contextlib.suppress(BaseException):
                await self.window.task
            self.window.span.end()
            self.window = None


async def run_pearl(req) -> None:
    """Run `req` (a specdec.loop.generate.Request) in PEARL mode until done, the draft is
    gone, or (mode auto) the request leaves PEARL after a rejection; then the caller's loop
    finishes it with sequential rounds (target-only without a draft)."""
    state = _Pearl(req)
    try:
        while not req.out.done:
            state.start_draft_if_due()
            if state.window is None:
                if not state.next_target_call():
                    return
                state.start_draft_if_due()  # the window took the pending tokens: room to draft again
                if state.window is None and state.stream is None:  # committed the target's own token
                    continue
            waits = ({state.window.task} if state.window else set()) | (
                {state.stream.next_task()} if state.stream else set()
            )
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            stream = state.stream
            if stream is not None and stream.next_task() in done:
                try:
                    token = stream.take()
                except EndpointUnavailable as exc:
                    state.on_draft_failure(exc)
                else:
                    if token is None:
                        state.on_draft_end()
                    else:
                        state.on_draft_token(token)
            if state.window is not None and state.window.task in done:
                await state.on_verdict(state.window, state.window.task.result())
                if state.idle() and req.leave_pearl():
                    return  # mode auto: sequential rounds pay more for this request
    finally:
        await state.close()
