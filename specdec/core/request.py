"""What a caller asks for and what it gets back: typed, validated, transport-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from specdec.core.names import DEFAULT_MODE, DEFAULT_POLICY, FinishReason, Mode, PolicyName  # noqa: F401
from specdec.core.params import GenerationParams
from specdec.core.policies import SPECDECPP_K_MAX, make_policy
from specdec.core.sampling import SamplingParams
from specdec.core.speed import DEFAULT_DRAFT_LENGTH, SpeedRatio
from specdec.core.tree import TreeParams

MAX_NEW_TOKENS_LIMIT = 32768
AUTO_K_MAX = 8  # policy auto chooses k in 0..8 unless the request names draft_length


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: tuple[int, ...]
    max_new_tokens: int = 64
    sampling: SamplingParams = field(default_factory=SamplingParams)
    seed: int | None = None  # None: a fresh seed, reported in the result
    mode: Mode = DEFAULT_MODE
    policy: str = DEFAULT_POLICY.value
    # k for fixed/heuristic (start), k_max for adaedl/specdecpp, the window for pearl; None: the policy's own
    # k_max (auto 8, specdecpp 20), else DEFAULT_DRAFT_LENGTH, or in mode pearl the measured draft/target
    # speed ratio (specdec/core/speed.py)
    draft_length: int | None = None
    threshold: float | None = None  # specdecpp's stop threshold
    ignore_eos: bool = False  # generate exactly max_new_tokens (benchmarks)
    stop_token_ids: tuple[int, ...] = ()
    tree: TreeParams = field(default_factory=TreeParams)  # mode gsd: how draft trees are grown

    @classmethod
    def from_params(cls, prompt_ids, params: GenerationParams) -> "GenerationRequest":
        """The core request for `prompt_ids` with the caller's `params`, defaults filled in
        (the one place they are: the SDK, the engine and the coordinator all come here).
        Call `validate` next; stop strings are the coordinator's (text), not the core's."""
        return cls(
            prompt_ids=tuple(prompt_ids),
            max_new_tokens=cls.max_new_tokens if params.max_new_tokens is None else params.max_new_tokens,
            sampling=SamplingParams(
                temperature=0.0 if params.temperature is None else params.temperature,
                top_k=params.top_k,
                top_p=1.0 if params.top_p is None else params.top_p,
                constraint=params.response_format.at(len(prompt_ids)) if params.response_format else None,
            ),
            seed=params.seed,
            mode=DEFAULT_MODE if params.mode is None else parse_mode(params.mode),
            policy=DEFAULT_POLICY.value if params.policy is None else params.policy,
            draft_length=params.draft_length,
            threshold=params.threshold,
            ignore_eos=params.ignore_eos,
            tree=TreeParams(**params.tree_fields()),
        )

    def validate(self, context_length: int | None = None, vocab_size: int | None = None) -> None:
        """Raise ValueError naming the field and the fix."""
        if not self.prompt_ids:
            raise ValueError("prompt is empty: give at least one token")
        if vocab_size is not None:
            bad = [t for t in self.prompt_ids if not 0 <= t < vocab_size]
            if bad:
                raise ValueError(f"prompt_token_ids has ids outside 0..{vocab_size - 1}: {bad[:5]}")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise ValueError(f"max_new_tokens must be in 1..{MAX_NEW_TOKENS_LIMIT}, got {self.max_new_tokens}")
        if context_length is not None and len(self.prompt_ids) >= context_length:
            raise ValueError(
                f"prompt is {len(self.prompt_ids)} tokens, the model's context is {context_length}: shorten the prompt"
            )
        if not isinstance(self.mode, Mode):
            raise ValueError(f"mode must be one of {', '.join(m.value for m in Mode)}; got {self.mode!r}")
        self.sampling.validate()
        if self.sampling.constraint is not None and self.ignore_eos:
            raise ValueError("response_format and ignore_eos do not go together: a finished document ends with EOS")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in 0..2**63-1, got {self.seed}")
        make_policy(self.policy, self.resolved_draft_length(None), self.threshold)  # policy, draft_length, threshold
        self.tree.validate()

    def resolved_draft_length(self, speed: SpeedRatio | None, mode: Mode | None = None) -> int:
        """The draft length this request runs with (in `mode`, default its own): its own,
        else its policy's own k_max, else PEARL's measured window, else the default."""
        if self.draft_length is not None:
            return self.draft_length
        own = policy_draft_length(self.policy)
        if own is not None:
            return own
        if (mode or self.mode) is Mode.PEARL and speed is not None:
            return speed.window()
        return DEFAULT_DRAFT_LENGTH


def policy_draft_length(policy: str) -> int | None:
    """The k_max a policy runs with when the request names no draft_length (None: the
    mode's default). Policy auto plans k up to 8; SpecDec++'s head ends rounds, so its cap
    is the paper's 20."""
    if policy == PolicyName.AUTO.value:
        return AUTO_K_MAX
    if policy == PolicyName.SPECDECPP.value:
        return SPECDECPP_K_MAX
    return None


def parse_mode(mode: str | Mode) -> Mode:
    try:
        return Mode(mode)
    except ValueError:
        raise ValueError(f"mode must be one of {', '.join(m.value for m in Mode)}; got {mode!r}") from None


@dataclass
class RequestStats:
    """Per-request counters (names as in docs/algorithms.md) and where the time went."""

    rounds: int = 0  # target verification passes
    draft_tokens: int = 0  # draft tokens sent for verification
    accepted_tokens: int = 0
    emitted_tokens: int = 0  # tokens produced by rounds (before truncation at EOS/length)
    wall_s: float = 0.0
    time_to_first_token_s: float = 0.0
    draft_compute_s: float = 0.0
    target_compute_s: float = 0.0
    network_s: float = 0.0  # call wall time not spent computing in a worker
    critical_compute_s: float = 0.0  # union of draft and target compute intervals
    draft_fallback: bool = False  # the draft failed and the request went on target-only
    reprefills: int = 0  # worker sessions rebuilt from the coordinator's history
    tree_nodes: int = 0  # mode gsd: nodes in the verified token trees (= draft_tokens)
    dag_nodes: int = 0  # mode gsd: distinct nodes the draft drafted (merged sub-DAGs counted once)
    merged_nodes: int = 0  # mode gsd: draws merged into an existing node instead of drafted anew
    saved_rows: int = 0  # mode gsd: tree nodes expanded without a draft row of their own
    saved_forwards: int = 0  # mode gsd: draft forwards skipped (tree levels already computed)
    mode_run: str = ""  # the mode the request ran (mode auto: the one it chose; "pearl,sequential" if it left PEARL)
    auto_k_rounds: dict = field(default_factory=dict)  # policy auto: draft length chosen -> rounds

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def mean_acceptance_length(self) -> float:
        return self.emitted_tokens / self.rounds if self.rounds else 0.0

    @property
    def overhead_share(self) -> float:
        return max(0.0, self.wall_s - self.critical_compute_s) / self.wall_s if self.wall_s else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(
            acceptance_rate=self.acceptance_rate,
            mean_acceptance_length=self.mean_acceptance_length,
            overhead_share=self.overhead_share,
        )
        return d


@dataclass
class GenerationResult:
    token_ids: list[int]
    finish_reason: FinishReason
    stats: RequestStats
    seed: int
    text: str = ""
