"""PEARL: drafting and verification overlapped (docs/algorithms.md §4).

The target never waits for a whole draft, and the draft never waits for a verdict:
- pre-verify: after a rejection the draft starts a new window and the target checks
  its FIRST token as soon as it exists, while the draft drafts on;
- post-verify: while the target verifies a window, the draft drafts the next window
  as if all were accepted; a rejection cancels that draft and both caches crop to
  the committed prefix on their next call (implicit rollback).
When all of a window is accepted the target's bonus token is dropped if the draft
has continued past it (its next tokens are tested instead), and used otherwise.
Both choices keep the output distribution exactly the target's: each position is
still decided by one standard accept/reject test, and which choice is taken does
not depend on any random draw.

Seeded sampling in this mode is reproducible in distribution, not bit for bit:
whether a bonus token is used depends on timing. Greedy output is always exact.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import AsyncIterator

from specdec.backend.endpoints import EndpointUnavailable
from specdec.runtime.drafting import DraftToken
from specdec.telemetry import spans


class _DraftStream:
    """An async iterator of draft tokens whose next item can be awaited as a task; its
    draft span lasts from the first request to the end (or cancel) of the stream."""

    def __init__(self, tokens: AsyncIterator[DraftToken]):
        self._tokens = tokens
        self._next: asyncio.Task | None = None
        self.taken = 0  # tokens drafted so far
        self.span = spans.start_phase(spans.DRAFT)
        with spans.current(self.span):  # the worker call, opened by the first item, is the span's child
            self.next_task()

    def next_task(self) -> asyncio.Task:
        if self._next is None:
            self._next = asyncio.ensure_future(anext(self._tokens))
        return self._next

    def take(self) -> DraftToken | None:
        """The finished next item; None when the stream ended (the stop rule fired)."""
        task, self._next = self._next, None
        try:
            token = task.result()
        except StopAsyncIteration:
            self.end()
            return None
        except BaseException:
            self.end()
            raise
        self.taken += 1
        return token

    async def next(self) -> DraftToken | None:
        await asyncio.wait({self.next_task()})
        return self.take()

    async def cancel(self) -> None:
        self.span.set_attribute(spans.CANCELLED, True)
        if self._next is not None:
            self._next.cancel()
            with contextlib.suppress(BaseException):
                await self._next
        with contextlib.suppress(BaseException):
            await self._tokens.aclose()
        self.end()

    def end(self) -> None:
        if self.span.is_recording():
            self.span.set_attribute(spans.DRAFT_TOKENS, self.taken)
            self.span.end()


@dataclass
class _InFlight:
    window: list[DraftToken]
    task: asyncio.Task
    span: object  # the round's span (specdec.telemetry.spans)


def _launch(req, window: list[DraftToken], phase: str) -> _InFlight:
    """Start verifying `window` as a task, in its own round span."""
    span = req.start_round()
    with spans.current(span):
        return _InFlight(window, asyncio.ensure_future(req.verify(window, phase)), span)


async def run_pearl(req) -> None:
    """Run `req` (an orchestration.Request) in PEARL mode until done or the draft fails;
    on a draft failure the caller's loop finishes the request target-only."""
    pending: list[DraftToken] = []  # drafted, not yet sent to the target
    stream: _DraftStream | None = None
    inflight: _InFlight | None = None
    expect: int | None = None  # greedy: the committed bonus token the draft's next token must equal

    async def check_expected(token: DraftToken) -> None:
        """The draft went on past a bonus token we committed: keep its stream only if
        its next token is that bonus token."""
        nonlocal stream, expect
        matched, expect = token.token == expect, None
        req.count_checked(matched)
        if not matched:
            await stream.cancel()
            stream = None

    try:
        while not req.out.done:
            in_window = inflight.window if inflight else []
            if stream is None and not pending and req.draft is not None:
                limit = req.out.remaining - len(in_window) - 1
                if limit >= 1:
                    base = req.out.committed + [d.token for d in in_window]
                    stream = _DraftStream(req.draft_stream(base, limit))

            if inflight is None:
                phase = spans.POST_VERIFY  # a window drafted while the previous one was verified
                if not pending:
                    phase = spans.PRE_VERIFY  # the first token of a window, verified as soon as it exists
                    if stream is None:
                        return  # nothing left to draft: the caller finishes target-only
                    try:
                        token = await stream.next()
                    except EndpointUnavailable as exc:
                        req.fall_back(exc)
                        stream = None
                        continue
                    if token is None:
                        stream, expect = None, None
                        continue
                    req.note_draft(token)
                    if expect is not None:
                        await check_expected(token)
                        continue
                    pending.append(token)
                inflight, pending = _launch(req, pending, phase), []
                continue

            waits = {inflight.task} | ({stream.next_task()} if stream else set())
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if stream is not None and stream.next_task() in done:
                try:
                    token = stream.take()
                except EndpointUnavailable as exc:
                    req.fall_back(exc)
                    token = None
                if token is None:
                    stream, expect = None, None
                elif expect is not None:
                    req.note_draft(token)
                    await check_expected(token)
                else:
                    req.note_draft(token)
                    pending.append(token)
            if inflight.task in done:
                verdict = inflight.task.result()
                window, span, inflight = [d.token for d in inflight.window], inflight.span, None
                if verdict.all_accepted:
                    draft_went_on = bool(pending) or stream is not None
                    use_bonus = not draft_went_on or req.params.greedy
                    req.commit(window + ([verdict.next_token] if use_bonus else []))
                    req.record_round(span, len(window), verdict.accepted, recovered=False, bonus=use_bonus)
                    if draft_went_on and use_bonus:
                        # Greedy: the bonus is the target's own next token, so it is kept; the
                        # draft's continuation stays only where it starts with that token.
                        if pending:
                            matched = pending[0].token == verdict.next_token
                            req.count_checked(matched)
                            if matched:
                                pending.pop(0)
                            else:
                                pending = []
                                if stream is not None:
                                    await stream.cancel()
                                    stream = None
                        else:
                            expect = verdict.next_token
                else:
                    req.commit(window[: verdict.accepted] + [verdict.next_token])
                    req.record_round(span, len(window), verdict.accepted, recovered=True, bonus=False)
                    with spans.phase(spans.ROLLBACK, discarded_tokens=len(pending)):
                        pending = []
                        if stream is not None:
                            await stream.cancel()
                            stream = None
                span.end()
    finally:
        if stream is not None:
            await stream.cancel()
        if inflight is not None:
            inflight.task.cancel()
            with contextlib.suppress(BaseException):
                await inflight.task
            inflight.span.end()
