"""The in-process endpoints: a draft and a target model served from this process.
The draft and target workers wrap them in gRPC servicers; the embedded engine and the
bench call them directly."""

from __future__ import annotations

import asyncio
import threading
from typing import AsyncIterator

import torch

from specdec.backend.sessions import ModelThread, SessionStore
from specdec.core.tree import DraftTree
from specdec.gsd.drafting import draft_tree
from specdec.grammar import GrammarCompiler, guide_for
from specdec.gsd.verifying import TreeVerification, verify_draft_tree
from specdec.runtime.cost import ForwardBudget
from specdec.runtime.drafting import (
    DEFAULT_PROPOSAL_TOP_N,
    AcceptanceHead,
    DraftToken,
    draft_tokens,
)
from specdec.runtime.verifying import Verification, verify_draft

_END = object()


class LocalDraft:
    def __init__(
        self,
        model: torch.nn.Module,
        budget: ForwardBudget | None = None,
        top_n: int = DEFAULT_PROPOSAL_TOP_N,
        head: AcceptanceHead | None = None,
        max_sessions: int = 256,
        ttl_s: float = 600.0,
        max_batch: int = 1,
        batch_wait_s: float = 0.002,
        chunk_tokens: int | None = None,
        grammar: GrammarCompiler | None = None,  # structured output (None: requests with a constraint fail)
    ):
        self.sessions = SessionStore(model, budget, max_sessions, ttl_s)
        self.top_n, self.head, self.grammar = top_n, head, grammar
        self._thread = ModelThread("draft", self.sessions, max_batch, batch_wait_s, chunk_tokens)

    def draft(self, session_id, committed, rule, params, seed) -> AsyncIterator[DraftToken]:
        return self.draft_from(session_id, 0, committed, rule, params, seed)

    async def draft_from(self, session_id, start, tokens, rule, params, seed) -> AsyncIterator[DraftToken]:
        """Draft after `session.tokens[:start] + tokens` (a worker gets only the tokens it
        lacks); raises SessionStateLost if the session holds fewer than `start` tokens."""
        if rule.needs_acceptance_head and self.head is None:
            raise ValueError("policy specdecpp needs an acceptance head: load one with --acceptance-head")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        tokens = list(tokens)

        def work():
            if stop.is_set():  # the consumer left before this call reached the model thread
                return
            try:
                session = self.sessions.get(session_id)
                guide = _guide(session, self.grammar, params)
                for tok in draft_tokens(session, start, tokens, rule, params, seed, self.top_n, self.head, guide):
                    loop.call_soon_threadsafe(queue.put_nowait, tok)
                    if stop.is_set():
                        break
            except BaseException as exc:  # surfaced to the consumer below
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        self._thread.submit(session_id, work)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    async def draft_tree(self, session_id, committed, tree, params, seed) -> DraftTree:
        return await self.draft_tree_from(session_id, 0, committed, tree, params, seed)

    async def draft_tree_from(self, session_id, start, tokens, tree, params, seed) -> DraftTree:
        """A GSD draft tree after `session.tokens[:start] + tokens` (see draft_from)."""
        tree.validate()
        tokens = list(tokens)

        def work():
            session = self.sessions.get(session_id)
            guide = _guide(session, self.grammar, params)
            return draft_tree(session, start, tokens, tree, params, seed, self.top_n, guide)

        return await self._thread.run(session_id, work)

    async def release(self, session_id: str) -> None:
        self._thread.release(self.sessions, session_id)


class LocalTarget:
    def __init__(
        self,
        model: torch.nn.Module,
        budget: ForwardBudget | None = None,
        max_sessions: int = 256,
        ttl_s: float = 600.0,
        max_batch: int = 1,
        batch_wait_s: float = 0.002,
        chunk_tokens: int | None = None,
        grammar: GrammarCompiler | None = None,  # structured output (None: requests with a constraint fail)
    ):
        self.sessions = SessionStore(model, budget, max_sessions, ttl_s)
        self.grammar = grammar
        self._thread = ModelThread("target", self.sessions, max_batch, batch_wait_s, chunk_tokens)

    async def verify(self, session_id, committed, draft, proposals, params, seed) -> Verification:
        return await self.verify_from(session_id, 0, committed, draft, proposals, params, seed)

    async def verify_from(self, session_id, start, tokens, draft, proposals, params, seed) -> Verification:
        """Verify `draft` after `session.tokens[:start] + tokens` (see LocalDraft.draft_from)."""
        tokens, draft = list(tokens), list(draft)

        def work():
            session = self.sessions.get(session_id)
            guide = _guide(session, self.grammar, params)
            return verify_draft(session, start, tokens, draft, proposals, params, seed, guide)

        return await self._thread.run(session_id, work)

    async def verify_tree(self, session_id, committed, tree, params, seed) -> TreeVerification:
        return await self.verify_tree_from(session_id, 0, committed, tree, params, seed)

    async def verify_tree_from(self, session_id, start, tokens, tree, params, seed) -> TreeVerification:
        """Verify a GSD draft tree after `session.tokens[:start] + tokens`."""
        tokens = list(tokens)

        def work():
            session = self.sessions.get(session_id)
            return verify_draft_tree(session, start, tokens, tree, params, seed, _guide(session, self.grammar, params))

        return await self._thread.run(session_id, work)

    async def release(self, session_id: str) -> None:
        self._thread.release(self.sessions, session_id)


def _guide(session, grammar: GrammarCompiler | None, params):
    """The session's grammar state for this request (kept on the session, so it rolls back with it)."""
    session.guide = guide_for(session.guide, grammar, params.constraint)
    return session.guide
