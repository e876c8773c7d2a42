"""Model loading: presets, Hugging Face folders, GGUF files, the tiny test pair; and text
(prompt encoding, incremental detokenisation).

The names below load lazily: `specdec.models.text` (all the coordinator needs) must not
pull in transformers' modeling code.
"""

_EXPORTS = {
    "DType": "loading", "ModelPair": "loading", "check_pair": "loading", "load_model": "loading",
    "load_tokenizer": "loading", "Preset": "presets", "load_preset": "presets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"specdec.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'specdec.models' has no attribute {name!r}")
