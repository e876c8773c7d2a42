"""What the client sends and gets back: request building and typed results.

Torch-free: only the generated protobuf modules are imported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Sequence

from specdec.client.errors import InvalidRequestError
from specdec.core.names import TREE_KWARGS
from specdec.pb.v1 import common_pb2
from specdec.pb.v1 import coordinator_pb2 as pb


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

    @classmethod
    def from_pb(cls, msg: pb.GenerationStats) -> "Stats":
        return cls(**{f.name: getattr(msg, f.name) for f in fields(cls)})

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


def _enum_value(enum_type, prefix: str, field: str, name: str | None) -> int:
    if name is None:
        return 0  # UNSPECIFIED: the server's default
    try:
        return enum_type.Value(f"{prefix}{name.upper()}")
    except ValueError:
        choices = ", ".join(n.removeprefix(prefix).lower() for n in enum_type.keys() if not n.endswith("UNSPECIFIED"))
        raise InvalidRequestError(f"{field} must be one of {choices}; got {name!r}") from None


def build_request(
    prompt: str | Sequence[int],
    *,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_k: int = 0,
    top_p: float | None = None,
    seed: int | None = None,
    mode: str | None = None,
    policy: str | None = None,
    draft_length: int | None = None,
    threshold: float | None = None,
    ignore_eos: bool = False,
    chat: bool = False,
    stop: Sequence[str] = (),
    tree_width: int | None = None,
    tree_depth: int | None = None,
    tree_nodes: int | None = None,
    sibling_threshold: float | None = None,
    prob_threshold: float | None = None,
    merge_context: int | None = None,
) -> pb.GenerateRequest:
    """A GenerateRequest; None leaves a field to the server's default. `prompt` is text
    or token ids. The server validates the values (InvalidRequestError).

    Mode gsd's draft trees: `tree_width` children per node at most, `tree_depth` tokens
    per root path at most, `tree_nodes` nodes per tree at most; a node proposes only
    tokens with q >= `sibling_threshold` * max q, a child with q < `prob_threshold` is a
    leaf, and nodes whose last `merge_context` + 1 tokens match are merged (0 = off)."""
    if isinstance(stop, str):
        stop = [stop]
    values = dict(
        top_k=top_k, ignore_eos=ignore_eos, chat=chat, stop=list(stop), max_new_tokens=max_new_tokens,
        temperature=temperature, top_p=top_p, seed=seed, draft_length=draft_length, threshold=threshold,
    )
    given = dict(
        tree_width=tree_width, tree_depth=tree_depth, tree_nodes=tree_nodes, sibling_threshold=sibling_threshold,
        prob_threshold=prob_threshold, merge_context=merge_context,
    )
    tree = {kwarg: (TREE_KWARGS[kwarg], value) for kwarg, value in given.items()}  # SDK kwarg -> TreeParams field
    try:
        request = pb.GenerateRequest(
            mode=_enum_value(pb.Mode, "MODE_", "mode", mode),
            policy=_enum_value(pb.Policy, "POLICY_", "policy", policy),
            **values,
        )
        set_tree = {name: v for name, v in tree.values() if v is not None}
        if set_tree:
            request.tree.CopyFrom(common_pb2.TreeParams(**set_tree))
    except (TypeError, ValueError) as exc:  # out of the wire type's range, or not a number
        bad = next((k for k, v in values.items() if not _fits(pb.GenerateRequest, k, v)), None)
        bad = bad or next((k for k, (n, v) in tree.items() if not _fits(common_pb2.TreeParams, n, v)), "a field")
        raise InvalidRequestError(f"{bad}: {exc}") from None
    if isinstance(prompt, str):
        request.prompt = prompt
    else:
        request.prompt_token_ids.extend(int(t) for t in prompt)
    return request


def _fits(message, field: str, value) -> bool:
    try:
        message(**{field: value})
        return True
    except (TypeError, ValueError):
        return False
