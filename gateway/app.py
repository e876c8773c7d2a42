"""The FastAPI app: OpenAI's endpoints over one SDK AsyncClient of the coordinator.

    POST /v1/completions        text (or token ids) in, text out; streamed or not
    POST /v1/chat/completions   messages in (the coordinator renders the chat template)
    GET  /v1/models             the one served model (GET /v1/models/{id} too)
    GET  /health                200 once the coordinator answers; open without a token

Each request is one Complete (not streamed) or Generate (streamed) call; translate.py
renames the fields, responses.py shapes the answer, errors.py maps failures onto
OpenAI's error shape. docs/http-api.md is the reference.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from gateway import errors
from gateway.auth import bearer_check
from gateway.catalog import Catalog
from gateway.errors import SERVER, UNAVAILABLE, GatewayError
from gateway.openai_types import ChatCompletionRequest, CompletionRequest, OpenAIRequest
from gateway.responses import Reply
from gateway.streaming import ClientGone, EventStream, cancel_on_disconnect, chunk_events
from gateway.translate import chat_messages, completion_prompt, generation_params
from specdec import __version__
from specdec.client import AsyncClient, Info, SpecdecError

CLIENT_CLOSED = 499  # nginx's status for "the client went away first"; nobody reads it


def create_app(client: AsyncClient, *, model_name: str | None = None, auth_token: str | None = None) -> FastAPI:
    """The gateway's app. `client` is the SDK's AsyncClient of the coordinator (created in
    the event loop that serves the app; the caller closes it); `model_name` overrides the
    served name (default: the coordinator's target model); `auth_token`: clients must send
    it as a bearer token on /v1 (None: open)."""
    catalog = Catalog(client, model_name)
    app = FastAPI(title="specdec: OpenAI-compatible HTTP API", version=__version__, docs_url=None, redoc_url=None)
    errors.install(app)
    started = int(time.time())

    @app.get("/health")
    async def health():
        """Ready when the coordinator answers GetInfo (with the gateway's token)."""
        try:
            await catalog.refresh()
            return {"status": "ok", "model": await catalog.name()}
        except (SpecdecError, GatewayError) as exc:
            detail = exc.details if isinstance(exc, SpecdecError) else exc.message
            return GatewayError(503, f"the coordinator at {client.address} is not ready: {detail}",
                                UNAVAILABLE).response()

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(bearer_check(auth_token))])

    def card(name: str, info: Info) -> dict:
        """OpenAI's model object; vLLM's max_model_len; what the coordinator offers per request."""
        return {
            "id": name, "object": "model", "created": started, "owned_by": "specdec",
            "max_model_len": info.context_length,
            "specdec": {"preset": info.preset, "target_model": info.target_model, "draft_model": info.draft_model,
                        "modes": list(info.modes), "policies": list(info.policies),
                        "max_concurrent_requests": info.max_concurrent_requests},
        }

    @v1.get("/models")
    async def models():
        return {"object": "list", "data": [card(await catalog.name(), await catalog.info())]}

    @v1.get("/models/{model:path}")
    async def model(model: str):
        return card(await catalog.resolve(model), await catalog.info())

    @v1.post("/completions")
    async def completions(body: CompletionRequest, request: Request):
        return await generate(request, body, completion_prompt(body), chat=False)

    @v1.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await generate(request, body, chat_messages(body), chat=True)

    async def generate(request: Request, body: OpenAIRequest, prompt, chat: bool) -> Response:
        params = generation_params(body)
        reply = Reply(chat=chat, model=await catalog.resolve(body.model))
        if not body.stream:
            try:
                result = await cancel_on_disconnect(request, client.complete(prompt, **params))
            except ClientGone:
                return Response(status_code=CLIENT_CLOSED)
            return JSONResponse(reply.body(result))
        stream = client.generate_stream(prompt, **params)

        async def first_chunk():
            return await anext(stream)

        # The first chunk before the headers: a refused request gets its real status, not a 200
        try:
            first = await cancel_on_disconnect(request, first_chunk())
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        except StopAsyncIteration:
            raise GatewayError(500, "the coordinator ended the stream without a response", SERVER) from None
        except BaseException:
            await stream.aclose()
            raise
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStream(chunk_events(first, stream, reply, include_usage))

    app.include_router(v1)
    return app
