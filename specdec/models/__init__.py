"""Model loading: presets, Hugging Face folders, GGUF files, the tiny test pair."""

from specdec.models.loading import DType, ModelPair, check_pair, load_model, load_tokenizer
from specdec.models.presets import Preset, load_preset

__all__ = ["DType", "ModelPair", "Preset", "check_pair", "load_model", "load_preset", "load_tokenizer"]
