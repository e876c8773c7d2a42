"""Text <-> token ids, once for every caller: prompts in (`encode_prompt`, with the
tokenizer's chat template), text deltas out (`TextStream`: incremental detokenisation
and stop strings). The coordinator, the embedded engine and SpecDec++'s data all use them.

Decoding follows TGI's two-offset scheme: decode a small window of recent ids with
and without the new ones and emit the difference, so a long output is never decoded
from the start again. Two things are held back: a trailing partial UTF-8 character
(the window then ends in U+FFFD) and any tail that may be the start of a stop
string. The concatenated deltas are the final text.
"""

from __future__ import annotations

from typing import Sequence


def encode_prompt(tokenizer, prompt: str, chat: bool) -> list[int]:
    """The prompt's ids; `chat` wraps it as one user turn in the tokenizer's own chat
    template (when the tokenizer has one)."""
    if not prompt:
        raise ValueError("prompt is empty: give some text or token ids")
    if chat and getattr(tokenizer, "chat_template", None):
        return list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
    return list(tokenizer(prompt)["input_ids"])


CHAT_ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 256


def encode_messages(tokenizer, messages: Sequence) -> list[int]:
    """A conversation's ids: [(role, content) or {"role", "content"}, ...] rendered with the
    tokenizer's own chat template, ending with the prompt for the assistant's reply."""
    if not messages:
        raise ValueError("messages is empty: give at least one turn")
    if len(messages) > MAX_MESSAGES:
        raise ValueError(f"messages holds {len(messages)} turns, at most {MAX_MESSAGES}")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this model's tokenizer has no chat template: send a prompt instead of messages")
    turns = []
    for i, message in enumerate(messages):
        role, content = (message["role"], message["content"]) if isinstance(message, dict) else message
        if role not in CHAT_ROLES:
            raise ValueError(f"messages[{i}].role must be one of {', '.join(CHAT_ROLES)}; got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string")
        turns.append({"role": role, "content": content})
    return list(tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True, return_dict=False))


PROMPT_CONTEXT = 5  # prompt ids decoded with the first tokens (spacing of SentencePiece-style tokenizers)


class TextStream:
    def __init__(self, tokenizer, prompt_ids: Sequence[int] = (), stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.ids = list(prompt_ids[-PROMPT_CONTEXT:])
        self.prefix_offset = 0  # start of the decode window
        self.read_offset = len(self.ids)  # ids before this are already in `text`
        self.text = ""  # decoded so far (cut at the stop string once one matched)
        self.sent = 0  # characters of `text` already returned
        self.tokens = 0  # generated ids consumed (after a stop string: none more)
        self.stopped = False  # a stop string matched

    def push(self, ids: Sequence[int]) -> tuple[str, list[int]]:
        """Consume newly committed ids; returns (text delta, the ids kept). Ids after
        the one that completes a stop string are dropped."""
        kept = []
        for token in ids:
            if self.stopped:
                break
            kept.append(token)
            self.ids.append(token)
            self.tokens += 1
            self._append(self._decode_window(final=False))
        return self._take(final=False), kept

    def finish(self) -> str:
        """The rest of the text (held-back characters included) once generation ended."""
        if not self.stopped:
            self._append(self._decode_window(final=True))
        return self._take(final=True)

    def _decode_window(self, final: bool) -> str:
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True)
        after = decode(self.ids[self.prefix_offset :], skip_special_tokens=True)
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return after[len(before) :]
        return ""

    def _append(self, new: str) -> None:
        if not new:
            return
        self.text += new
        # a match cannot start in text already sent: that text was held back while it could
        hits = [i for i in (self.text.find(s, self.sent) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True

    def _held_back(self) -> int:
        """Length of the longest tail of `text` that begins some stop string."""
        tail = len(self.text) - self.sent
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, tail), best, -1):
                if self.text.endswith(s[:k]):
                    best = k
                    break
        return best

    def _take(self, final: bool) -> str:
        end = len(self.text) if final or self.stopped else len(self.text) - self._held_back()
        delta, self.sent = self.text[self.sent : end], max(self.sent, end)
        return delta
