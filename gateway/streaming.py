"""Server-sent events, and cancelling the coordinator's work when the HTTP client goes away.

A stream is `data: {json}\\n\\n` per chunk and `data: [DONE]\\n\\n` at the end (OpenAI's
framing). Its first chunk is awaited before the response starts (app.py), so that a
request the coordinator refuses gets a real HTTP status (400, 429, ...) instead of a 200
whose body is an error; an error after that point can only be an error event, in
OpenAI's shape, which the openai package raises as an APIError.

Cancellation: when the client disconnects, the task producing the stream is cancelled
and the SDK's stream closed, which cancels the gRPC call, so the coordinator stops
generating (and frees its workers' sessions) instead of finishing an answer nobody reads.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator, Awaitable, TypeVar

import anyio
from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.errors import from_sdk
from gateway.responses import Reply
from specdec.client import Chunk, SpecdecError

DONE = b"data: [DONE]\n\n"
T = TypeVar("T")


def sse(data: dict) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def chunk_events(
    first: Chunk, rest: AsyncIterator[Chunk], reply: Reply, include_usage: bool
) -> AsyncIterator[bytes]:
    """The SSE body of one streamed completion: (chat: the role,) a chunk per text delta,
    the finish chunk with our stats, (include_usage: the usage,) [DONE]. Closing this
    generator closes `rest`, the SDK's stream, which cancels the gRPC call."""
    try:
        if reply.chat:
            yield sse(reply.role_chunk(include_usage))
        chunk = first
        while True:
            if chunk.text:
                yield sse(reply.text_chunk(chunk.text, include_usage))
            if chunk.finish_reason is not None:
                yield sse(reply.finish_chunk(chunk.finish_reason, chunk.stats, include_usage))
                if include_usage and chunk.stats is not None:
                    yield sse(reply.usage_chunk(chunk.stats))
                break
            try:
                chunk = await anext(rest)
            except StopAsyncIteration:  # the coordinator always ends with a finish reason; be safe
                break
    except SpecdecError as exc:  # after the headers went out, an error can only be an event
        yield sse(from_sdk(exc).body())
    finally:
        await rest.aclose()
    yield DONE


class EventStream(StreamingResponse):
    """A text/event-stream response whose body generator is cancelled as soon as the client
    disconnects, whichever ASGI spec version the server speaks, and always closed at the end
    (Starlette leaves a generator suspended at `yield` unclosed when sending fails)."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes]):
        # no-cache and X-Accel-Buffering: proxies (nginx) must pass events on as they come
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # the connection broke mid-send: the client is gone
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            await self.body_iterator.aclose()


class ClientGone(Exception):
    """The HTTP client disconnected before its answer was ready."""


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and with it the gRPC call) if the client disconnects
    first: a non-streamed request abandoned by its client (a load tool's timeout) must not
    keep the coordinator busy. Raises ClientGone then."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this handler itself is cancelled (the server shutting down)
        watch.cancel()
        if not task.done():
            task.cancel()
    if task not in done:
        raise ClientGone()
    return task.result()
