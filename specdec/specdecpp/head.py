"""SpecDec++'s acceptance-prediction head (docs/algorithms.md §3): the module, and its
files on disk.

The head reads the draft's last hidden state at the position whose input is a draft
token (`ForwardResult.hidden[-1]` of the forward in drafting.py that feeds the token, the
state AFTER it, as in the paper) and predicts the probability that the target accepts
that token:

    Sequential(ResBlock x L, Linear(h, 2)),   ResBlock(x) = x + SiLU(Linear(x))

with L distinct blocks (the reference code shares one block L times by accident), after
a fixed standardisation of the input (mean and scale from the training features).

On disk a head is a folder: `head.safetensors` (fp32 weights) and `head.json` (what it
was trained for, how, and how well it did). `load_head(path, draft)` refuses a head that
does not fit the draft it is asked to serve with, and warns when the draft runs in another
dtype than the head was trained on.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT = "specdec-acceptance-head"
# 2: features are the state after the token is fed (1 read the state before it: a v1 head
# would be served inputs it never saw, so it is refused and must be retrained)
FORMAT_VERSION = 2
WEIGHTS_FILE = "head.safetensors"
CONFIG_FILE = "head.json"
DEFAULT_NUM_LAYERS = 3

log = logging.getLogger(__name__)


class ResBlock(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + nn.functional.silu(self.linear(x))


class AcceptanceHead(nn.Module):
    """hidden [n, h] -> logits [n, 2] (class 1 = accepted), always computed in fp32.

    Called with ONE hidden state `[h]` it returns P(accepted) as a float, which is the
    `drafting.AcceptanceHead` contract: pass it to `LocalDraft(head=...)` as is.
    """

    def __init__(self, hidden_size: int, num_layers: int = DEFAULT_NUM_LAYERS):
        super().__init__()
        if hidden_size < 1 or num_layers < 0:
            raise ValueError(f"hidden_size must be >= 1 and num_layers >= 0, got {hidden_size}, {num_layers}")
        self.hidden_size, self.num_layers = hidden_size, num_layers
        # A fixed per-feature standardisation, set from the training features: the draft's
        # last hidden state has norms ~170 and outlier dimensions (std ~30 on Qwen 0.5B),
        # which the paper's bare head trains poorly on. Identity until `standardise`.
        self.register_buffer("input_mean", torch.zeros(hidden_size))
        self.register_buffer("input_scale", torch.ones(hidden_size))
        self.blocks = nn.Sequential(*(ResBlock(hidden_size) for _ in range(num_layers)))
        self.out = nn.Linear(hidden_size, 2)
        self.meta: dict = {}  # the head.json it was loaded from (or will be saved with)

    def standardise(self, features: torch.Tensor) -> None:
        """Set the input standardisation from training features [n, h]."""
        features = features.float()
        self.input_mean.copy_(features.mean(0))
        self.input_scale.copy_(1.0 / features.std(0).clamp_min(1e-3))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = (hidden.float() - self.input_mean) * self.input_scale
        return self.out(self.blocks(x))

    def __call__(self, hidden: torch.Tensor):
        if hidden.dim() == 1:  # one draft position: the float drafting.py expects
            return float(self.p_accept(hidden[None])[0])
        return super().__call__(hidden)

    @torch.inference_mode()
    def p_accept(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [n, h] -> P(accepted) [n], fp32."""
        return super().__call__(hidden).softmax(-1)[:, 1]

    def save(self, path: str | os.PathLike, meta: dict | None = None) -> Path:
        """Write `path/head.safetensors` and `path/head.json`; `meta` must name the draft
        (see `head_meta`). Returns the folder."""
        folder = Path(path).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        meta = dict(meta if meta is not None else self.meta)
        for key in ("draft_model", "hidden_size", "num_layers"):
            if key not in meta:
                raise ValueError(f"head metadata lacks {key!r}: build it with specdec.specdecpp.head.head_meta(draft, ...)")
        meta.update(format=FORMAT, format_version=FORMAT_VERSION, hidden_size=self.hidden_size,
                    num_layers=self.num_layers)
        weights = {k: v.detach().float().contiguous() for k, v in self.state_dict().items()}
        save_file(weights, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT})
        (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        self.meta = meta
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AcceptanceHead":
        """Load without checking the draft; serving code wants `load_head`."""
        folder = Path(path).expanduser()
        if folder.is_file():  # the .json or .safetensors inside was given
            folder = folder.parent
        config_path = folder / CONFIG_FILE
        if not config_path.exists():
            raise ValueError(f"no acceptance head in {folder} ({CONFIG_FILE} missing): train one with "
                             "`specdec train-head`")
        meta = json.loads(config_path.read_text())
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{config_path} is format {meta.get('format')!r} v{meta.get('format_version')}, this build reads "
                f"{FORMAT!r} v{FORMAT_VERSION}: retrain it with `specdec train-head`"
            )
        head = cls(int(meta["hidden_size"]), int(meta["num_layers"]))
        head.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        head.meta = meta
        return head.eval()


