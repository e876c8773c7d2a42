"""SDK results -> OpenAI's response bodies and stream chunks.

Shapes are OpenAI's exactly; our per-request stats (specdec.client.Stats: rounds,
acceptance, the mode that ran, timings) ride along in one extra top-level field,
`specdec`, which OpenAI's clients keep (`response.model_extra["specdec"]` in the openai
package) and ignore otherwise. Finish reasons are the coordinator's, which are OpenAI's
("stop": EOS or a stop string, "length"); "cancelled" happens only when the coordinator
shuts down mid-request.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from specdec.client import Completion, Stats

STATS_FIELD = "specdec"


def usage(stats: Stats) -> dict:
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.tokens,
            "total_tokens": stats.prompt_tokens + stats.tokens}


@dataclass(frozen=True)
class Reply:
    """What every body and chunk of one response shares."""

    chat: bool
    model: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self):
        if not self.id:
            object.__setattr__(self, "id", f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}")

    def _head(self, object: str) -> dict:
        return {"id": self.id, "object": object, "created": self.created, "model": self.model}

    # ------------------------------------------------------------------ whole responses

    def body(self, result: Completion) -> dict:
        """The non-streamed response."""
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text},
                      "logprobs": None, "finish_reason": result.finish_reason}
            head = self._head("chat.completion")
        else:
            choice = {"index": 0, "text": result.text, "logprobs": None,
                      "finish_reason": result.finish_reason}
            head = self._head("text_completion")
        return {**head, "choices": [choice], "usage": usage(result.stats), STATS_FIELD: result.stats.as_dict()}

    # ------------------------------------------------------------------ stream chunks

    def _chunk(self, choice: dict, with_usage: bool) -> dict:
        head = self._head("chat.completion.chunk" if self.chat else "text_completion")
        chunk = {**head, "choices": [choice]}
        if with_usage:  # OpenAI: with include_usage, every chunk carries "usage": null but the last
            chunk["usage"] = None
        return chunk

    def role_chunk(self, with_usage: bool) -> dict:
        """Chat streams open with the assistant's role, as OpenAI's do."""
        return self._chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                            "finish_reason": None}, with_usage)

    def text_chunk(self, text: str, with_usage: bool) -> dict:
        if self.chat:
            choice = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": None}
        return self._chunk(choice, with_usage)

    def finish_chunk(self, reason: str | None, stats: Stats | None, with_usage: bool) -> dict:
        """The choice's last chunk: no text, the finish reason, our stats."""
        if self.chat:
            choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": reason}
        chunk = self._chunk(choice, with_usage)
        if stats is not None:
            chunk[STATS_FIELD] = stats.as_dict()
        return chunk

    def usage_chunk(self, stats: Stats) -> dict:
        """stream_options.include_usage: the last chunk before [DONE], with no choices."""
        head = self._head("chat.completion.chunk" if self.chat else "text_completion")
        return {**head, "choices": [], "usage": usage(stats)}
