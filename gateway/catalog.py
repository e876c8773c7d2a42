"""What the gateway serves: one model, named by --served-model-name or else by the
coordinator's GetInfo (its target model), asked lazily and cached.

Lazily, so that the gateway can start before the coordinator (a Kubernetes rollout starts
pods in any order): until the coordinator answers, requests get 503 and /health says not
ready. Every /health check asks again and refreshes the cache.

The name is strict, as in vLLM: a request naming another model gets 404
model_not_found, so a client pointed at the wrong server fails loudly instead of being
answered by a model it did not ask for. A request without `model` gets the served one.
"""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath

from gateway.errors import UNAVAILABLE, GatewayError
from specdec.client import AsyncClient, Info

INFO_TIMEOUT_S = 5.0  # GetInfo is bookkeeping; a coordinator slower than this is not ready


def served_name(info: Info) -> str:
    """The coordinator's target model name; a local folder (an absolute or ./ path, as the
    workers report models loaded with --model) by its last component only, so that the
    name neither leaks the server's file system nor changes with the mount point."""
    name = info.target_model or info.preset
    if name.startswith(("/", "./", "../", "~")):
        name = PurePosixPath(name).name or name
    return name


class Catalog:
    def __init__(self, client: AsyncClient, name: str | None = None, timeout_s: float = INFO_TIMEOUT_S):
        self.client, self.configured_name, self.timeout_s = client, name, timeout_s
        self._info: Info | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> Info:
        """GetInfo now; SDK errors propagate (UnavailableError: 503), a slow answer is a 503."""
        try:
            self._info = await asyncio.wait_for(self.client.info(), self.timeout_s)
        except asyncio.TimeoutError:
            raise GatewayError(503, f"the coordinator at {self.client.address} did not answer GetInfo within "
                                    f"{self.timeout_s:.0f}s", UNAVAILABLE) from None
        return self._info

    async def info(self) -> Info:
        if self._info is None:
            async with self._lock:  # one GetInfo for a burst of first requests
                if self._info is None:
                    await self.refresh()
        return self._info

    async def name(self) -> str:
        if self.configured_name:
            return self.configured_name
        return served_name(await self.info())

    async def resolve(self, requested: str | None) -> str:
        """The served model's name, or 404 in OpenAI's shape if `requested` names another."""
        name = await self.name()
        if requested is not None and requested != name:
            raise GatewayError(
                404, f"The model `{requested}` does not exist: this server serves `{name}` (GET /v1/models)",
                param="model", code="model_not_found",
            )
        return name
