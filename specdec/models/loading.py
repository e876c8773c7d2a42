"""Load a model pair from a Hugging Face folder or a GGUF file; check it fits together."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class DType(str, enum.Enum):
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"

    @property
    def torch(self) -> torch.dtype:
        return getattr(torch, self.value)


@dataclass
class ModelPair:
    draft: torch.nn.Module
    target: torch.nn.Module
    tokenizer: object  # a transformers tokenizer (the target's)
    name: str  # preset or a description, for reports


def _split_gguf(path: Path) -> tuple[str, str | None]:
    """(folder, gguf file name or None) for from_pretrained."""
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path.name
    if not path.exists():
        raise ValueError(f"model path {path} does not exist: give a Hugging Face folder or a .gguf file")
    return str(path), None


def load_model(path: str | Path, dtype: DType | str = DType.FLOAT32, device: str = "cpu", **kwargs):
    """A causal LM from a Hugging Face folder or a .gguf file (dequantised; slow, see docs/models.md)."""
    from transformers import AutoModelForCausalLM

    folder, gguf = _split_gguf(Path(path).expanduser())
    dtype = DType(dtype)
    if gguf:
        log.warning("loading GGUF %s: dequantising takes minutes; `specdec models fetch` converts once", gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=dtype.torch, **kwargs)
    if "device_map" not in kwargs and "tp_plan" not in kwargs:
        model = model.to(device)
    return model.eval()


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    folder, gguf = _split_gguf(Path(path).expanduser())
    return AutoTokenizer.from_pretrained(folder, gguf_file=gguf)


def check_pair(draft: torch.nn.Module, target: torch.nn.Module) -> None:
    """Refuse a pair whose vocabularies differ: the draft's token ids would mean other words."""
    dv, tv = draft.config.vocab_size, target.config.vocab_size
    if dv != tv:
        raise ValueError(
            f"draft and target vocabularies differ ({dv} vs {tv}): "
            "pick a draft trained with the target's tokenizer"
        )


def check_tokenizers(draft_tokenizer, target_tokenizer) -> None:
    if draft_tokenizer.get_vocab() != target_tokenizer.get_vocab():
        raise ValueError(
            "draft and target tokenizers differ: pick a draft trained with the target's tokenizer"
        )


def eos_token_ids_of(model, tokenizer) -> list[int]:
    """Every id that ends generation: the generation config's, the model config's and the tokenizer's."""
    ids = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)
