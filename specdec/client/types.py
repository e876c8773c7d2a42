"""What the client sends and gets back: request building and typed results.

Torch-free: only the generated protobuf modules are imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Sequence

from specdec.client.errors import InvalidRequestError
from specdec.core.names import TREE_KWARGS
from specdec.core.params import PARAM_NAMES, GenerationParams
from specdec.pb.v1 import common_pb2
from specdec.pb.v1 import coordinator_pb2 as pb
from specdec.rpc.params import params_to_pb


@dataclass(frozen=True)
class Stats:
    """Per-request counters (docs/algorithms.md terms) and timings; also a read-only mapping,
    so `dict(stats)` and `stats["rounds"]` work."""

    tokens: int  # tokens returned
    prompt_tokens: int
    rounds: int  # target verification passes
    draft_tokens: int
    accepted_tokens: int
    emitted_tokens: int
    acceptance_rate: float  # accepted / drafted
    mean_acceptance_length: float  # tau = emitted / rounds
    time_to_first_token_s: float
    wall_s: float
    draft_compute_s: float
    target_compute_s: float
    network_s: float
    critical_compute_s: float
    reprefills: int  # worker sessions rebuilt from the coordinator's history
    draft_fallback: bool  # the draft failed; the request went on target-only
    seed: int  # the seed used
    tree_nodes: int = 0  # mode gsd: nodes in the verified token trees
    dag_nodes: int = 0  # mode gsd: distinct nodes the draft drafted
    merged_nodes: int = 0  # mode gsd: draws merged into an existing node
    saved_rows: int = 0  # mode gsd: tree nodes expanded without a draft row of their own
    saved_forwards: int = 0  # mode gsd: draft forwards skipped (levels already computed)
    mode_run: str = ""  # the mode the request ran (mode auto: the one it chose; "pearl,sequential" if it left PEARL)
    auto_k_rounds: dict = field(default_factory=dict)  # policy auto: draft length chosen -> rounds

    @classmethod
    def from_pb(cls, msg: pb.GenerationStats) -> "Stats":
        values = {f.name: getattr(msg, f.name) for f in fields(cls)}
        values["auto_k_rounds"] = dict(msg.auto_k_rounds)
        return cls(**values)

    def as_dict(self) -> dict:
        return asdict(self)

    def keys(self):
        return [f.name for f in fields(self)]

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)


@dataclass(frozen=True)
class Chunk:
    """One streamed piece: the text and token ids committed since the previous chunk.
    The last chunk also has `finish_reason` ("stop", "length", "cancelled") and `stats`."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None = None
    stats: Stats | None = None

    @classmethod
    def from_pb(cls, msg: pb.GenerateResponse) -> "Chunk":
        last = msg.HasField("stats")
        return cls(
            text=msg.text,
            token_ids=tuple(msg.token_ids),
            finish_reason=_finish_reason(msg.finish_reason) if last else None,
            stats=Stats.from_pb(msg.stats) if last else None,
        )


@dataclass(frozen=True)
class Completion:
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str
    stats: Stats

    @classmethod
    def from_pb(cls, msg: pb.CompleteResponse) -> "Completion":
        return cls(msg.text, tuple(msg.token_ids), _finish_reason(msg.finish_reason), Stats.from_pb(msg.stats))


@dataclass(frozen=True)
class Info:
    preset: str
    target_model: str
    draft_model: str
    modes: tuple[str, ...]
    policies: tuple[str, ...]
    context_length: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    draft_addresses: tuple[str, ...]
    target_addresses: tuple[str, ...]
    max_concurrent_requests: int

    @classmethod
    def from_pb(cls, msg: pb.CoordinatorInfo) -> "Info":
        values = {f.name: getattr(msg, f.name) for f in fields(cls)}
        return cls(**{k: tuple(v) if not isinstance(v, (str, int)) else v for k, v in values.items()})


def _finish_reason(value: int) -> str:
    return pb.FinishReason.Name(value).removeprefix("FINISH_REASON_").lower()


def build_request(prompt: str | Sequence[int] | Sequence[dict], **params) -> pb.GenerateRequest:
    """A GenerateRequest. `prompt` is text, token ids, or a conversation
    ([{"role": "system" | "user" | "assistant", "content": "..."}, ...], rendered with the
    model's chat template); `response_format` asks for structured output (OpenAI's shape:
    {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}} or
    {"type": "json_object"}; or {"type": "regex", "regex": ...}, {"type": "grammar",
    "grammar": "<EBNF>"}). The other `params` are the fields of
    specdec.core.params.GenerationParams (None or absent: the server's default):
    max_new_tokens, temperature, top_k, top_p, seed, mode, policy, draft_length, threshold,
    ignore_eos, chat, stop, and mode gsd's tree shape: `tree_width` children per node at
    most, `tree_depth` tokens per root path at most, `tree_nodes` nodes per tree at most; a
    node proposes only tokens with q >= `sibling_threshold` * max q, a child with q <
    `prob_threshold` is a leaf, and a drawn node whose token and `merge_context` preceding
    tokens match a node anywhere off its own path is linked to it (GSD's DAG; -1 = off). The server validates the values (InvalidRequestError)."""
    try:
        settings = GenerationParams(**params)
    except TypeError as exc:  # an unknown keyword
        raise InvalidRequestError(f"{exc}: the fields are {', '.join(PARAM_NAMES)}") from None
    except ValueError as exc:  # a response_format of the wrong shape
        raise InvalidRequestError(str(exc)) from None
    try:
        request = params_to_pb(settings)
    except ValueError as exc:
        if "must be one of" in str(exc):  # a mode or policy name
            raise InvalidRequestError(str(exc)) from None
        raise InvalidRequestError(f"{_misfit(settings)}: {exc}") from None
    except TypeError as exc:  # out of the wire type's range, or not a number
        raise InvalidRequestError(f"{_misfit(settings)}: {exc}") from None
    if isinstance(prompt, str):
        request.prompt = prompt
    elif prompt and isinstance(prompt[0], Mapping):
        for i, message in enumerate(prompt):
            if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
                raise InvalidRequestError(f'messages[{i}] must be {{"role": ..., "content": "<text>"}}')
            request.messages.add(role=str(message.get("role", "")), content=message["content"])
    else:
        request.prompt_token_ids.extend(int(t) for t in prompt)
    return request


def _misfit(settings: GenerationParams) -> str:
    """The first field whose value does not fit its wire type."""
    for name in PARAM_NAMES:
        value = getattr(settings, name)
        if value is None or name in ("mode", "policy", "stop"):
            continue
        message, field = (common_pb2.TreeParams, TREE_KWARGS[name]) if name in TREE_KWARGS else (pb.GenerateRequest, name)
        if not _fits(message, field, value):
            return name
    return "a field"


def _fits(message, field: str, value) -> bool:
    try:
        message(**{field: value})
        return True
    except (TypeError, ValueError):
        return False
