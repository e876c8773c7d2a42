"""Named model pairs: `qwen-coder` (the real default) and `tiny` (random, in memory)."""

from __future__ import annotations

import enum

import torch

from specdec.models.loading import (
    DType,
    ModelPair,
    check_pair,
    load_model,
    load_tokenizer,
)
from specdec.models.tiny import tiny_pair


class Preset(str, enum.Enum):
    QWEN_CODER = "qwen-coder"
    TINY = "tiny"


def qwen_coder_paths():
    """The converted folders; raises with the fix when `specdec models fetch` has not run."""
    from specdec.models.fetch import DRAFT, TARGET, default_cache_dir

    cache = default_cache_dir()
    paths = {"draft": cache / DRAFT.hf_dir, "target": cache / TARGET.hf_dir}
    for role, path in paths.items():
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"the {role} model of preset qwen-coder is not in {path}: run `specdec models fetch` first"
            )
    return paths


def load_preset(
    name: str, seed: int = 0, dtype: DType | str = DType.FLOAT32, device: str = "cpu", roles=("draft", "target")
) -> ModelPair:
    """Load a preset; `roles` lets a worker load only the model it serves (others are None)."""
    try:
        preset = Preset(name)
    except ValueError:
        raise ValueError(f"preset must be one of {', '.join(p.value for p in Preset)}; got {name!r}") from None
    if preset is Preset.TINY:
        draft, target, tokenizer = tiny_pair(seed)
        dtype = DType(dtype)
        draft, target = draft.to(device, dtype.torch), target.to(device, dtype.torch)
        return ModelPair(draft if "draft" in roles else None, target if "target" in roles else None, tokenizer, name)
    paths = qwen_coder_paths()
    models = {role: load_model(paths[role], dtype, device) if role in roles else None for role in ("draft", "target")}
    if models["draft"] is not None and models["target"] is not None:
        check_pair(models["draft"], models["target"])
    tokenizer = load_tokenizer(paths["target"])
    return ModelPair(models["draft"], models["target"], tokenizer, name)


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)
