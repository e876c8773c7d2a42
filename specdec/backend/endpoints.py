"""The two interfaces the request loop is written against: a draft endpoint and a
target endpoint. Their in-process implementations are in `specdec.backend.local`; the
gRPC ones (coordinator/remote.py) have the same shape, so one loop serves the embedded
engine and the distributed server alike.

Every call carries the whole committed sequence (a list the caller owns); an
implementation decides how much of it to send. Workers hold caches, never truth.
"""

from __future__ import annotations

from typing import AsyncIterator, Protocol, Sequence

from specdec.core.policies import StopRule
from specdec.core.sampling import SamplingParams, SparseDist
from specdec.core.tree import DraftTree, TreeParams
from specdec.gsd.verifying import TreeVerification
from specdec.runtime.drafting import DraftToken
from specdec.runtime.verifying import Verification


class EndpointUnavailable(RuntimeError):
    """The worker behind an endpoint cannot serve (dead, unreachable, shutting down)."""


class DraftEndpoint(Protocol):
    def draft(
        self, session_id: str, committed: Sequence[int], rule: StopRule, params: SamplingParams, seed: int
    ) -> AsyncIterator[DraftToken]: ...

    async def draft_tree(
        self, session_id: str, committed: Sequence[int], tree: TreeParams, params: SamplingParams, seed: int
    ) -> DraftTree: ...

    async def release(self, session_id: str) -> None: ...


class TargetEndpoint(Protocol):
    async def verify(
        self,
        session_id: str,
        committed: Sequence[int],
        draft: Sequence[int],
        proposals: Sequence[SparseDist] | None,
        params: SamplingParams,
        seed: int,
    ) -> Verification: ...

    async def verify_tree(
        self, session_id: str, committed: Sequence[int], tree: DraftTree, params: SamplingParams, seed: int
    ) -> TreeVerification: ...

    async def release(self, session_id: str) -> None: ...
