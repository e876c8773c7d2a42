"""The OpenAI-compatible HTTP gateway: a fourth, thin service in front of the coordinator.

It speaks OpenAI's HTTP API (POST /v1/completions, POST /v1/chat/completions, streamed
with server-sent events or not, GET /v1/models, GET /health) and is a plain client of the
coordinator's gRPC API through the SDK (specdec.client.AsyncClient): every request becomes
one Generate or Complete call, so the gRPC contract stays the one truth and the gateway
adds no tokens, defaults or validation of its own beyond OpenAI's request shape.

    config.py        GatewayConfig (flags: specdec serve gateway)
    openai_types.py  the request bodies (pydantic)
    translate.py     an OpenAI request -> the SDK's prompt and parameters
    responses.py     SDK results -> OpenAI response bodies and stream chunks
    errors.py        OpenAI's error shape; SDK errors -> HTTP statuses
    auth.py          the bearer token check
    streaming.py     server-sent events, cancelled when the client goes away
    catalog.py       the served model's name and info (the coordinator's GetInfo, cached)
    app.py           the FastAPI app factory
    server.py        start(config) -> RunningGateway (uvicorn in the caller's event loop)

No torch, no models: the gateway runs wherever the SDK runs (docs/http-api.md).
"""