def draft_model_id(model: nn.Module) -> str:
    """A name for a model that survives moving its folder: the folder's name (e.g.
    `qwen2.5-coder-0.5b-instruct`), `tiny` for the tiny preset, else the model type."""
    name = str(getattr(model, "name_or_path", "") or getattr(model.config, "name_or_path", "") or "")
    return Path(name.rstrip("/")).name or str(getattr(model.config, "model_type", "unknown"))


def model_dtype(model: nn.Module) -> str:
    """"float32", "bfloat16", ...: the dtype of the model's weights ("unknown" without any)."""
    weight = next(model.parameters(), None)
    return "unknown" if weight is None else str(weight.dtype).removeprefix("torch.")


def head_meta(draft: nn.Module, num_layers: int = DEFAULT_NUM_LAYERS, **extra) -> dict:
    """The identity a head is checked against when it is loaded, plus any `extra` facts.
    `draft_dtype` is the dtype the draft ran in while the training features were made."""
    return dict(
        draft_model=draft_model_id(draft),
        draft_dtype=model_dtype(draft),
        draft_name_or_path=str(getattr(draft, "name_or_path", "") or ""),
        hidden_size=int(draft.config.hidden_size),
        draft_num_hidden_layers=int(getattr(draft.config, "num_hidden_layers", 0)),
        draft_vocab_size=int(draft.config.vocab_size),
        num_layers=num_layers,
        **extra,
    )


def check_fits(meta: dict, draft: nn.Module) -> None:
    """Raise ValueError, saying what to do, when a head's metadata does not fit `draft`."""
    this = draft_model_id(draft)
    trained_for = meta.get("draft_model", "?")
    hidden = int(draft.config.hidden_size)
    if int(meta.get("hidden_size", -1)) != hidden:
        raise ValueError(
            f"acceptance head reads hidden size {meta.get('hidden_size')}, the draft {this} has {hidden} (head "
            f"trained for {trained_for}): train one for this draft with `specdec train-head`"
        )
    same_shape = all(
        meta.get(key) in (None, int(getattr(draft.config, attr, 0)))
        for key, attr in (("draft_num_hidden_layers", "num_hidden_layers"), ("draft_vocab_size", "vocab_size"))
    )
    if trained_for != this or not same_shape:
        raise ValueError(f"head was trained for {trained_for}, this draft is {this}: train one with "
                         "`specdec train-head`")


def load_head(path: str | os.PathLike, draft_model: nn.Module | None) -> AcceptanceHead:
    """Load the head saved in folder `path` for serving with `draft_model`; refuses one
    trained for another draft. This is what a draft worker's `--acceptance-head` calls."""
    if draft_model is None:
        raise ValueError("an acceptance head needs a draft model to read hidden states from: load a draft")
    head = AcceptanceHead.load(path)
    check_fits(head.meta, draft_model)
    warn_if_dtype_differs(head.meta, draft_model)
    return head


def warn_if_dtype_differs(meta: dict, draft: nn.Module) -> bool:
    """Log a warning (and return True) when the head was trained on hidden states of the
    draft in another dtype than `draft` runs in. A warning, not an error: the head computes
    in fp32 on standardised inputs, so another dtype's rounding shifts its output a little
    rather than making it meaningless, and serving in another dtype (bf16 for speed) is a
    legitimate choice; the stop decisions are then just less well calibrated."""
    trained, serving = meta.get("draft_dtype"), model_dtype(draft)
    if trained is None or trained == serving:
        return False
    log.warning(
        "acceptance head was trained on %s hidden states of the draft, which runs in %s here: its P(accept) "
        "may be off, so SpecDec++ may stop at the wrong time; serve the draft in %s or retrain with "
        "`specdec train-head --dtype %s`", trained, serving, trained, serving,
    )
    return True
