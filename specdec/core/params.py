"""What a caller may set on a request besides its prompt: one definition for the SDK,
the embedded engine and the command lines. Torch-free (the SDK uses it).

`None` leaves a value to the default (`GenerationRequest.from_params` applies them; over
gRPC an unset field is the server's default). The proto edge is `specdec.rpc.params`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from specdec.core.constraint import OutputConstraint, parse_response_format
from specdec.core.names import TREE_KWARGS


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int | None = None  # default 64
    temperature: float | None = None  # default 0: greedy
    top_k: int = 0  # 0: off
    top_p: float | None = None  # default 1: off
    seed: int | None = None  # None: a fresh seed, reported in the result
    mode: str | None = None  # auto | autoregressive | sequential | pearl | gsd (default: names.DEFAULT_MODE)
    # auto | fixed | heuristic | adaedl | specdecpp | adaedl_late (default: names.DEFAULT_POLICY)
    policy: str | None = None
    # k for fixed/heuristic (start), k_max for adaedl/specdecpp, the window for pearl; None: 8 for auto,
    # 20 for specdecpp, else 4, or in mode pearl the measured draft/target speed ratio
    draft_length: int | None = None
    threshold: float | None = None  # specdecpp's stop threshold
    ignore_eos: bool = False  # generate exactly max_new_tokens (benchmarks)
    chat: bool = False  # wrap a text prompt in the tokenizer's chat template
    stop: tuple[str, ...] = ()  # stop strings (served by the coordinator)
    # mode gsd's tree shape (TREE_KWARGS maps them to TreeParams fields)
    tree_width: int | None = None  # children drawn per node, at most
    tree_depth: int | None = None  # draft tokens per root path, at most
    tree_nodes: int | None = None  # nodes per draft tree, at most
    sibling_threshold: float | None = None  # a node proposes only tokens with q >= this * max q
    prob_threshold: float | None = None  # a child with q below this is a leaf
    merge_context: int | None = None  # merge nodes whose last N + 1 tokens match; 0: off
    # structured output: OpenAI's response_format ({"type": "json_schema", "json_schema": {"schema": ...}},
    # {"type": "json_object"}) or ours ({"type": "regex", "regex": ...}, {"type": "grammar", "grammar": ...})
    response_format: OutputConstraint | dict | None = None

    def __post_init__(self):
        object.__setattr__(self, "response_format", parse_response_format(self.response_format))
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))

    def tree_fields(self) -> dict:
        """{TreeParams field: value} of the tree settings that are set."""
        return {field: getattr(self, kwarg) for kwarg, field in TREE_KWARGS.items() if getattr(self, kwarg) is not None}


PARAM_NAMES = tuple(f.name for f in fields(GenerationParams))
